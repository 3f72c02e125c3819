"""Leaner versions of steps the model takes: the same math, less work.

relu_squared(x) = relu(x)^2. Autograd's relu-then-square keeps two tensors and runs four
element-wise passes backward; this keeps one and runs one (measured 7.3 -> 2.7 ms forward
and backward on a 3072 x 512 activation, 2 CPU threads). In float16, whose largest value is
65504, squares of inputs above 256 saturate there instead of becoming infinite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(x.shape, device=x.device) >= p
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


class Dropout(torch.nn.Dropout):
    """nn.Dropout with its mask drawn by torch.rand: on a CPU, PyTorch's dropout draws it
    with bernoulli_, about 2.7x slower (3.5 -> 1.3 ms for a 12 x 256 x 128 activation, two
    Zen 4 threads), and a 10-minute `--preset cpu` step draws ten such masks. The same
    distribution from another random stream: the modern block uses it; the seed's and
    nanoGPT's blocks keep nn.Dropout's stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0  # zeros, still on the graph
        return _Dropout.apply(x, self.p)
