"""Speed measurements behind `toygpt bench`: training, eval and sampling throughput at the
default model size, and how close the training step gets to a matrix-multiply ceiling
measured on the same device and dtype; then the CPU recipes side by side (AdamW with
learned positions against Muon with the modern block and rotary positions): training
tokens/s, and sampling past block_size at block 256 with and without the rolling cache."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from toygpt_cli.config import ModelConfig, TrainConfig, bigram_rows, build_configs
from toygpt_cli.corpus import corpus_from_text
from toygpt_cli.data import CharTokenizer, Corpus
from toygpt_cli.device import TORCH_DTYPES, resolve_device, resolve_dtype
from toygpt_cli.evaluate import LossSum, fixed_windows, window_losses
from toygpt_cli.model import GPT
from toygpt_cli.recipes.presets import preset_options
from toygpt_cli.runs.session import Trainer
from toygpt_cli.sample import generate, sample_text

RECIPES = ("cpu-adamw", "cpu", "cpu-1m")  # presets compared side by side
SAMPLE_BLOCK = 256  # the context at which sampling past block_size is measured


def synthetic_corpus(chars: int = 200_000, seed: int = 0) -> Corpus:
    """Random text over a 65-character alphabet: speed does not depend on the words."""
    alphabet = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    rng = random.Random(seed)
    text = "".join(rng.choice(alphabet) for _ in range(chars))
    return corpus_from_text(text, CharTokenizer(alphabet), path=Path("<synthetic>"))


def _timed(fn, seconds: float, min_reps: int = 3) -> float:
    """Seconds per call of fn, after one warm-up call, over at least `seconds`."""
    fn()
    reps, start = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < seconds:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def matmul_ceiling(device: torch.device, dtype: str, seconds: float = 1.0) -> float:
    """GFLOP/s of a (512x384)@(384x1536) product: the shape of the model's MLP matmuls."""
    a = torch.randn(512, 384, device=device, dtype=TORCH_DTYPES[dtype])
    b = torch.randn(384, 1536, device=device, dtype=TORCH_DTYPES[dtype])

    def mm():
        for _ in range(10):
            a @ b
        _sync(device)

    return 2 * 512 * 384 * 1536 * 10 / _timed(mm, seconds) / 1e9


def recipe_ceiling(
    model_cfg: ModelConfig,
    tokens: int,
    device: torch.device,
    dtype: str,
    seconds: float = 1.0,
    trials: int = 3,
) -> float:
    """GFLOP/s of the matrix products a training step of this shape makes, on their own:
    for each linear layer of a block (queries/keys/values, attention output, the two MLP
    layers) and the output head, the forward product and its two backward products, at
    `tokens` rows. The best of `trials` (the machine drifts; a ceiling is what it can do)."""
    tdt = TORCH_DTYPES[dtype]
    c, v = model_cfg.n_embd, model_cfg.vocab_size
    shapes = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c), (c, v)]
    products = []
    for fan_in, fan_out in shapes:
        x = torch.randn(tokens, fan_in, device=device, dtype=tdt)
        w = torch.randn(fan_in, fan_out, device=device, dtype=tdt)
        dy = torch.randn(tokens, fan_out, device=device, dtype=tdt)
        products += [(x, w), (dy, w.T), (x.T, dy)]  # forward, input grad, weight grad
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in products)

    def all_products():
        for a, b in products:
            a @ b
        _sync(device)

    per_trial = seconds / trials
    return max(flops / _timed(all_products, per_trial, min_reps=2) / 1e9 for _ in range(trials))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """6 x the weights a token passes through, plus attention (PaLM's estimate)."""
    rows = cfg.vocab_size + (cfg.block_size if cfg.pos == "learned" else 0)
    rows += bigram_rows(cfg.vocab_size) if cfg.bigram else 0  # looked up, not multiplied
    non_embedding = n_params - rows * cfg.n_embd
    return 6 * non_embedding + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size


