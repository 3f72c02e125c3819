"""The layers under the command line: presets (named partial configurations, each measured
in the README) and config files (TOML, or a run's config.json). Precedence: preset <
--config/--like < command line; `config.build_configs` merges and validates them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toygpt_cli.errors import UsageError

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

# Presets are partial configurations applied before a config file and command-line options.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "nanogpt-char": {
        **_NANOGPT_RECIPE,
        "block_size": 256,
        "n_layer": 6,
        "n_head": 6,
        "n_embd": 384,
        "dropout": 0.2,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "iters": 5000,
        "eval_interval": 250,
    },
    # The lowest val loss a laptop-class CPU reaches in 10 minutes of wall time, evals
    # included, with the small-GPT speedrun recipe: Muon on the block matrices, rotary
    # positions, the modern block. A FIRST GUESS from a stand-alone probe (5x128, Muon lr
    # 0.02, AdamW lr 8e-3, cosine to 5% of the peaks: whole-val 1.520 in 570 s on 2 cores),
    # not yet tuned or measured through toygpt.
    "cpu": {
        **_NANOGPT_RECIPE,
        "pos": "rope",
        "arch": "modern",
        "optimizer": "muon",
        "block_size": 64,
        "n_layer": 5,
        "n_head": 4,
        "n_embd": 128,
        "dropout": 0.0,
        "batch_size": 48,
        "beta2": 0.99,
        "learning_rate": 8e-3,
        "min_lr": 4e-4,  # 5% of the peak; Muon's rate decays to 5% of muon_lr alike
        "muon_lr": 0.02,
        "muon_momentum": 0.95,
        "iters": 0,  # no step limit: the time budget ends the run
        "max_time": 600.0,
        "eval_interval": 500,
        "eval_iters": 40,
    },
    # A one-minute budget (goal: nanoGPT's CPU result, val 1.886, in 35 s): the same recipe
    # on a smaller model and batch, so that it gets hundreds of steps; a short warmup and
    # few, small evals. A FIRST GUESS, not yet measured.
    "cpu-1m": {
        **_NANOGPT_RECIPE,
        "pos": "rope",
        "arch": "modern",
        "optimizer": "muon",
        "block_size": 64,
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "dropout": 0.0,
        "batch_size": 16,
        "beta2": 0.99,
        "learning_rate": 8e-3,
        "min_lr": 4e-4,
        "muon_lr": 0.02,
        "warmup_iters": 30,
        "iters": 0,
        "max_time": 60.0,
        "eval_interval": 250,
        "eval_iters": 20,
    },
    # Today's AdamW recipe with learned positions (the `cpu` preset before Muon), kept for
    # paired comparisons and the README's figures. Tuned on a 2-core CPU at equal wall
    # time (README): a deeper, narrower model than the seed's with a longer context, on a
    # schedule fitted to the time budget; 5x128 beat 4x192, 6x128 and 8x128 (more steps in
    # the budget); batch 48 beat 16, 32 and 64; weight decay 0.3 edged out 0.1; dropout,
    # tied embeddings, lr 3e-3 and 4e-3 hurt.
    "cpu-adamw": {
        **_NANOGPT_RECIPE,
        "block_size": 64,
        "n_layer": 5,
        "n_head": 4,
        "n_embd": 128,
        "dropout": 0.0,
        "batch_size": 48,
        "beta2": 0.99,
        "weight_decay": 0.3,
        "learning_rate": 2e-3,
        "iters": 0,  # no step limit: the time budget ends the run
        "max_time": 600.0,
        "eval_interval": 500,
        "eval_iters": 40,
    },
}


def preset_options(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def load_config_file(path: Path) -> dict[str, Any]:
    """Options from a TOML file or a run's config.json, as one flat mapping."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
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
        raise UsageError(f"cannot parse config file {path}: {_first_line(exc)}") from None
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
    return flat


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
