"""Measuring the loss: the mean next-character cross-entropy over windows of a split.

One loop does it all (`window_losses`): gather the windows at some start offsets, run the
model without autograd, add up the losses. The evals during training use a fixed random
sample of windows (`fixed_windows`); `toygpt eval` scores a whole split in consecutive
windows of block_size, so every position after the first is scored exactly once, from one
or several window alignments (`offsets`), or an evenly spread subset (`max_chars`).

Sums stay on the device in float32 per chunk and are added up once at the end, in Python's
double precision: no float64 tensor anywhere (Apple GPUs have none), one wait for the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from toygpt_cli.data import gather_ids
from toygpt_cli.device import autocast


class LossSum:
    """Per-chunk loss sums (device tensors) and their position counts, added up once."""

    def __init__(self) -> None:
        self.sums: list[torch.Tensor] = []
        self.count = 0

    def add(self, total: torch.Tensor, count: int) -> None:
        self.sums.append(total)
        self.count += count

    def total(self) -> float:
        return math.fsum(torch.stack(self.sums).cpu().tolist()) if self.sums else 0.0

    def mean(self) -> float:
        return self.total() / max(self.count, 1)


@torch.inference_mode()
def window_losses(
    model, data: torch.Tensor, starts: torch.Tensor, length: int, dtype: str
) -> tuple[torch.Tensor, int]:
    """(summed loss on the device, positions scored) of the windows data[s : s + length + 1]
    for each s in starts: each predicts its `length` next characters from what precedes
    them in the window."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = gather_ids(data, starts[:, None] + torch.arange(length + 1)).to(device)
    x, y = window[:, :-1], window[:, 1:]
    with autocast(device, dtype):
        logits, _ = model(x)
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"
    )
    model.train(was_training)
    return total, y.numel()


def fixed_windows(n_data: int, count: int, block_size: int, seed: int) -> torch.Tensor:
    """`count` window offsets drawn from `seed`: the first `count` of one fixed sequence
    (fewer windows are the first of more), so every eval scores the same text."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n_data - block_size, (count,), generator=g)


def subset_windows(n_data: int, block_size: int, max_chars: int | None) -> torch.Tensor | None:
    """Starts of max_chars // block_size windows (at least one) spaced evenly from the start
    of a split to its end, never overlapping; None when the whole split fits in max_chars."""
    if max_chars is None:
        return None
    count = max(1, max_chars // block_size)
    if count * block_size >= n_data - 1:
        return None
    return torch.arange(count) * (n_data - 1 - block_size) // max(1, count - 1)


def scored_chars(n_data: int, block_size: int, max_chars: int | None = None) -> int:
    """How many positions `split_loss` scores (per offset)."""
    starts = subset_windows(n_data, block_size, max_chars)
    return n_data - 1 if starts is None else len(starts) * block_size


def split_loss(
    model,
    data: torch.Tensor,
    block_size: int,
    dtype: str,
    *,
    chunk: int = 64,
    max_chars: int | None = None,
    offsets: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Mean next-character loss over a split, deterministically.

    Every position after the first is scored once, in consecutive windows of block_size;
    with `offsets` N > 1 the split is scored N times, the windows shifted by
    k * block_size / N (k = 0 .. N-1; the first k positions form one short window), and the
    N means are averaged, so the figure does not depend on one alignment of the windows.
    With `max_chars`, an evenly spread subset of windows instead (one alignment).
    `progress(done, total)` counts scored positions.
    """
    n = len(data)
    subset = subset_windows(n, block_size, max_chars)
    plans: list[list[tuple[torch.Tensor, int]]] = []  # per alignment: (starts, length) groups
    if subset is not None:
        plans.append([(subset, block_size)])
    else:
        for k in range(max(1, offsets)):
            shift = k * block_size // max(1, offsets)
            full = (n - 1 - shift) // block_size
            groups = [(shift + torch.arange(full) * block_size, block_size)]
            rest = n - 1 - shift - full * block_size
            if shift:
                groups.append((torch.zeros(1, dtype=torch.long), shift))
            if rest:
                groups.append((torch.tensor([shift + full * block_size]), rest))
            plans.append(groups)
    total_positions = sum(len(s) * length for plan in plans for s, length in plan)
    done, means = 0, []
    for plan in plans:
        total = LossSum()
        for starts, length in plan:
            for i in range(0, len(starts), chunk):
                part = starts[i : i + chunk]
                total.add(*window_losses(model, data, part, length, dtype))
                done += len(part) * length
                if progress is not None:
                    progress(done, total_positions)
        means.append(total.mean())
    return sum(means) / len(means)


def loss_report(loss: float) -> dict[str, float]:
    """A loss in nats per character with its bits per character and perplexity."""
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss)}
