"""Muon, and the optimizer that pairs it with AdamW.

Muon (Keller Jordan, 2024; modded-nanogpt) is SGD with Nesterov momentum whose update for
each weight matrix is replaced by the nearest semi-orthogonal matrix, computed with a few
steps of a quintic Newton-Schulz iteration. It suits the 2-D weights inside the
transformer blocks; embeddings, the output head and vectors stay with AdamW.

Newton-Schulz is a handful of small matrix products per matrix, which on a CPU cost more
in dispatch than in arithmetic: matrices of the same shape are orthogonalised together,
one batched product per step. It runs in bfloat16 where the hardware does that fast
(the same decision as `--dtype auto`) and in float32 elsewhere.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import torch

# The quintic's coefficients (Keller Jordan's Muon): chosen for a steep slope at zero, so
# five steps bring every singular value into roughly [0.7, 1.2] rather than exactly to 1,
# which trains as well as the exact orthogonalisation.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, dtype=torch.float32) -> torch.Tensor:
    """Approximately U V^T for each matrix of g (N, rows, cols), rows <= cols, where
    U S V^T is its singular value decomposition. Returns g's shape in `dtype`."""
    a, b, c = NS_COEFFS
    # Scale so that every singular value is at most 1 (the Frobenius norm bounds them).
    x = (g / (g.norm(dim=(-2, -1), keepdim=True) + 1e-7)).to(dtype)
    for _ in range(steps):
        gram = x @ x.mT  # (N, rows, rows): the smaller side, as rows <= cols
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b gram + c gram @ gram
        x = torch.baddbmm(x, poly, x, beta=a)  # a x + poly @ x: (N, rows, cols)
    return x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. Each group may give `splits`: for each parameter, into how
    many equal row blocks it falls (a fused query/key/value matrix is three matrices, each
    orthogonalised on its own); default one.

    The update of a (rows x cols) matrix is scaled by sqrt(max(1, rows / cols)), as in
    Keller Jordan's Muon; decoupled weight decay multiplies the weights by 1 - lr * wd.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        ns_steps: int = NS_STEPS,
        ns_dtype: torch.dtype = torch.float32,
    ):
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "splits": None}
        super().__init__(params, defaults)
        self.ns_steps, self.ns_dtype = ns_steps, ns_dtype
        for group in self.param_groups:
            splits = group["splits"] or [1] * len(group["params"])
            if len(splits) != len(group["params"]):
                raise ValueError("Muon: one split count per parameter")
            for p, k in zip(group["params"], splits, strict=True):
                if p.dim() != 2 or p.size(0) % k:
                    raise ValueError(f"Muon takes 2-D parameters in {k} equal row blocks")
            group["splits"] = list(splits)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        live = [(p, k) for p, k in zip(group["params"], group["splits"], strict=True)
                if p.grad is not None]  # fmt: skip
        if not live:
            return
        params = [p for p, _ in live]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        # 1. Nesterov momentum: buf <- mu buf + (1 - mu) g; the update is g + mu (buf - g).
        mu = group["momentum"]
        torch._foreach_lerp_(bufs, grads, 1 - mu)
        updates = torch._foreach_lerp(grads, bufs, mu)
        # 2. Orthogonalise: every row block as a wide matrix, batched by shape.
        buckets: dict[tuple[int, int], list[torch.Tensor]] = collections.defaultdict(list)
        places = []  # per parameter: (shape key, first index in its bucket, blocks, tall)
        for u, (p, k) in zip(updates, live, strict=True):
            blocks = u.view(k, p.size(0) // k, p.size(1))  # (k, rows, cols)
            tall = blocks.size(1) > blocks.size(2)
            if tall:
                blocks = blocks.mT
            key = (blocks.size(1), blocks.size(2))
            places.append((key, sum(len(b) for b in buckets[key]), k, tall))
            buckets[key].append(blocks)
        done = {}
        for key, parts in buckets.items():
            done[key] = orthogonalize(torch.cat(parts), self.ns_steps, self.ns_dtype)
        lr, wd = group["lr"], group["weight_decay"]
        # 3. Decoupled weight decay, then the step.
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        for p, (key, start, k, tall) in zip(params, places, strict=True):
            o = done[key][start : start + k]  # (k, rows, cols)
            if tall:
                o = o.mT
            scale = max(1.0, o.size(1) / o.size(2)) ** 0.5
            p.add_(o.reshape(p.shape).to(p.dtype), alpha=-lr * scale)


class MuonAdamW:
    """Muon for some parameters and AdamW for the rest, as one optimizer: param_groups
    lists both optimizers' groups (the same dicts, so changing one changes the optimizer),
    and state_dict holds both states."""

    def __init__(self, adamw: torch.optim.Optimizer, muon: Muon):
        self.adamw, self.muon = adamw, muon

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.adamw.param_groups, *self.muon.param_groups]

    @property
    def state(self) -> collections.ChainMap:
        return collections.ChainMap(self.adamw.state, self.muon.state)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])
