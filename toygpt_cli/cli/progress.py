"""Rendering training events: a rich progress bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from toygpt_cli.cli.common import err


def fmt_loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def eval_line(record: dict, iters: int, max_time: float = 0.0) -> str:
    tps = record.get("tokens_per_sec")
    # Under a time budget the step count is only an upper bound: show the budget instead.
    total = "" if max_time else f"/{iters}"
    budget = f" of {_clock(max_time)}" if max_time else ""
    return (
        f"step {record['step']:>6}{total}  train {fmt_loss(record['train_loss'])}  "
        f"val {fmt_loss(record['val_loss'])}  lr {record['lr']:.2e}  "
        + (f"{tps:,.0f} tok/s  " if tps else "")
        + f"{_clock(record['elapsed'])}{budget}"
    )


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class TrainDisplay:
    """A callback for Trainer events. Use as a context manager around `trainer.run()`."""

    def __init__(self, fancy: bool):
        self.fancy = fancy
        self.progress: Progress | None = None
        self.task = None
        self.iters = 0
        self.max_time = 0.0
        self._last_refresh = 0.0
        self._eval = "-"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event) -> None:
        from toygpt_cli.train import EvalDone, SampleWritten, StepDone, TrainStarted

        if isinstance(event, TrainStarted):
            self._started(event)
        elif isinstance(event, StepDone):
            self._step(event)
        elif isinstance(event, EvalDone):
            r = event.record
            self._eval = f"{fmt_loss(r['train_loss'])}/{fmt_loss(r['val_loss'])}"
            line = eval_line(r, self.iters, self.max_time)
            (self.progress.console if self.progress else err).print(line, highlight=False)
        elif isinstance(event, SampleWritten) and self.progress is not None:
            self.progress.update(self.task, sample=event.text.replace("\n", " ")[:60])

    def _started(self, e) -> None:
        self.iters = e.iters
        self.max_time = e.max_time
        where = f" in {e.run.path}" if e.run else ""
        verb = "resuming at step" if e.resumed else "training from step"
        goal = (
            f"for {_clock(e.max_time)} (at most {e.iters} steps)" if e.max_time else f"to {e.iters}"
        )
        err.print(
            f"{verb} {e.step} {goal}: {e.n_params / 1e6:.2f}M parameters on {e.device} "
            f"({e.dtype}){where}",
            highlight=False,
        )
        if not self.fancy:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("<"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("eval {task.fields[eval]}"),
            console=err,
            transient=False,
        )
        self.task = self.progress.add_task(
            "train", total=e.iters, completed=e.step, speed="", loss="-", eval=self._eval, sample=""
        )
        self.progress.start()

    def _step(self, e) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last_refresh < 0.25 and e.step < e.iters:
            self.progress.update(self.task, completed=e.step)
            return
        self._last_refresh = now
        # Reading the loss synchronises with the device: only a few times a second.
        speed = f"{e.steps_per_sec:.1f} it/s {e.tokens_per_sec:,.0f} tok/s"
        self.progress.update(
            self.task, completed=e.step, loss=f"{e.loss.item():.4f}", speed=speed, eval=self._eval
        )
