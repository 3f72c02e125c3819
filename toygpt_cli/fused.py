"""Leaner versions of steps the model takes: the same math, less work.

relu_squared(x) = relu(x)^2. Autograd's relu-then-square keeps two tensors and runs four
element-wise passes backward; this keeps one and runs one (measured 7.3 -> 2.7 ms forward
and backward on a 3072 x 512 activation, 2 CPU threads). In float16, whose largest value is
65504, squares of inputs above 256 saturate there instead of becoming infinite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

FLOAT16_MAX = torch.finfo(torch.float16).max


class _ReluSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r)
        if r.dtype == torch.float16:
            return (r.float() * r.float()).clamp_(max=FLOAT16_MAX).half()
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return grad * (2 * r)  # d/dx relu(x)^2 = 2 relu(x)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """relu(x)^2 (Primer; modded-nanogpt), the modern block's activation."""
    return _ReluSquared.apply(x)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    """F.scaled_dot_product_attention; when training in bfloat16 on a CPU, in float32, which
    PyTorch's fused CPU kernel runs faster there, and more exactly: forward and backward of
    one layer, two Zen 4 threads, 16.2 -> 14.5 ms at the `cpu` preset's 12 x 4 heads x 256 x
    32 and 5.2 -> 3.1 ms at `cpu-1m`'s 16 x 4 x 64 x 32 (one thread: 30.9 -> 23.5 and 9.4 ->
    2.6 ms). Without gradients (evals, sampling) it gained nothing: bfloat16 stays."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16 or not torch.is_grad_enabled():
        return F.scaled_dot_product_attention(q, k, v, **kw)
    mask = kw.get("attn_mask")
    if mask is not None and mask.is_floating_point():
        kw["attn_mask"] = mask.float()
    with torch.autocast("cpu", enabled=False):  # autocast would make them bfloat16 again
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw).to(q.dtype)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A dropout mask (True: kept) with each element dropped with probability p, from 16
    random bits per element: random 64-bit integers, each read as four 16-bit ones, so the
    generator draws a quarter as many numbers as torch.rand would (0.73 against 1.81 ms for
    12 x 256 x 128, two threads of a Xeon). p is rounded to a multiple of 1/65536; returned
    with it is 1 / (1 - that p), which keeps each element's expected value. Off a CPU,
    where torch.rand is cheap, it draws with torch.rand."""
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p, 1.0 / (1.0 - p)
    dropped = round(p * 65536)
    count = math.prod(shape)
    bits = torch.randint(-(2**63), 2**63 - 1, (-(-count // 4),), dtype=torch.int64, device=device)
    keep = bits.view(torch.int16)[:count].view(shape) >= dropped - 32768
    return keep, 65536 / (65536 - dropped)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep, ctx.scale = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


class Dropout(torch.nn.Dropout):
    """nn.Dropout with a mask that is cheaper to draw (keep_mask): on a CPU, PyTorch's
    dropout draws it with bernoulli_, 4x slower (3.1 against 0.73 ms for a 12 x 256 x 128
    activation, two Xeon threads), and a 10-minute `--preset cpu` step draws ten such masks.
    The same distribution (to 1/65536 in p) from another random stream: the modern block
    uses it; the seed's and nanoGPT's blocks keep nn.Dropout's stream. p above 65535/65536
    drops everything."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if round(self.p * 65536) >= 65536:
            return x * 0.0  # zeros, still on the graph
        return _Dropout.apply(x, self.p)


class _RmsNorm(torch.autograd.Function):
    """x / rms(x) over the last dimension, written in `dtype`. With n = x / rms(x):

    d x = (g - n mean(g * n)) / rms(x)
    """

    @staticmethod
    def forward(ctx, x, eps: float, dtype: torch.dtype):
        wide = torch.promote_types(x.dtype, torch.float32)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wide)
        rstd = norm.square_().div_(x.size(-1)).add_(eps).rsqrt_()
        ctx.save_for_backward(x, rstd)
        return torch.mul(x, rstd, out=torch.empty(x.shape, dtype=dtype, device=x.device))

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, rstd = ctx.saved_tensors
        n = x * rstd  # in float32 (or wider)
        mean = torch.linalg.vecdot(g.to(n.dtype), n, dim=-1).unsqueeze(-1).div_(n.size(-1))
        return torch.addcmul(g, n, mean, value=-1.0).mul_(rstd).to(x.dtype), None, None


def rms_norm_to(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dimension, for a linear layer to read: forward in two passes
    and backward in five, where F.rms_norm's autograd takes about ten small operations; under
    autocast it is written in the autocast dtype at once (the linear layer would copy it
    there). A `--preset cpu` step, 12 alternating pairs on two Xeon threads: float32 271.9
    -> 262.5 ms (median), bfloat16 249.9 either way."""
    dtype, kind = x.dtype, x.device.type
    # (torch 2.4 knows no autocast on other devices, and asking raises)
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind) and dtype == torch.float32:
        dtype = torch.get_autocast_dtype(kind)
    return _RmsNorm.apply(x, eps, dtype)


class _NormRotary(torch.autograd.Function):
    """rms_norm then apply_rotary (model.py) in one step: forward in 6 element-wise passes
    and backward in 7, where the two written apart take about 30 small operations and keep
    their intermediates. With n = x / rms(x) and halves (n1, n2) of each head's channels:

        out = (n1 cos - n2 sin, n2 cos + n1 sin)
        d n = (g1 cos + g2 sin, g2 cos - g1 sin)          (the rotation turned back)
        d x = (d n - n mean(d n * n)) / rms(x)             (through the normalisation)
    """

    @staticmethod
    def forward(ctx, x, cos, sin, eps: float):
        hs = x.size(-1)
        wide = torch.promote_types(x.dtype, torch.float32)  # bfloat16 sums in float32
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wide)
        rstd = norm.square_().div_(hs).add_(eps).rsqrt_().to(x.dtype)
        n = x * rstd
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        out = _turn(n, cos, sin, 1.0)
        ctx.save_for_backward(n, rstd, cos, sin)
        return out

    @staticmethod
    @once_differentiable  # its backward writes into views (out=): no gradient of it
    def backward(ctx, g):
        n, rstd, cos, sin = ctx.saved_tensors
        dn = _turn(g, cos, sin, -1.0)
        mean = torch.linalg.vecdot(dn, n, dim=-1).unsqueeze(-1).div_(n.size(-1))
        return dn.addcmul_(n, mean, value=-1.0).mul_(rstd), None, None, None


def _turn(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """Each channel pair (i, i + hs/2) of x turned by its angle (sign 1) or back (-1)."""
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=o2).addcmul_(x1, sin, value=sign)
    return out


def norm_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float):
    """model.apply_rotary(model.rms_norm(x), cos, sin), the same math in fewer passes over x
    (queries and keys: normalised, then turned by their positions); cos and sin broadcast
    against half of x's last dimension."""
    return _NormRotary.apply(x, cos, sin, eps)
