"""Exported weights: a run's model as one .safetensors file that other tools can read.

The file holds the model's tensors (float32, as trained) and, in the safetensors
metadata (a str -> str map, so structured values are JSON-encoded), everything needed to
use it without the run folder: the model configuration, the vocabulary, where the weights
came from, and the training text's path and split for `toygpt eval`.

safetensors refuses tensors that share memory, so a model with tied embeddings stores
the shared matrix once; the `tied` entry names each dropped key and the key it shares,
and loading ties them again. safetensors is an optional extra: `toygpt[export]`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toygpt_cli import __version__
from toygpt_cli.runs.checkpoint import load_checkpoint, model_from_checkpoint
from toygpt_cli.errors import ToygptError
from toygpt_cli.storage.files import write_atomic
from toygpt_cli.runs.folder import Run

FORMAT = "toygpt-safetensors/1"
SUFFIX = ".safetensors"
# Keys a tied model shares with another; the first is dropped on export, re-tied on load.
TIED_KEYS = {"tok_emb.weight": "lm_head.weight"}


def _safetensors_torch(writing: bool = False):
    try:
        import safetensors.torch

        if writing:
            import numpy  # noqa: F401  (safetensors writes torch tensors through NumPy)
    except ImportError as exc:
        raise ToygptError(
            f"{'writing' if writing else 'reading'} .safetensors files needs the optional "
            f"extra: pip install 'toygpt[export]' ({exc.name or 'a package'} is missing)"
        ) from None
    return safetensors.torch


def is_export_path(ref: str | Path) -> bool:
    return str(ref).endswith(SUFFIX)


def export_run(run: Run, output: Path | None = None, which: str = "auto") -> dict[str, Any]:
    """Write run's checkpoint ('best', 'last' or 'auto') as safetensors; returns a summary."""
    st = _safetensors_torch(writing=True)
    path = run.checkpoint_path(which)
    ckpt = load_checkpoint(path)
    output = Path(output) if output is not None else run.file("model" + SUFFIX)
    if output.is_dir():
        raise ToygptError(f"{output} is a folder; give a file name ending in {SUFFIX}")
    cfg = ckpt["model_config"]
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt["model"].items()}
    tied = {a: b for a, b in TIED_KEYS.items() if cfg.get("tie_weights")}
    for alias in tied:
        tensors.pop(alias, None)
    data = run.config().get("data", {})
    train_cfg = ckpt.get("train_config", {})
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(cfg),
        "vocab": json.dumps(ckpt["vocab"]),
        "tied": json.dumps(tied),
        "run": run.name,
        "checkpoint": path.name,
        "step": str(ckpt["state"]["step"]),
        "data": json.dumps({"path": data.get("path"), "sha256": data.get("sha256")}),
        "val_fraction": json.dumps(train_cfg.get("val_fraction", 0.1)),
        "train_config": json.dumps(train_cfg, default=str),
        "toygpt_version": __version__,
        "torch_version": str(torch.__version__),
    }
    blob = st.save(tensors, metadata=metadata)
    if not output.parent.exists():
        raise ToygptError(f"cannot write {output}: folder {output.parent} does not exist")
    write_atomic(output, lambda f: f.write(blob))
    return {
        "run": run.name,
        "checkpoint": path.name,
        "step": ckpt["state"]["step"],
        "output": str(output),
        "bytes": len(blob),
        "tensors": len(tensors),
        "tied": sorted(tied),
    }


@dataclass
class Export:
    """What an exported file holds besides the model itself."""

    run: str
    checkpoint: str
    step: int
    data_path: Path | None
    data_sha256: str | None
    val_fraction: float
    metadata: dict[str, str]


def load_export(path: Path, device: torch.device | str = "cpu"):
    """(model, tokenizer, Export) from an exported file, the model in eval mode on `device`."""
    path = Path(path)
    if not path.exists():
        raise ToygptError(f"file not found: {path}")
    if not path.is_file():
        raise ToygptError(f"{path} is not a file")
    st = _safetensors_torch()
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ToygptError(f"{path} is a safetensors file but not a toygpt export")
        tensors = st.load_file(str(path))
    except ToygptError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ToygptError(f"{path} is not a readable safetensors file ({first})") from None
    try:
        for alias, target in json.loads(meta.get("tied", "{}")).items():
            tensors[alias] = tensors[target]
        ckpt = {
            "model_config": json.loads(meta["model_config"]),
            "vocab": json.loads(meta["vocab"]),
            "model": tensors,
        }
        model, tokenizer = model_from_checkpoint(ckpt, device)
        data = json.loads(meta.get("data", "{}"))
        info = Export(
            run=meta.get("run", path.stem),
            checkpoint=meta.get("checkpoint", path.name),
            step=int(meta.get("step", 0)),
            data_path=Path(data["path"]) if data.get("path") else None,
            data_sha256=data.get("sha256"),
            val_fraction=float(json.loads(meta.get("val_fraction", "0.1"))),
            metadata=meta,
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ToygptError(f"{path} has damaged toygpt metadata or weights ({first})") from None
    return model, tokenizer, info
