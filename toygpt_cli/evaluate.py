"""Loss measurement: the quick periodic estimate used while training, and the exact
whole-split evaluation behind `toygpt eval` (every position scored once)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toygpt_cli.device import autocast


@torch.inference_mode()
def _window_losses_sum(model, x: torch.Tensor, y: torch.Tensor, dtype: str) -> float:
    device = next(model.parameters()).device
    with autocast(device, dtype):
        logits, _, _ = model(x.to(device))
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), y.to(device).reshape(-1), reduction="sum"
    )
    return loss.item()


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
        window = data[starts[i : i + chunk, None] + offsets]
        total += _window_losses_sum(model, window[:, :-1], window[:, 1:], dtype)
        count += window[:, 1:].numel()
    model.train(was_training)
    return total / count


def split_loss(model, data: torch.Tensor, block_size: int, dtype: str, chunk: int = 64) -> float:
    """Mean next-character loss over a whole split, deterministically.

    The split is cut into consecutive windows of block_size; each window predicts its next
    block_size characters, so every position after the first is scored exactly once.
    """
    was_training = model.training
    model.eval()
    n_full = (len(data) - 1) // block_size
    total, count = 0.0, 0
    body = data[: n_full * block_size + 1]
    xs = body[:-1].view(n_full, block_size)
    ys = body[1:].view(n_full, block_size)
    for i in range(0, n_full, chunk):
        total += _window_losses_sum(model, xs[i : i + chunk], ys[i : i + chunk], dtype)
        count += ys[i : i + chunk].numel()
    rest = len(data) - 1 - n_full * block_size
    if rest:
        tail = data[n_full * block_size :]
        total += _window_losses_sum(model, tail[None, :-1], tail[None, 1:], dtype)
        count += rest
    model.train(was_training)
    return total / count


def loss_report(loss: float) -> dict[str, float]:
    """A loss in nats per character with its bits per character and perplexity."""
    return {"loss": loss, "bits_per_char": loss / math.log(2), "perplexity": math.exp(loss)}
