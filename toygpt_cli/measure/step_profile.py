"""Where a preset's training step spends its time, and what `--compile` changes. A
measurement script, not a test:

    python -m toygpt_cli.measure.step_profile [--preset cpu] [--dtype float32]
        [--threads 2] [--steps 30] [--compile] [--profile] [--set field=value ...]

It builds the preset's Trainer on random text (speed does not depend on the words), times
whole optimizer steps (forward, backward, clipping, both optimizers) after warm-up, reports
tokens/s, GFLOP/s by nanoGPT's count and the share of the matrix-multiply ceiling measured
at the preset's own shapes; with --profile, the operators that take the time, grouped
(torch.profiler).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from toygpt_cli.config import build_configs
from toygpt_cli.device import resolve_dtype, set_threads
from toygpt_cli.recipes.bench import recipe_ceiling, synthetic_corpus, train_flops_per_token
from toygpt_cli.recipes.presets import preset_options
from toygpt_cli.recipes.sizing import seconds_per_step
from toygpt_cli.train import Trainer


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build(preset: str, dtype: str, compile_: bool, sets: list[str]) -> Trainer:
    options = preset_options(preset)
    options.update({k: _value(v) for k, v in (s.split("=", 1) for s in sets)})
    model_cfg, train_cfg = build_configs(options, {})
    corpus = synthetic_corpus()
    model_cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    dt = resolve_dtype(dtype, torch.device("cpu"))
    train_cfg = replace(train_cfg, device="cpu", dtype=dt, sample_chars=0, compile=compile_)
    return Trainer(model_cfg, train_cfg, corpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args()
    set_threads(args.threads)
    trainer = build(args.preset, args.dtype, args.compile, args.set)
    m, t = trainer.model_cfg, trainer.cfg
    tokens = t.batch_size * m.block_size
    step_s = seconds_per_step(trainer, args.steps, warmup=5)
    gflops = train_flops_per_token(m, trainer.model.num_params()) * tokens / step_s / 1e9
    ceiling = recipe_ceiling(m, tokens, torch.device("cpu"), trainer.dtype, 3.0, trials=6)
    print(
        f"--preset {args.preset} {' '.join('--set ' + s for s in args.set)} "
        f"dtype {trainer.dtype}, {args.threads} threads, compile {args.compile}: "
        f"{step_s * 1000:.1f} ms/step, {tokens / step_s:,.0f} tokens/s, {gflops:.0f} GFLOP/s "
        f"= {gflops / ceiling:.0%} of {ceiling:.0f} (its shapes' matrix products alone)"
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            seconds_per_step(trainer, 10, warmup=0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
