"""Loading a run's checkpoint to sample from it or evaluate it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toygpt_cli.checkpoint import load_checkpoint, model_from_checkpoint
from toygpt_cli.data import CharTokenizer, Corpus
from toygpt_cli.device import resolve_device, resolve_dtype
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.evaluate import loss_report, split_loss
from toygpt_cli.fileio import write_json
from toygpt_cli.model import GPT
from toygpt_cli.runs import EVAL, Run, open_run, utc_now


@dataclass
class LoadedRun:
    """A model ready to sample or evaluate, from a run folder or an exported file."""

    run: Run | None  # None for an exported .safetensors file: there is no run folder
    checkpoint: Path  # the checkpoint or .safetensors file read
    model: GPT
    tokenizer: CharTokenizer
    device: torch.device
    dtype: str
    step: int
    val_fraction: float
    name: str  # the run's name (for an export, the run it was exported from)
    data_path: Path | None  # the training text, to evaluate on (None if not recorded)
    data_sha256: str | None = None


def load_for_inference(
    ref: str, runs_dir: Path, which: str = "auto", device: str = "auto", dtype: str = "auto"
) -> LoadedRun:
    """The model of run `ref` ('best', 'last' or 'auto' checkpoint) ready on `device`.

    `ref` may also be a file exported by `toygpt export` (ending in .safetensors).
    Checkpoints are replaced by a rename, so a run that is still training is read at a
    consistent state.
    """
    from toygpt_cli.export import is_export_path, load_export

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if is_export_path(ref):
        if which != "auto":
            raise UsageError("--checkpoint applies to run folders, not to an exported file")
        path = Path(ref)
        model, tokenizer, info = load_export(path, dev)
        return LoadedRun(
            None,
            path,
            model,
            tokenizer,
            dev,
            dt,
            info.step,
            info.val_fraction,
            info.run,
            info.data_path,
            info.data_sha256,
        )
    run = open_run(ref, runs_dir)
    path = run.checkpoint_path(which)
    ckpt = load_checkpoint(path)
    model, tokenizer = model_from_checkpoint(ckpt, dev)
    data = run.config().get("data", {})
    return LoadedRun(
        run,
        path,
        model,
        tokenizer,
        dev,
        dt,
        ckpt["state"]["step"],
        ckpt["train_config"].get("val_fraction", 0.1),
        run.name,
        Path(data["path"]) if data.get("path") else None,
        data.get("sha256"),
    )


def evaluate_run(loaded: LoadedRun, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Any]:
    """Whole-split losses of a loaded run, also saved as the run's eval.json."""
    data_path = Path(loaded.run.config()["data"]["path"])
    try:
        corpus = Corpus.load(data_path, loaded.val_fraction, loaded.tokenizer)
    except ToygptError as exc:
        raise ToygptError(f"cannot evaluate {loaded.run.name}: {exc}") from None
    train, val = corpus.splits()
    block = loaded.model.config.block_size
    data = {"train": train, "val": val}
    results = {
        s: {
            **loss_report(split_loss(loaded.model, data[s].to(loaded.device), block, loaded.dtype)),
            "chars": len(data[s]),
        }
        for s in splits
    }
    result = {
        "run": loaded.run.name,
        "checkpoint": loaded.checkpoint.name,
        "step": loaded.step,
        "device": str(loaded.device),
        "dtype": loaded.dtype,
        "data": str(data_path),
        "data_sha256": corpus.sha256,
        "evaluated": utc_now(),
        "splits": results,
    }
    write_json(loaded.run.file(EVAL), result)
    return result