def run_benchmarks(
    device: str = "auto",
    dtype: str = "auto",
    seconds: float = 5.0,
    model_cfg: ModelConfig | None = None,
    train_cfg: TrainConfig | None = None,
    recipes: tuple[str, ...] = RECIPES,
    progress=None,
) -> dict[str, Any]:
    """`progress(what)` hears what is measured next (the whole takes about a minute)."""
    say = progress or (lambda what: None)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    corpus = synthetic_corpus()
    model_cfg = replace(model_cfg or ModelConfig(), vocab_size=corpus.tokenizer.vocab_size)
    train_cfg = replace(train_cfg or TrainConfig(), device=str(dev), dtype=dt, sample_chars=0)
    trainer = Trainer(model_cfg, train_cfg, corpus)
    n_params = trainer.model.num_params(tables=False)
    gen_dt = resolve_dtype(dtype, dev, generation=True, n_params=n_params)  # as `sample` does
    tokens = train_cfg.batch_size * model_cfg.block_size

    def step():
        loss, _ = trainer.train_step()
        loss.item()  # wait for the device

    say(f"training steps of the default model ({seconds:g} s)")
    step_s = _timed(step, seconds)
    val = trainer.data["val"]
    windows = fixed_windows(len(val), 64 * 8, model_cfg.block_size, 0)

    def evaluate():
        total = LossSum()
        for i in range(0, len(windows), 64):
            total.add(*window_losses(trainer.model, val, windows[i : i + 64],
                                     model_cfg.block_size, dt))  # fmt: skip
        return total.mean()

    say("the eval")
    eval_s = _timed(evaluate, seconds / 2, min_reps=1)
    n_chars = 200
    say("sampling")
    sample_s = _timed(
        lambda: sample_text(
            trainer.model, corpus.tokenizer, max_new_tokens=n_chars, seed=0, dtype=gen_dt
        ),
        seconds / 2,
        min_reps=1,
    )
    ceiling = matmul_ceiling(dev, dt, seconds / 4)
    flops = train_flops_per_token(model_cfg, trainer.model.num_params()) * tokens
    achieved = flops / step_s / 1e9
    eval_tokens = len(windows) * model_cfg.block_size
    seed_eval_tokens = 2 * train_cfg.eval_iters * tokens  # both splits, as in training
    rows = [
        {
            "name": "train step",
            "value": f"{step_s * 1000:.1f} ms",
            "note": f"batch {train_cfg.batch_size} x block {model_cfg.block_size}",
        },
        {"name": "train tokens/s", "value": f"{tokens / step_s:,.0f}", "note": ""},
        {
            "name": "train GFLOP/s",
            "value": f"{achieved:.0f}",
            "note": f"{achieved / ceiling:.0%} of the matmul ceiling",
        },
        {
            "name": "matmul ceiling GFLOP/s",
            "value": f"{ceiling:.0f}",
            "note": f"512x384 @ 384x1536 in {dt}",
        },
        {
            "name": "eval tokens/s",
            "value": f"{eval_tokens / eval_s:,.0f}",
            "note": f"one periodic eval at these settings: "
            f"{seed_eval_tokens / (eval_tokens / eval_s):.1f} s",
        },
        {
            "name": "sampling chars/s",
            "value": f"{n_chars / sample_s:,.0f}",
            "note": f"one sample, key/value cache, {gen_dt}",
        },
    ]
    return {
        "device": str(dev),
        "dtype": dt,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "params": trainer.model.num_params(),
        "train_step_ms": step_s * 1000,
        "train_tokens_per_sec": tokens / step_s,
        "train_gflops": achieved,
        "matmul_ceiling_gflops": ceiling,
        "ceiling_fraction": achieved / ceiling,
        "eval_tokens_per_sec": eval_tokens / eval_s,
        "periodic_eval_seconds": seed_eval_tokens / (eval_tokens / eval_s),
        "sample_chars_per_sec": n_chars / sample_s,
        "rows": rows,
        "recipes": [
            bench_recipe(name, *build_configs(preset_options(name)), dev, dt, seconds, dtype, say)
            for name in recipes
        ],
    }


def bench_recipe(
    name: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    dtype: str,
    seconds: float,
    sample_dtype: str | None = None,
    say=lambda what: None,
    sample_block: int = SAMPLE_BLOCK,
) -> dict[str, Any]:
    """Training speed of a recipe at its own shape, and its sampling speed past
    block_size at `sample_block`: recomputing the window for every character (the
    straightforward method) and, with rotary positions, with the rolling cache."""
    corpus = synthetic_corpus()
    model_cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    # uncompiled: compiling takes about a minute on a CPU (its gain: docs/results.md)
    train_cfg = replace(train_cfg, device=str(device), dtype=dtype, sample_chars=0, compile=False)
    trainer = Trainer(model_cfg, train_cfg, corpus)
    say(f"--preset {name}: training steps, then sampling past block_size")
    step_s = _timed(lambda: trainer.train_step()[0].item(), seconds)
    tokens = train_cfg.batch_size * model_cfg.block_size
    gflops = train_flops_per_token(model_cfg, trainer.model.num_params()) * tokens / step_s / 1e9
    ceiling = recipe_ceiling(model_cfg, tokens, device, dtype, seconds / 2)
    if sample_dtype is None or sample_dtype == "auto":  # as `toygpt sample` picks it
        n = trainer.model.num_params(tables=False)
        sample_dtype = resolve_dtype(sample_dtype or dtype, device, generation=True, n_params=n)
    window = sampling_speed(model_cfg, device, sample_dtype, seconds / 2, False, sample_block)
    rolling = None
    if model_cfg.pos == "rope":
        rolling = sampling_speed(model_cfg, device, sample_dtype, seconds / 2, True, sample_block)
    return {
        "recipe": name,
        "shape": f"{model_cfg.n_layer}x{model_cfg.n_embd}, {model_cfg.pos}, {model_cfg.arch}, "
        f"{train_cfg.optimizer}",
        "params": trainer.model.num_params(),
        "batch": f"{train_cfg.batch_size} x {model_cfg.block_size}",
        "train_step_ms": step_s * 1000,
        "train_tokens_per_sec": tokens / step_s,
        "train_gflops": gflops,
        "ceiling_gflops": ceiling,  # the same step's matrix products on their own
        "ceiling_fraction": gflops / ceiling,
        "sample_block": sample_block,
        "sample_window_chars_per_sec": window,
        "sample_rolling_chars_per_sec": rolling,
        "sample_dtype": sample_dtype,
        "rolling_speedup": rolling / window if rolling else None,
    }


def sampling_speed(
    model_cfg: ModelConfig, device, dtype: str, seconds: float, use_cache: bool, block: int
) -> float:
    """Characters per second of one sample drawn past block_size (a full-window prompt)
    by a model of this shape at context `block` (untrained: speed does not depend on it)."""
    torch.manual_seed(0)
    model = GPT(replace(model_cfg, block_size=block, dropout=0.0)).to(device).eval()
    prompt = torch.zeros((1, block), dtype=torch.long, device=device)
    chars = 200 if use_cache else 20  # the rolling run includes its one-off prefill

    def draw():
        gen = torch.Generator().manual_seed(0)
        generate(model, prompt, chars, generator=gen, dtype=dtype, use_cache=use_cache)
        _sync(device)

    return chars / _timed(draw, seconds, min_reps=1)
