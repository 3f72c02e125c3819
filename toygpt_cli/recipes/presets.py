"""The layers under the command line: presets (named partial configurations, each measured
in the README) and config files (TOML, or a run's config.json). Precedence: preset <
--config/--like < command line; `config.build_configs` merges and validates them."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.declare import check
from toygpt_cli.errors import OptionError, UsageError, first_line

# The optimisation recipe of nanoGPT's character model: warmup then cosine decay, decay on
# weight matrices only, N(0, 0.02) initialisation, gradient clipping.
_NANOGPT_RECIPE: dict[str, Any] = {
    "lr_schedule": "cosine",
    "warmup_iters": 100,
    "min_lr": 1e-4,
    "weight_decay": 0.1,
    "decay_matrices_only": True,
    "init": "normal",
    "grad_clip": 1.0,
}

# The shape of the CPU presets: deeper and narrower than the seed's, a longer context, no
# dropout (the `cpu` preset changes context and dropout below), no step limit (the time
# budget ends the run), few small evals.
_CPU_SHAPE: dict[str, Any] = {
    "block_size": 64,
    "n_layer": 5,
    "n_head": 4,
    "n_embd": 128,
    "dropout": 0.0,
    "batch_size": 48,
    "beta2": 0.99,
    "iters": 0,
    "max_time": 600.0,
    "eval_interval": 500,
    "eval_iters": 40,
}

# Muon (lr 0.02) on the matrices inside the blocks, AdamW (8e-3) for the rest, both decayed
# to 5% of their peak; rotary positions; the modern block.
_SPEEDRUN: dict[str, Any] = {
    "pos": "rope",
    "arch": "modern",
    "optimizer": "muon",
    "learning_rate": 8e-3,
    "min_lr": 4e-4,
    "muon_lr": 0.02,
    "muon_momentum": 0.95,
}

# The 10-minute preset's context and regularisation: 256 characters in batches of 12 (the
# tokens per step of 64 x 48), dropout on the residual branches only, and weight decay on
# Muon's matrices. Longer windows give each prediction more context; at block 256 the model
# overfits within the 10 minutes, and dropout on the attention weights would make a CPU
# take its slower, unfused attention path.
# An average of the weights over about the last 100 steps (--ema 0.99) is what the evals and
# best.pt hold: in two paired ten-minute runs it scored 0.0044 below the weights themselves.
# With the average, the learning rates decay to 15% of their peak rather than 5%: the
# weights keep moving at the end and the average smooths them. Four runs each: 1.4504
# (1.4436-1.4564) against 1.4532 (1.4508-1.4581) at 5%, within their spread; 0% and 30%
# scored 1.4613 and 1.4611 (one run each). In float32 on one thread: 1.4652 (3 runs)
# against 1.4730 (one run at 5%).
# It compiles the model (torch.compile, inductor): a step of this shape ran 1.51x faster in
# bfloat16 and 1.30x in float32 (2-core Xeon, alternating pairs), after a compile of about
# 45 s on a first run (a few seconds later on: the compiled code is cached on disk). Ten
# minutes: 3,781 steps and 1.4408 against 2,500 and 1.4521 uncompiled, the same hour.
# Compiled, with ~3,500 steps, dropout 0.05 beat 0.1 (1.4359, 5 runs, against 1.4429, 5 runs;
# 0.15: 1.4547): docs/results.md. Batches of 8 and 16 scored no better than 12 (1.4342, 4
# runs; 1.4392, 3 runs), batches of 6 worse (1.4387, 2 runs), nor did block 512 in batches
# of 6 (1.4373, 2 runs). Muon's weight decay of 0.2 did better than 0.05 once the step was
# compiled (1.4187, 3 runs, against 1.4344, 14 runs; 0.1: 1.4240, 2 runs); where the
# machine makes fewer than 2,880 steps the preset keeps 0.05 (recipes/sizing.py).
_TEN_MINUTES: dict[str, Any] = {
    "compile": True,
    "block_size": 256,
    "batch_size": 12,
    "dropout": 0.05,
    "attn_dropout": False,
    "muon_weight_decay": 0.2,
    "ema": 0.99,
    "min_lr": 1.2e-3,
}

# Presets are partial configurations applied before a config file and command-line options.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    # nanoGPT's config/train_shakespeare_char.py, as nanoGPT builds it: GELU and LayerNorm
    # without biases, tied embeddings, dropout on the embeddings, attention weights and
    # residual branches, AdamW with beta2 0.99 and decay on every 2-D weight, N(0, 0.02)
    # init, warmup then cosine to 1e-4 over the 5000 steps. nanoGPT reports val 1.4697
    # (its estimate on 200 batches) after about 3 minutes on an A100.
    "nanogpt-char": {
        **_NANOGPT_RECIPE,
        "arch": "nanogpt",
        "tie_weights": True,
        "emb_dropout": True,
        "attn_dropout": True,
        "block_size": 256,
        "n_layer": 6,
        "n_head": 6,
        "n_embd": 384,
        "dropout": 0.2,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "beta2": 0.99,
        "iters": 5000,
        "eval_interval": 250,
        "eval_iters": 200,
    },
    # The lowest val loss a laptop-class CPU reaches in 10 minutes of wall time, evals
    # included, with the small-GPT speedrun recipe: Muon on the block matrices, rotary
    # positions, the modern block, on the CPU shape with a long context, the weights'
    # average, compiled. Measured (docs/results.md): whole val 1.4187 compiled with dropout
    # 0.05 and Muon's decay 0.2 (3 runs, 2-core Xeon with AMX, bf16; 1.4344 with decay 0.05,
    # 14 runs; 1.4429 with dropout 0.1, 1.4550 uncompiled; 4 layers of 160: 1.4429, 4 of 128:
    # 1.4341).
    # Uncompiled with dropout 0.1, 2-core Zen 4, bf16: 1.4504 in 10 minutes (4 runs,
    # 1.4436-1.4564; 1.4550-1.4584 before the average), 1.4625-1.4653 without the weight
    # decay, 1.4814 with neither, 1.4988 at block 64.
    "cpu": {**_NANOGPT_RECIPE, **_CPU_SHAPE, **_SPEEDRUN, **_TEN_MINUTES},
    # A short budget: the same recipe on batches of 16, so that it gets hundreds of steps,
    # with a short warmup and small evals; its depth and width are sized to the machine
    # (recipes/sizing.py: 2x64 .. these 4x128). It keeps block 64: at 20 s, blocks of 128
    # and 256 (same tokens per step) scored 1.926 and 1.986 against 1.856. The pair
    # embedding, x0 skips and a larger attention scale make it learn faster (20 s: 1.705-1.716
    # against 1.786-1.807); at ten minutes, where the `cpu` model overfits, they did not help.
    "cpu-1m": {
        **_NANOGPT_RECIPE,
        **_CPU_SHAPE,
        **_SPEEDRUN,
        "bigram": True,
        "x0_skip": True,
        "attn_scale": 0.35,
        "n_layer": 4,
        "batch_size": 16,
        "warmup_iters": 30,
        "max_time": 60.0,
        "eval_interval": 250,
        "eval_iters": 20,
    },
    # The AdamW recipe with learned positions (the `cpu` preset before Muon), kept for
    # paired comparisons. Tuned on a 2-core CPU at equal wall time (README): 5x128 beat
    # 4x192, 6x128 and 8x128 (more steps in the budget); batch 48 beat 16, 32 and 64; weight
    # decay 0.3 edged out 0.1; dropout, tied embeddings, lr 3e-3 and 4e-3 hurt.
    "cpu-adamw": {**_NANOGPT_RECIPE, **_CPU_SHAPE, "weight_decay": 0.3, "learning_rate": 2e-3},
}


# Sized for CPUs: on a GPU their small models leave it mostly idle (docs/results.md, H200:
# 5% of its matrix rate at the default shape), so a run of one on a GPU says so.
CPU_PRESETS = ("cpu", "cpu-1m", "cpu-adamw")


def gpu_note(preset: str | None, device_type: str) -> str | None:
    """A line for a CPU preset trained on a GPU, pointing to the GPU recipe."""
    if preset not in CPU_PRESETS or device_type == "cpu":
        return None
    return (
        f"note: --preset {preset} is sized for CPUs and leaves a GPU mostly idle; "
        "--preset nanogpt-char reached val 1.47 in two minutes on an H200"
    )


def preset_options(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


MAX_CONFIG_BYTES = 1 << 20  # a config file, or a run's config.json, is far smaller


def load_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML file or a run's config.json, as one flat mapping."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"config file not found: {path}")
    if not path.is_file():
        raise UsageError(f"config file {path} is not a regular file")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            raw = tomllib.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"cannot parse config file {path}: {first_line(exc, 200)}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"config file {path} must hold a table of options")
    flat: dict[str, Any] = {}
    # A run's config.json nests {"model": {...}, "train": {...}, "data": {...}} beside
    # metadata (name, command, ...); a TOML file may use the same sections.
    json_file = path.suffix == ".json"
    for key, value in raw.items():
        if key in ("model", "train"):
            if not isinstance(value, dict):
                raise UsageError(f"[{key}] in {path} must be a table of options")
            flat.update(value)
        elif key == "data":
            path_value = value.get("path") if isinstance(value, dict) else value
            if path_value is not None:
                if not isinstance(path_value, str):
                    raise UsageError(f"data in {path} must be a file path")
                flat["data"] = path_value
        elif isinstance(value, dict):
            if not json_file:
                raise UsageError(f"unknown section [{key}] in {path}; use [model] or [train]")
        elif not json_file:
            flat[key] = value  # TOML may also give options at the top level
    flat.pop("vocab_size", None)  # always derived from the data
    known = {f.name: f for cls in (ModelConfig, TrainConfig) for f in fields(cls)}
    for key, value in flat.items():
        name = key.replace("-", "_")
        if name == "data":
            continue
        if name not in known:
            raise UsageError(f"unknown option {key!r} in config file {path}")
        try:  # checked here, even where the command line overrides it: the file is wrong
            check(known[name], value)
        except OptionError as exc:
            raise UsageError(f"config file {path}: {exc}") from None
    return flat
