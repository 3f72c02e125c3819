"""Loading a run's checkpoint to sample from it or evaluate it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toygpt_cli.corpus import load_corpus
from toygpt_cli.data import CharTokenizer
from toygpt_cli.device import resolve_device, resolve_dtype
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.evaluate import loss_report, scored_chars, split_loss
from toygpt_cli.model import GPT
from toygpt_cli.runs.checkpoint import read_checkpoint
from toygpt_cli.runs.folder import EVAL, Run, open_run, utc_now
from toygpt_cli.storage.files import read_json, write_json


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

    @property
    def label(self) -> str:
        """The run's name, with its label when it has one: `20261130-101500 (small)`."""
        return self.run.title if self.run is not None else self.name


def load_for_inference(
    ref: str, runs_dir: Path, which: str = "auto", device: str = "auto", dtype: str = "auto"
) -> LoadedRun:
    """The model of run `ref` ('best', 'last' or 'auto' checkpoint) ready on `device`.

    `ref` may also be a file exported by `toygpt export` (ending in .safetensors).
    Checkpoints are replaced by a rename, so a run that is still training is read at a
    consistent state.
    """
    from toygpt_cli.runs.export import is_export_path, load_export

    dev = resolve_device(device)
    if is_export_path(ref):
        if which != "auto":
            raise UsageError("--checkpoint applies to run folders, not to an exported file")
        path = Path(ref)
        model, tokenizer, info = load_export(path, dev)
        dt = resolve_dtype(dtype, dev, generation=True, n_params=model.num_params(tables=False))
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
    ckpt = read_checkpoint(path)
    model = ckpt.build_model(dev)
    dt = resolve_dtype(dtype, dev, generation=True, n_params=model.num_params(tables=False))
    data = run.config().get("data", {})
    return LoadedRun(
        run,
        path,
        model,
        ckpt.tokenizer,
        dev,
        dt,
        ckpt.step,
        ckpt.train_config().val_fraction,
        run.name,
        Path(data["path"]) if data.get("path") else None,
        data.get("sha256"),
    )


def evaluate_run(
    loaded: LoadedRun,
    splits: tuple[str, ...] = ("train", "val"),
    max_chars: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    offsets: int = 1,
) -> dict[str, Any]:
    """Losses of a loaded run on its splits, merged into the run's eval.json.

    Each split is scored whole (from `offsets` window alignments, averaged), or on
    `max_chars` of its positions (evenly spaced windows, see `evaluate.subset_windows`).
    `progress(split, done, total)` counts scored positions.
    Results kept from eval.json: the splits not scored now, when they were scored from the
    same checkpoint file at the same step on the same text (sha256).
    """
    if loaded.data_path is None:
        raise ToygptError(f"cannot evaluate {loaded.name}: it does not record its training text")
    try:
        corpus = load_corpus(loaded.data_path, loaded.val_fraction, loaded.tokenizer)
    except ToygptError as exc:
        raise ToygptError(f"cannot evaluate {loaded.name}: {exc}") from None
    block = loaded.model.config.block_size
    train, val = corpus.splits()
    data = {"train": train, "val": val}
    now = utc_now()
    scored = {}
    for s in splits:
        tick = None if progress is None else functools.partial(progress, s)
        # The split stays in its memory map: each chunk of windows goes to the device alone.
        loss = split_loss(
            loaded.model, data[s], block, loaded.dtype, max_chars=max_chars, offsets=offsets,
            progress=tick,
        )  # fmt: skip
        scored[s] = {
            **loss_report(loss),
            "chars": len(data[s]),
            "scored_chars": scored_chars(len(data[s]), block, max_chars),
            "max_chars": max_chars,
            "offsets": offsets if max_chars is None else 1,
            "device": str(loaded.device),
            "dtype": loaded.dtype,
            "evaluated": now,
        }
    result = {
        "run": loaded.name,
        "checkpoint": loaded.checkpoint.name,
        "step": loaded.step,
        "device": str(loaded.device),
        "dtype": loaded.dtype,
        "data": str(loaded.data_path),
        "data_sha256": corpus.sha256,
        "data_matches_run": loaded.data_sha256 in (None, corpus.sha256),
        "evaluated": now,
        "splits": scored,
    }
    if loaded.run is not None:  # a read-only run still gets its scores, and a note
        path = loaded.run.file(EVAL)
        kept = _kept_splits(path, result)
        # a split scored whole is not replaced by a sample of it (--max-chars)
        whole = [s for s in scored if max_chars is not None and _whole(kept.get(s))]
        result["splits"] = {**kept, **scored}
        try:
            write_json(path, {**result, "splits": {**result["splits"],
                                                   **{s: kept[s] for s in whole}}})  # fmt: skip
            result["saved"] = True
            result["whole_kept"] = whole
        except ToygptError as exc:
            result["saved"], result["save_error"] = False, str(exc)
    return result


def _whole(split: dict[str, Any] | None) -> bool:
    return isinstance(split, dict) and split.get("max_chars") is None


def _kept_splits(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The split results of an earlier eval.json that still describe the same weights."""
    try:
        earlier = read_json(path)
        same = all(earlier.get(k) == result[k] for k in ("checkpoint", "step", "data_sha256"))
        return dict(earlier["splits"]) if same else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
