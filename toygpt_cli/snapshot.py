"""What a checkpoint holds: the trainer's full state, captured and restored exactly.

Model, optimizer (and gradient scaler), the loop state, every rank's batch generator, the
dropout RNGs, the configuration and the vocabulary: N steps + resume M steps gives the
same weights as N + M steps in one go (bit for bit on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from toygpt_cli.config import to_dict
from toygpt_cli.errors import ToygptError
from toygpt_cli.optim import apply_hparams, load_optimizer_state
from toygpt_cli.runs.checkpoint import damage


@dataclass
class State:
    """What decides the future of a run, beyond the model and optimizer (loop state)."""

    step: int = 0
    best_val: float | None = None
    last_eval_step: int = -1
    wall_seconds: float = 0.0  # whole-run wall time, carried across resumes
    budget_start: float = 0.0  # wall_seconds when the current max_time budget began


def capture(trainer) -> dict[str, Any]:
    """Everything needed to resume exactly. Every rank must call it (it gathers)."""
    cuda = trainer.device.type == "cuda"
    return {
        "model": trainer.model.state_dict(),
        "model_config": to_dict(trainer.model_cfg),
        "train_config": to_dict(trainer.cfg),
        "vocab": trainer.corpus.tokenizer.chars,
        "state": vars(trainer.state).copy(),
        "dtype": trainer.dtype,
        "torch_version": str(torch.__version__),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "rng": {
            "batches": trainer.dist.gather_generator_states(trainer.batch_gen),
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(trainer.device) if cuda else None,
        },
    }


def restore(trainer, ckpt: dict[str, Any]) -> None:
    """Put a captured state back; a checkpoint that does not fit is one line."""
    try:
        _restore(trainer, ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise ToygptError(f"the checkpoint does not fit its own run: {damage(exc)}") from None


def _restore(trainer, ckpt: dict[str, Any]) -> None:
    trainer.model.load_state_dict(ckpt["model"])
    load_optimizer_state(trainer.optimizer, ckpt["optimizer"], trainer.model)
    apply_hparams(trainer.optimizer, trainer.cfg)  # options changed on resume must win
    if ckpt.get("scaler"):
        trainer.scaler.load_state_dict(ckpt["scaler"])
    known = State.__annotations__
    trainer.state = State(**{k: v for k, v in ckpt["state"].items() if k in known})
    ranks = ckpt["rng"]["batches"]
    if trainer.dist.rank < len(ranks):
        trainer.batch_gen.set_state(ranks[trainer.dist.rank])
    torch.set_rng_state(ckpt["rng"]["cpu"])
    if trainer.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], trainer.device)
