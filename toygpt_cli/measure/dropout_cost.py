"""What dropout costs a training step, with and without dropout on the attention weights.
A measurement script, not a test:

    python -m toygpt_cli.measure.dropout_cost [--preset cpu] [--threads 2] [--steps 20]

It times forward + backward of the preset's model on random batches of the preset's shape
(under autocast in the precision `--dtype auto` picks), for dropout 0, dropout p on the
attention weights and the residual branches (`--attn-dropout`, the seed's way), and dropout p
on the residual branches only (`--no-attn-dropout`). On a CPU, a dropout probability on the
attention weights makes scaled_dot_product_attention leave its fused kernel.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from toygpt_cli.config import build_configs
from toygpt_cli.device import autocast, resolve_dtype
from toygpt_cli.model import GPT
from toygpt_cli.recipes.presets import preset_options


def step_ms(model_cfg, batch: int, steps: int, dtype: str) -> float:
    """Milliseconds per forward + backward, after five warm-up steps."""
    torch.manual_seed(0)
    model = GPT(model_cfg).train()
    device = torch.device("cpu")
    x = torch.randint(model_cfg.vocab_size, (batch, model_cfg.block_size))
    y = torch.randint(model_cfg.vocab_size, (batch, model_cfg.block_size))
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        with autocast(device, dtype):
            _, loss = model(x, y)
        loss.backward()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_cfg, train_cfg = build_configs(preset_options(args.preset))
    p = model_cfg.dropout or 0.1
    dtype = resolve_dtype("auto", torch.device("cpu"))
    print(
        f"{args.preset}: {model_cfg.n_layer}x{model_cfg.n_embd}, batch {train_cfg.batch_size} x "
        f"block {model_cfg.block_size}, {dtype}, {args.threads} threads"
    )
    for label, changes in (
        ("dropout 0", {"dropout": 0.0}),
        (f"dropout {p:g}, attention weights too", {"dropout": p, "attn_dropout": True}),
        (f"dropout {p:g}, residual branches only", {"dropout": p, "attn_dropout": False}),
    ):
        ms = step_ms(replace(model_cfg, **changes), train_cfg.batch_size, args.steps, dtype)
        print(f"  {label:40s} {ms:7.1f} ms per forward + backward")


if __name__ == "__main__":
    main()
