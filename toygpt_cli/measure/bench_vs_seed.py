"""The original one-file project's style of implementation vs toygpt, timed side by side in
one process; prints a table of ratios (training tokens/s, one periodic eval, the default
run projected, sampling chars/s). A measurement, not a test (timings are never tested):

    python -m toygpt_cli.measure.bench_vs_seed [--seconds 10] [--recipes]

With --recipes it also times the CPU presets side by side (today's AdamW recipe with learned
positions against Muon, the modern block and rotary positions): training tokens/s at each
preset's shape, and sampling past block_size at block 256, recomputing the window for every
character (the straightforward method) and with the rolling key/value cache.

The baseline is seed_reference.py: one module per head looped in Python, the default
(per-tensor) AdamW, a Python-loop batch gather, loss estimates from random batches of 32,
and generation that re-runs the whole cropped context for every character.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from toygpt_cli.config import ModelConfig, TrainConfig, build_configs
from toygpt_cli.evaluate import LossSum, fixed_windows, window_losses
from toygpt_cli.measure.seed_reference import SeedGPT
from toygpt_cli.recipes.bench import RECIPES, _timed, bench_recipe, synthetic_corpus
from toygpt_cli.recipes.presets import preset_options
from toygpt_cli.sample import sample_text
from toygpt_cli.train import Trainer

STEPS, EVALS, EVAL_ITERS, BATCH, BLOCK = 5100, 18, 200, 32, 16


def seed_style(corpus, seconds):
    train, val = corpus.splits()
    torch.manual_seed(1337)
    model = SeedGPT(corpus.tokenizer.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)

    def get_batch(data):
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([data[i : i + BLOCK] for i in ix]).long()  # splits hold narrow ids
        y = torch.stack([data[i + 1 : i + BLOCK + 1] for i in ix]).long()
        return x, y

    def step():
        x, y = get_batch(train)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = _timed(step, seconds)

    @torch.no_grad()
    def eval_batches(n):
        model.eval()
        for _ in range(n):
            model(*get_batch(val))
        model.train()

    n = 20  # of the 2 x 200 batches of one eval; scaled below
    eval_s = _timed(lambda: eval_batches(n), seconds / 2, min_reps=1) * (2 * EVAL_ITERS / n)
    model.eval()
    chars = 200
    start = torch.zeros((1, 1), dtype=torch.long)
    sample_s = _timed(lambda: model.generate(start, chars), seconds / 2, min_reps=1) / chars
    return step_s, eval_s, 1 / sample_s


def toygpt_side(corpus, seconds, dtype):
    cfg = ModelConfig(vocab_size=corpus.tokenizer.vocab_size)
    trainer = Trainer(cfg, TrainConfig(dtype=dtype, sample_chars=0), corpus)

    def step():
        trainer.train_step()

    step_s = _timed(step, seconds)
    val = trainer.data["val"]
    windows = fixed_windows(len(val), 20 * BATCH, BLOCK, 0)

    def evaluate():
        total = LossSum()
        for i in range(0, len(windows), 64):
            total.add(*window_losses(trainer.model, val, windows[i : i + 64], BLOCK, trainer.dtype))
        return total.mean()

    eval_s = _timed(evaluate, seconds / 2, min_reps=1) * (2 * EVAL_ITERS / 20)
    chars = 2000
    sample_s = (
        _timed(
            lambda: sample_text(
                trainer.model, corpus.tokenizer, max_new_tokens=chars, seed=0, dtype=trainer.dtype
            ),
            seconds / 2,
            min_reps=1,
        )
        / chars
    )
    return step_s, eval_s, 1 / sample_s, trainer.dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--recipes", action="store_true", help="also compare the CPU presets")
    args = parser.parse_args()
    corpus = synthetic_corpus(300_000)
    t0 = time.perf_counter()
    base = seed_style(corpus, args.seconds)
    ours = toygpt_side(corpus, args.seconds, args.dtype)
    tokens = BATCH * BLOCK
    run = [s * STEPS + e * EVALS for s, e in ((base[0], base[1]), (ours[0], ours[1]))]
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; toygpt dtype {ours[3]}; "
        f"measured in {time.perf_counter() - t0:.0f} s"
    )
    print("| measure | seed-style | toygpt | ratio |\n|---|---:|---:|---:|")
    print(
        f"| 1. training tokens/s | {tokens / base[0]:,.0f} | {tokens / ours[0]:,.0f} | "
        f"{base[0] / ours[0]:.2f}x |"
    )
    print(
        f"| 2. one periodic eval (2 x 200 batches), s | {base[1]:.1f} | {ours[1]:.1f} | "
        f"{base[1] / ours[1]:.2f}x |"
    )
    print(
        f"| 3. default run, projected (5100 steps + 18 evals), s | {run[0]:,.0f} | "
        f"{run[1]:,.0f} | {run[0] / run[1]:.2f}x |"
    )
    print(f"| 4. sampling chars/s | {base[2]:,.0f} | {ours[2]:,.0f} | {ours[2] / base[2]:.2f}x |")
    if args.recipes:
        recipes(args.seconds, ours[3])


def recipes(seconds: float, dtype: str) -> None:
    device = torch.device("cpu")
    sample_dtype = "auto" if dtype != "float32" else dtype  # auto: as `toygpt sample` picks
    rows = [bench_recipe(n, *build_configs(preset_options(n)), device, dtype, seconds,
                         sample_dtype) for n in RECIPES]  # fmt: skip
    print(f"\nrecipes, training in {dtype}, sampling in {sample_dtype}; past block_size at "
          f"block {rows[0]['sample_block']}")  # fmt: skip
    print("| preset | model | batch | train tokens/s | sampling chars/s, window recomputed | "
          "rolling cache | ratio |\n|---|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for r in rows:
        rolling = r["sample_rolling_chars_per_sec"]
        print(
            f"| {r['recipe']} | {r['shape']} | {r['batch']} | {r['train_tokens_per_sec']:,.0f} | "
            f"{r['sample_window_chars_per_sec']:,.0f} | "
            + (f"{rolling:,.0f} | {r['rolling_speedup']:.1f}x |" if rolling else "- | |")
        )


if __name__ == "__main__":
    main()
