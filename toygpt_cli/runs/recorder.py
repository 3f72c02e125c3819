"""The run recorder: the one listener that writes a run folder.

It subscribes to the trainer's events and owns every file of the run: status.json,
metrics.jsonl, samples.jsonl, loss.png, ckpt.pt and best.pt. Benchmarks, notebooks and
ranks other than 0 simply do not attach one.
"""

from __future__ import annotations

import contextlib
import sys

from toygpt_cli.runs.checkpoint import save_checkpoint
from toygpt_cli.errors import ToygptError
from toygpt_cli.events import (
    CheckpointDue,
    CheckpointSaved,
    EvalDone,
    SampleWritten,
    TrainEnded,
    TrainStarted,
)
from toygpt_cli.runs.plot import write_loss_png
from toygpt_cli.runs.folder import CKPT_BEST, CKPT_LAST, LOSS_PNG, Run, utc_now

# What best.pt leaves out of the full state: it is for sampling, not resuming.
_RESUME_ONLY = ("optimizer", "scaler", "rng")


class RunRecorder:
    def __init__(self, run: Run, notify=None):
        self.run = run
        self.notify = notify or (lambda event: None)  # told when a checkpoint is on disk

    def __call__(self, event) -> None:
        if isinstance(event, TrainStarted):
            self.run.mark_running(event.step, event.iters)
        elif isinstance(event, EvalDone):
            r = event.record
            self.run.append_metric(r)
            write_loss_png(self.run.file(LOSS_PNG), self.run.metrics(), self.run.name)
            best = self.run.raw_status().get("best_val")
            if event.improved or best is None:
                best = r["val_loss"]
            self.run.update_status(
                step=r["step"],
                best_val=best,
                last_val=r["val_loss"],
                last_train=r["train_loss"],
                wall_seconds=round(r["elapsed"], 1),
            )
        elif isinstance(event, SampleWritten):
            self.run.append_sample({"step": event.step, "seed": event.seed, "text": event.text})
        elif isinstance(event, CheckpointDue):
            path = self.run.file(CKPT_LAST)
            save_checkpoint(path, event.state)
            if event.best:
                state = {k: v for k, v in event.state.items() if k not in _RESUME_ONLY}
                save_checkpoint(self.run.file(CKPT_BEST), state)
            self.notify(CheckpointSaved(path, event.step))
        elif isinstance(event, TrainEnded):
            # The end must be recorded even when the disk is full or the process is dying.
            with contextlib.suppress(ToygptError, OSError):
                self.run.update_status(
                    peak_rss_mb=peak_rss_mb(),
                    status=event.status,
                    step=event.step,
                    planned_steps=event.iters or None,
                    finished=utc_now(),
                    message=event.message,
                    wall_seconds=round(event.wall_seconds, 1),
                )


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
