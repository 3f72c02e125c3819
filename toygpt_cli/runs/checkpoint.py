"""Checkpoints: saved through a temporary file and a rename, read back checked once.

A checkpoint is a plain dictionary of tensors and numbers (it loads with
`torch.load(weights_only=True)`): weights, the configurations, the vocabulary, the loop
state, and for resuming the optimizer and every random stream. `read_checkpoint` is the
one way in: it checks the file's own checksums (a bit flipped on disk is found), then that
everything in it has the shape toygpt writes — the configuration valid, the vocabulary the
model's size, every weight of the right name and shape (compared against a model built
on the `meta` device, so an absurd size allocates nothing) and finite, the step sane — and
says what is wrong in one line otherwise.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toygpt_cli.config import MAX_STEPS, ModelConfig, TrainConfig, from_dict
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import ToygptError, first_line
from toygpt_cli.model import GPT
from toygpt_cli.storage.files import write_atomic

FORMAT = "toygpt-checkpoint/1"
# What best.pt leaves out. "live": the training weights of a run that averages them (--ema),
# whose "model" is the average.
RESUME_ONLY = ("optimizer", "scaler", "rng", "live")


class DamagedCheckpoint(ToygptError):
    """A checkpoint that cannot be used: corrupt, truncated, or not as toygpt writes it."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write through a temporary file and a rename: the previous checkpoint survives a crash.

    torch.save serialises into memory first: writing straight to a file, a full disk
    surfaces as a cryptic RuntimeError ("unexpected pos"); a plain write says ENOSPC.
    """
    buffer = io.BytesIO()
    try:
        torch.save({"format": FORMAT, **state}, buffer)
    except (OSError, MemoryError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "out of memory"
        raise ToygptError(f"could not write {path}: {why}") from None
    write_atomic(Path(path), lambda f: f.write(buffer.getbuffer()))


@dataclass
class Checkpoint:
    """A checkpoint read and checked: what it holds, typed."""

    path: Path
    model_config: ModelConfig
    tokenizer: CharTokenizer
    step: int
    state: dict[str, Any]  # the loop state (train.LoopState's fields)
    data: dict[str, Any]  # everything, tensors included

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return self.data["model"]

    def train_config(self) -> TrainConfig:
        return self._checked(lambda: _valid(from_dict(TrainConfig, self.data["train_config"])))

    def build_model(self, device: torch.device | str = "cpu") -> GPT:
        """The model with these weights, in eval mode on `device`."""
        model = GPT(self.model_config)
        model.load_state_dict(self.weights)
        return model.to(device).eval()

    def _checked(self, read):
        try:
            return read()
        except ToygptError as exc:
            raise DamagedCheckpoint(f"{self.path} is damaged: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedCheckpoint(f"{self.path} is damaged: {damage(exc)}") from None


def _valid(cfg):
    cfg.validate()
    return cfg


def read_checkpoint(path: Path, resume: bool = False) -> Checkpoint:
    """The checkpoint at `path`, checked; `resume` also requires (and checks) what resuming
    needs: the training configuration, the optimizer state and the random streams."""
    path = Path(path)
    raw = _load(path)
    where = f"{path} is damaged"
    try:
        cfg = _valid(from_dict(ModelConfig, _mapping(raw, "model_config")))
    except ToygptError as exc:
        raise DamagedCheckpoint(f"{where}: its model configuration is invalid: {exc}") from None
    vocab = raw.get("vocab")
    if not isinstance(vocab, str) or len(set(vocab)) != len(vocab) or not vocab:
        raise DamagedCheckpoint(f"{where}: its vocabulary is not a string of distinct characters")
    if len(vocab) != cfg.vocab_size:
        raise DamagedCheckpoint(
            f"{where}: {len(vocab)} characters in its vocabulary for a model of {cfg.vocab_size}"
        )
    check_weights(_mapping(raw, "model"), cfg, where)
    if "live" in raw:
        check_weights(_mapping(raw, "live"), cfg, where)
    state = _check_state(_mapping(raw, "state"), where)
    ckpt = Checkpoint(path, cfg, CharTokenizer(vocab), state["step"], state, raw)
    if resume:
        ckpt.train_config()
        for key in ("optimizer", "rng"):
            _mapping(raw, key, where)
        for key in ("batches", "cpu"):
            if key not in raw["rng"]:
                raise DamagedCheckpoint(f"{where}: it has no random stream {key!r} to resume")
    return ckpt


def _load(path: Path) -> dict[str, Any]:
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):  # a FIFO or a device would never end
            raise DamagedCheckpoint(f"checkpoint {path} is not a regular file")
        with zipfile.ZipFile(path) as archive:  # torch.save writes a zip with CRC-32s
            bad = archive.testzip()
    except FileNotFoundError:
        raise ToygptError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise ToygptError(f"checkpoint {path} is a folder") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DamagedCheckpoint(
            f"checkpoint {path} is corrupt or truncated ({first_line(exc)})"
        ) from None
    if bad is not None:
        raise DamagedCheckpoint(
            f"checkpoint {path} is corrupt: its part {bad} fails its checksum (a damaged disk "
            "or copy)"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain data: pickled code ends here.
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise DamagedCheckpoint(
                f"refusing to load {path}: it contains pickled Python objects, not just tensors"
            ) from None
        raise DamagedCheckpoint(f"checkpoint {path} is corrupt ({first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, MemoryError) as exc:
        raise DamagedCheckpoint(f"checkpoint {path} is corrupt ({first_line(exc)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DamagedCheckpoint(f"{path} is not a toygpt checkpoint")
    return raw


def _mapping(raw: dict, key: str, where: str = "the checkpoint is damaged") -> dict:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise DamagedCheckpoint(f"{where}: it has no {key!r}" if value is None else
                                f"{where}: its {key!r} is not a mapping")  # fmt: skip
    return value


def check_weights(weights: dict, cfg: ModelConfig, where: str, shapes_only: bool = False) -> None:
    """Every weight a model of `cfg` has, of its shape, and finite; nothing else.
    `shapes_only`: `weights` maps names to shapes (from a file's header), nothing is read."""
    with torch.device("meta"):
        model = GPT(cfg).state_dict()
    expected = {k: tuple(v.shape) for k, v in model.items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has an unknown {extra[0]}"
        n = len(missing) + len(extra)
        raise DamagedCheckpoint(f"{where}: its weights do not fit its configuration: it {what}"
                                + (f" (and {n - 1} more)" if n > 1 else ""))  # fmt: skip
    for key, shape in expected.items():
        value = weights[key]
        if shapes_only:
            got = value
        else:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if got != shape:
            raise DamagedCheckpoint(
                f"{where}: {key} is {got}, where a model of its configuration has {shape}"
            )
        if shapes_only:
            continue
        if value.layout != torch.strided or value.device.type != "cpu":
            raise DamagedCheckpoint(f"{where}: {key} is not a plain tensor ({value.layout}, "
                                    f"{value.device.type})")  # fmt: skip
        if value.is_floating_point() != model[key].is_floating_point():
            raise DamagedCheckpoint(f"{where}: {key} holds {value.dtype} values")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise DamagedCheckpoint(f"{where}: {key} holds NaN or infinite values")


def _check_state(state: dict, where: str) -> dict:
    def bad(what: str):
        return DamagedCheckpoint(f"{where}: its {what}")

    step = state.get("step")
    if not _is_int(step) or not 0 <= step <= MAX_STEPS:
        raise bad(f"step is {step!r}")
    last = state.get("last_eval_step", -1)
    if not _is_int(last) or not -1 <= last <= step:
        raise bad(f"last eval step is {last!r}")
    best = state.get("best_val")
    if best is not None and (not _is_num(best) or not math.isfinite(best)):
        raise bad(f"best val loss is {best!r}")
    for key in ("wall_seconds", "budget_start"):
        value = state.get(key, 0.0)
        if not _is_num(value) or not 0 <= value < 1e12:
            raise bad(f"{key} is {value!r}")
    taken = state.get("windows_taken", 0)
    if not _is_int(taken) or not 0 <= taken <= MAX_STEPS * 2**20:
        raise bad(f"count of training windows is {taken!r}")
    windows = state.get("eval_windows")
    if windows is not None and (not _is_int(windows) or not 1 <= windows <= 2**31):
        raise bad(f"eval window count is {windows!r}")
    return state


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def damage(exc: BaseException) -> str:
    """One line saying what a malformed checkpoint lacks or gets wrong."""
    if isinstance(exc, KeyError):
        return f"it has no {exc}"
    return first_line(exc)
