"""Loss measurement: the quick periodic estimate used while training, and the exact
whole-split evaluation behind `toygpt eval` (every position scored once, or an evenly
spread subset of windows). Corpora may hold ids in 1, 2 or 4 bytes: windows are widened to
int64 only once gathered."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from toygpt_cli.corpus.cache import gather_ids, note_reads, to_ids
from toygpt_cli.device import autocast


@torch.inference_mode()
def _window_losses_sum(model, x: torch.Tensor, y: torch.Tensor, dtype: str) -> torch.Tensor:
    """The summed loss as a float64 tensor left on the device: callers add these up and
    read the total once, so an eval does not wait for the device after every chunk."""
    # x and y may hold ids in any width (views of a memory-mapped corpus): widen them here,
    # after the narrow copy to the device.
    device = next(model.parameters()).device
    x, y = to_ids(x.to(device)), to_ids(y.to(device))
    with autocast(device, dtype):
        logits, _, _ = model(x)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"
    )
    return loss.double()


def fixed_windows(n_data: int, count: int, block_size: int, seed: int) -> torch.Tensor:
    """`count` window start offsets drawn once from `seed`: every eval scores the same text,
    so the curve shows the model changing, not the sample."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(n_data - block_size, (count,), generator=g)


def estimate_loss(
    model, data: torch.Tensor, starts: torch.Tensor, block_size: int, dtype: str, chunk: int = 64
) -> float:
    """Mean loss over the windows at `starts` (the seed's eval_iters x batch_size windows),
    batched into large chunks and run without autograd."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    offsets = torch.arange(block_size + 1)
    for i in range(0, len(starts), chunk):
        window = gather_ids(data, starts[i : i + chunk, None] + offsets)
        total += _window_losses_sum(model, window[:, :-1], window[:, 1:], dtype)
        count += window[:, 1:].numel()
    model.train(was_training)
    return float(total) / count


def subset_windows(n_data: int, block_size: int, max_chars: int | None) -> torch.Tensor | None:
    """Starts of the windows that score at most `max_chars` positions of a split, or None
    when the whole split fits in that (or no limit is asked).

    The subset is max_chars // block_size windows of block_size predictions (at least one),
    spaced evenly from the start of the split to its end: deterministic, spread over all of
    the split, and never overlapping.
    """
    if max_chars is None:
        return None
    count = max(1, max_chars // block_size)
    if count * block_size >= n_data - 1:
        return None
    return torch.arange(count) * (n_data - 1 - block_size) // max(1, count - 1)


def scored_chars(n_data: int, block_size: int, max_chars: int | None = None) -> int:
    """How many positions `split_loss` scores."""
    starts = subset_windows(n_data, block_size, max_chars)
    return n_data - 1 if starts is None else len(starts) * block_size


def split_loss(
    model,
    data: torch.Tensor,
    block_size: int,
    dtype: str,
    chunk: int = 64,
    max_chars: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Mean next-character loss over a whole split (or a subset, see `subset_windows`),
    deterministically; `progress(done, total)` counts scored positions.

    The split is cut into consecutive windows of block_size; each window predicts its next
    block_size characters, so every position after the first is scored exactly once.
    """
    was_training = model.training
    model.eval()
    total_chars = scored_chars(len(data), block_size, max_chars)
    starts = subset_windows(len(data), block_size, max_chars)
    total, count = 0.0, 0
    if starts is not None:
        offsets = torch.arange(block_size + 1)
        for i in range(0, len(starts), chunk):
            window = gather_ids(data, starts[i : i + chunk, None] + offsets)
            total += _window_losses_sum(model, window[:, :-1], window[:, 1:], dtype)
            count += window[:, 1:].numel()
            if progress is not None:
                progress(count, total_chars)
        model.train(was_training)
        return float(total) / count
    n_full = (len(data) - 1) // block_size
    body = data[: n_full * block_size + 1]
    xs = body[:-1].view(n_full, block_size)
    ys = body[1:].view(n_full, block_size)
    for i in range(0, n_full, chunk):
        total += _window_losses_sum(model, xs[i : i + chunk], ys[i : i + chunk], dtype)
        note_reads(data, len(xs[i : i + chunk]))
        count += ys[i : i + chunk].numel()
        if progress is not None:
            progress(count, total_chars)
    rest = len(data) - 1 - n_full * block_size
    if rest:
        tail = data[n_full * block_size :]
        total += _window_losses_sum(model, tail[None, :-1], tail[None, 1:], dtype)
        count += rest
        if progress is not None:
            progress(count, total_chars)
    model.train(was_training)
    return float(total) / count


def loss_report(loss: float) -> dict[str, float]:
    """A loss in nats per character with its bits per character and perplexity."""
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss)}
