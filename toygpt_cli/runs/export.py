"""Exported weights: a run's model as one .safetensors file that other tools can read.

The file holds the model's tensors (float32, as trained) and, in the safetensors
metadata (a str -> str map, so structured values are JSON-encoded), everything needed to
use it without the run folder: the model configuration, the vocabulary, where the weights
came from, and the training text's path and split for `toygpt eval`.

safetensors refuses tensors that share memory, so a model with tied embeddings stores
the shared matrix once; the `tied` entry names each dropped key and the key it shares,
and loading ties them again. safetensors has no checksum of its own: the `sha256` entry
is that of the tensor data, checked on loading, as everything else is, before the
weights are read. safetensors is an optional extra: `toygpt[export]`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toygpt_cli import __version__
from toygpt_cli.config import ModelConfig, TrainConfig, from_dict
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import ToygptError, first_line, install_hint
from toygpt_cli.model import GPT
from toygpt_cli.runs.checkpoint import check_weights, read_checkpoint
from toygpt_cli.runs.folder import Run
from toygpt_cli.storage.files import write_atomic

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
            f"extra: {install_hint('export')} ({exc.name or 'a package'} is missing)"
        ) from None
    return safetensors.torch


def is_export_path(ref: str | Path) -> bool:
    return str(ref).endswith(SUFFIX)


def export_run(run: Run, output: Path | None = None, which: str = "auto") -> dict[str, Any]:
    """Write run's checkpoint ('best', 'last' or 'auto') as safetensors; returns a summary."""
    st = _safetensors_torch(writing=True)
    path = run.checkpoint_path(which)
    ckpt = read_checkpoint(path)
    output = Path(output) if output is not None else run.file("model" + SUFFIX)
    if output.is_dir():
        raise ToygptError(f"{output} is a folder; give a file name ending in {SUFFIX}")
    if not output.parent.exists():
        raise ToygptError(f"cannot write {output}: folder {output.parent} does not exist")
    cfg = ckpt.model_config
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.weights.items()}
    tied = {a: b for a, b in TIED_KEYS.items() if cfg.tie_weights}
    for alias in tied:
        tensors.pop(alias, None)
    data = run.config().get("data", {})
    train_cfg = ckpt.train_config()
    metadata = {
        "format": FORMAT,
        "model_config": json.dumps(ckpt.data["model_config"]),
        "vocab": json.dumps(ckpt.tokenizer.chars),
        "tied": json.dumps(tied),
        "run": run.name,
        "checkpoint": path.name,
        "step": str(ckpt.step),
        "data": json.dumps({"path": data.get("path"), "sha256": data.get("sha256")}),
        "val_fraction": json.dumps(train_cfg.val_fraction),
        "train_config": json.dumps(ckpt.data["train_config"], default=str),
        "toygpt_version": __version__,
        "torch_version": str(torch.__version__),
    }
    metadata["sha256"] = _payload_sha256(st.save(tensors, metadata=metadata))
    blob = st.save(tensors, metadata=metadata)  # the same tensor data, the hash in its header
    write_atomic(output, lambda f: f.write(blob))
    return {
        "run": run.name,
        "checkpoint": path.name,
        "step": ckpt.step,
        "output": str(output),
        "bytes": len(blob),
        "tensors": len(tensors),
        "tied": sorted(tied),
    }


def _payload_sha256(blob: bytes) -> str:
    """The sha256 of a safetensors file's tensor data (what follows its JSON header)."""
    (header,) = struct.unpack("<Q", blob[:8])
    return hashlib.sha256(memoryview(blob)[8 + header :]).hexdigest()


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
    """(model, tokenizer, Export) from an exported file, the model in eval mode on `device`.
    Everything is checked before a weight is read: the metadata, the configuration, every
    tensor's name and shape against the configuration, and the data's sha256."""
    path = Path(path)
    if not path.exists():
        raise ToygptError(f"file not found: {path}")
    if not path.is_file():
        raise ToygptError(f"{path} is not a file")
    st = _safetensors_torch()
    from safetensors import safe_open

    where = f"{path} is damaged"
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ToygptError(f"{path} is a safetensors file but not a toygpt export")
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except ToygptError:
        raise
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise ToygptError(
            f"{path} is not a readable safetensors file ({first_line(exc)})"
        ) from None
    try:
        cfg = from_dict(ModelConfig, json.loads(meta["model_config"]))
        cfg.validate()
        vocab = json.loads(meta["vocab"])
        tied = json.loads(meta.get("tied", "{}"))
        data = json.loads(meta.get("data", "{}"))
        info = Export(
            run=str(meta.get("run", path.stem)),
            checkpoint=str(meta.get("checkpoint", path.name)),
            step=int(meta.get("step", 0)),
            data_path=Path(data["path"]) if data.get("path") else None,
            data_sha256=data.get("sha256"),
            val_fraction=_checked("val_fraction", json.loads(meta.get("val_fraction", "0.1"))),
            metadata=meta,
        )
        expected = {a: b for a, b in TIED_KEYS.items() if cfg.tie_weights}
        if tied != expected:  # exactly what an export of this configuration writes
            raise ValueError(f"its tied entry {meta.get('tied')!r} does not fit its configuration")
        if (
            not isinstance(vocab, str)
            or len(vocab) != cfg.vocab_size
            or len(set(vocab)) != len(vocab)
        ):
            raise ValueError("its vocabulary does not fit its configuration")
    except ToygptError as exc:
        raise ToygptError(f"{where}: its metadata is invalid: {exc}") from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ToygptError(f"{where}: its metadata is invalid ({first_line(exc)})") from None
    # Names and shapes first, from the header: an absurd configuration allocates nothing.
    check_weights({**shapes, **{a: shapes.get(b) for a, b in tied.items()}}, cfg, where,
                  shapes_only=True)  # fmt: skip
    raw = path.read_bytes()
    # (files exported before the entry existed have none: they load unchecked)
    if "sha256" in meta and meta["sha256"] != _payload_sha256(raw):
        raise ToygptError(f"{where}: its tensor data fails its sha256 (a damaged disk or copy)")
    try:
        tensors = st.load(raw)
    except Exception as exc:
        raise ToygptError(
            f"{path} is not a readable safetensors file ({first_line(exc)})"
        ) from None
    for alias, target in tied.items():
        tensors[alias] = tensors[target]
    check_weights(tensors, cfg, where)
    model = GPT(cfg)
    model.load_state_dict(tensors)
    return model.to(device).eval(), CharTokenizer(vocab), info


def _checked(name: str, value):
    """A training option read from a file, checked as on the command line."""
    from dataclasses import fields

    from toygpt_cli.declare import check

    return check(next(f for f in fields(TrainConfig) if f.name == name), value)
