"""The run recorder: what writes a run folder while it trains.

It listens to the trainer's events and writes status.json, metrics.jsonl, samples.jsonl,
trace.jsonl and loss.png; the trainer hands it each checkpoint (`save_checkpoint`), which
it writes as ckpt.pt (everything, to resume) and, for the best weights so far, best.pt
(the weights alone, to sample), as `keep` says. Benchmarks, notebooks and ranks other than
0 train without one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from toygpt_cli.errors import ToygptError
from toygpt_cli.events import EvalDone, SampleWritten, StepDone, TrainEnded, TrainStarted
from toygpt_cli.runs.checkpoint import RESUME_ONLY, save_checkpoint
from toygpt_cli.runs.folder import CKPT_BEST, CKPT_LAST, LOSS_PNG, Run, utc_now
from toygpt_cli.runs.plot import write_loss_png

TRACE_EVERY = 10  # steps between trace.jsonl records (the training loss and rate as it was)
TRACE_SECONDS = 0.5  # ... and at most two a second


class RunRecorder:
    def __init__(self, run: Run, keep: str = "both"):
        self.run, self.keep = run, keep
        self._traced = 0.0

    def save_checkpoint(self, state: dict[str, Any], step: int, best: bool) -> None:
        save_checkpoint(self.run.file(CKPT_LAST), state)
        if best and self.keep != "last":
            weights = {k: v for k, v in state.items() if k not in RESUME_ONLY}
            save_checkpoint(self.run.file(CKPT_BEST), weights)

    def __call__(self, event) -> None:
        if isinstance(event, TrainStarted):
            self.run.mark_running(event.step, event.iters)
        elif isinstance(event, StepDone):
            now = time.monotonic()
            if event.step % TRACE_EVERY == 0 and now - self._traced >= TRACE_SECONDS:
                self._traced = now
                loss = event.loss.item()  # waits for the device: a few times a second at most
                record = {"step": event.step, "loss": round(loss, 5), "lr": event.lr}
                self.run.append_trace({**record, "elapsed": round(event.elapsed, 2)})
        elif isinstance(event, EvalDone):  # after its checkpoint is on disk
            r = event.record
            self.run.append_metric(r)
            write_loss_png(self.run.file(LOSS_PNG), self.run, self.run.name)
            fields = {"step": r["step"], "last_val": r["val_loss"], "last_train": r["train_loss"]}
            if event.improved:
                fields["best_val"] = r["val_loss"]
            self.run.update_status(**fields, wall_seconds=round(r["elapsed"], 1))
        elif isinstance(event, SampleWritten):
            self.run.append_sample({"step": event.step, "seed": event.seed, "text": event.text})
        elif isinstance(event, TrainEnded):
            if (
                event.status == "completed"
                and self.keep == "best"
                and self.run.file(CKPT_BEST).exists()
            ):
                self.run.file(CKPT_LAST).unlink(missing_ok=True)  # keep only the best weights
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
