"""Checkpoints: plain dictionaries of tensors and numbers, loadable with weights_only=True.

A checkpoint holds everything a run needs to sample, evaluate or resume exactly: weights,
optimizer state, step, RNG states, configuration and vocabulary. It never depends on how
the model was wrapped (torch.compile, DDP): weights are saved from the bare module.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from toygpt_cli.config import ModelConfig, from_dict
from toygpt_cli.data import CharTokenizer
from toygpt_cli.errors import ToygptError, first_line
from toygpt_cli.storage.files import write_atomic
from toygpt_cli.model import GPT

FORMAT = "toygpt-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write through a temporary file and a rename: the previous checkpoint survives a crash.

    torch.save serialises into memory first: writing straight to a file, a full disk
    surfaces as a cryptic RuntimeError ("unexpected pos"); a plain write says ENOSPC.
    """
    buffer = io.BytesIO()

    def write(f) -> None:
        torch.save({"format": FORMAT, **state}, buffer)
        f.write(buffer.getbuffer())

    write_atomic(Path(path), write)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ToygptError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain data: pickled code ends here.
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise ToygptError(
                f"refusing to load {path}: it contains pickled Python objects, not just tensors"
            ) from None
        raise ToygptError(
            f"checkpoint {path} is corrupt or truncated ({first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ToygptError(
            f"checkpoint {path} is corrupt or truncated ({first_line(exc)})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ToygptError(f"{path} is not a toygpt checkpoint")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device | str = "cpu"):
    """The GPT and tokenizer stored in a checkpoint, in eval mode on `device`."""
    try:
        cfg = from_dict(ModelConfig, ckpt["model_config"])
        cfg.validate()
        model = GPT(cfg)
        model.load_state_dict(ckpt["model"])
        tokenizer = CharTokenizer(ckpt["vocab"])
    except ToygptError as exc:
        raise ToygptError(f"the checkpoint's configuration is invalid: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ToygptError(f"the checkpoint is damaged or made by hand: {damage(exc)}") from None
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ToygptError(
            f"the checkpoint is damaged: {tokenizer.vocab_size} characters in its vocabulary "
            f"for a model of {cfg.vocab_size}"
        )
    return model.to(device).eval(), tokenizer


def damage(exc: BaseException) -> str:
    """One line saying what a malformed checkpoint lacks or gets wrong."""
    if isinstance(exc, KeyError):
        return f"it has no {exc}"
    return first_line(exc)
