"""Rendering training events: a rich progress bar on a terminal, log lines elsewhere.

Every phase the user waits on is visible: steps, each eval (with its own progress bar),
the per-eval sample and the checkpoint. Under --max-time the bar measures the time budget
(elapsed / budget, steps so far), never a step count the run will not reach.
"""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from toygpt_cli.cli.common import err


def fmt_loss(value) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.4f}"


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def speed(tokens_per_sec: float) -> str:
    return f"{tokens_per_sec / 1000:.1f}k" if tokens_per_sec >= 10_000 else f"{tokens_per_sec:,.0f}"


def eval_line(record: dict, iters: int, max_time: float = 0.0, used: float | None = None) -> str:
    """One eval as a line that fits in 80 columns. Under a time budget the step count is not
    the goal: the line shows `used` of the budget; else the run's wall time.

        step  2400/5100  train 1.5123  val 1.6234  lr 1.0e-03  1,612 tok/s  0:12:34
    """
    tps = record.get("tokens_per_sec")
    step = f"{record['step']:>{len(str(iters))}}/{iters}" if iters and not max_time else (
        f"{record['step']:>5}"
    )  # fmt: skip
    when = clock(record["elapsed"])
    if max_time and used is not None:
        when = f"{clock(used)}/{clock(max_time)}"
    partial = f" ({record['eval_windows']} windows)" if "eval_windows" in record else ""
    return (
        f"step {step}  train {fmt_loss(record['train_loss'])}  "
        f"val {fmt_loss(record['val_loss'])}{partial}  lr {record['lr']:.1e}  "
        + (f"{speed(tps)} tok/s  " if tps else "")
        + when
    )


NARROW = 110  # columns: a narrower terminal gets the short progress row


class TrainDisplay:
    """A callback for Trainer events. Use as a context manager around `trainer.run()`."""

    def __init__(self, fancy: bool, console=None):
        self.fancy = fancy
        self.console = console or err
        self.progress: Progress | None = None
        self.task = None
        self.eval_task = None
        self.iters = 0
        self.max_time = 0.0
        self._last_refresh = 0.0
        self._eval = "-"
        self._val = "-"
        self._budget_t0 = 0.0
        self._eta_end: float | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, highlight=False)

    def __call__(self, event) -> None:
        from toygpt_cli import events as ev

        handler = {
            ev.TrainStarted: self._started,
            ev.StepDone: self._step,
            ev.EvalDone: self._eval_done,
            ev.PhaseStarted: self._phase,
            ev.PhaseProgress: self._phase_progress,
            ev.SampleWritten: self._sample,
            ev.EstimateReady: self._estimate,
            ev.Notice: lambda e: self._print(f"note: {e.text}"),
        }.get(type(event))
        if handler is not None:
            handler(event)

    def stopping(self, signum: int) -> None:
        """Said at once on the first Ctrl-C (or SIGTERM, SIGHUP): what happens next."""
        import signal

        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self._print(
            f"{what}: stopping at the next safe point (after this step, or now during an "
            "eval) with a checkpoint; "
            + (
                "Ctrl-C again stops at once"
                if what == "Ctrl-C"
                else "a second signal stops at once"
            )
        )

    def _started(self, e) -> None:
        self.iters, self.max_time = e.iters, e.max_time
        self._budget_t0 = time.monotonic() - e.budget_used
        where = f" in {e.run.path}" if e.run else ""
        verb = "resuming at step" if e.resumed else "training from step"
        if e.max_time:
            limit = f", at most to step {e.iters}" if e.iters else ""
            goal = f"for {clock(e.max_time)}{limit}"
        else:
            goal = f"to {e.iters}"
        self.console.print(
            f"{verb} {e.step} {goal}: {e.n_params / 1e6:.2f}M parameters on {e.device} "
            f"({e.dtype}){where}",
            highlight=False,
        )
        if e.last_eval:
            self._eval = (
                f"{fmt_loss(e.last_eval['train_loss'])}/{fmt_loss(e.last_eval['val_loss'])}"
            )
            self._val = fmt_loss(e.last_eval["val_loss"])
            self.console.print(
                "last eval: " + eval_line(e.last_eval, e.iters, e.max_time), highlight=False
            )
        if not self.fancy:
            return
        # Columns are shared by the train row and the eval row: each row fills its own text.
        # The remaining time is the trainer's estimate (evals included), not the bar's own.
        count = (
            [TextColumn("{task.fields[count]}")]
            if e.max_time
            else [MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[eta]}")]
        )
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=10 if self._narrow() else 40),
            *count,
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        used = min(e.budget_used, e.max_time)
        total, done = (e.max_time, used) if e.max_time else (e.iters, e.step)
        self._steps, self._speed, self._loss = e.step, "", "-"
        self.task = self.progress.add_task(
            "train", total=total, completed=done, count=self._count(used), info=self._info(),
            eta=self._eta(),
        )  # fmt: skip
        self.progress.start()

    def _narrow(self) -> bool:
        """Under 110 columns the row keeps what matters most (the speed is in each eval's
        line): at 80, every field stays whole."""
        return self.console.width < NARROW

    def _count(self, used: float) -> str:
        if self._narrow():
            return f"{clock(used)}/{clock(self.max_time)} step {self._steps}"
        return f"{clock(used)} / {clock(self.max_time)}  step {self._steps}"

    def _info(self) -> str:
        if self._narrow():
            return f"loss {self._loss}  val {self._val}"
        return f"{self._speed}  loss {self._loss}  eval {self._eval}".strip()

    def _budget_used(self) -> float:
        """The trainer's budget clock, as last reported, run on to now."""
        return min(time.monotonic() - self._budget_t0, self.max_time)

    def _eta(self) -> str:
        if self._eta_end is None:
            return "< -:--:--"
        return f"< {clock(max(0.0, self._eta_end - time.monotonic()))}"

    def _advance(self, **fields) -> None:
        if self.max_time:
            used = self._budget_used()
            fields.update(completed=used, count=self._count(used))
        self.progress.update(self.task, info=self._info(), eta=self._eta(), **fields)

    def _step(self, e) -> None:
        if self.progress is None:
            return
        self._steps = e.step
        self._budget_t0 = time.monotonic() - e.budget_elapsed  # the trainer's clock rules
        done = {} if self.max_time else {"completed": e.step}
        now = time.monotonic()
        if now - self._last_refresh >= 0.25 or e.step == e.iters:
            self._last_refresh = now
            # Reading the loss synchronises with the device: only a few times a second.
            self._speed = f"{e.steps_per_sec:.1f} it/s {e.tokens_per_sec:,.0f} tok/s"
            self._loss = f"{e.loss.item():.4f}"
        self._advance(description="train", **done)

    def _phase(self, e) -> None:
        if self.progress is None:
            return
        if e.phase == "eval":
            if self.eval_task is None:
                self.eval_task = self.progress.add_task(
                    "eval", total=e.total, count="", info="windows", eta=""
                )
            # reset() replaces a task's fields: give it all of them
            count = f"0/{e.total:,}"
            self.progress.reset(
                self.eval_task, total=e.total, visible=True, count=count, info="windows", eta=""
            )
            self.progress.update(self.eval_task, description=f"eval at step {e.step}")
        else:
            self._done_eval()
            names = {"sample": "sampling", "checkpoint": "saving checkpoint"}
            if self._narrow():
                names["checkpoint"] = "checkpoint"
            what = names.get(e.phase, e.phase)
            self._advance(description=what)

    def _phase_progress(self, e) -> None:
        if self.progress is not None and self.eval_task is not None:
            count = f"{e.done:,}/{e.total:,}"
            self.progress.update(self.eval_task, completed=e.done, total=e.total, count=count)
            self._advance()

    def _done_eval(self) -> None:
        if self.progress is not None and self.eval_task is not None:
            self.progress.update(self.eval_task, visible=False)

    def _eval_done(self, e) -> None:
        r = e.record
        self._eval = f"{fmt_loss(r['train_loss'])}/{fmt_loss(r['val_loss'])}"
        self._val = fmt_loss(r["val_loss"])
        self._done_eval()
        used = self._budget_used() if self.max_time else None
        self._print(eval_line(r, self.iters, self.max_time, used))
        if self.progress is not None:
            self._advance()

    def _sample(self, e) -> None:
        if self.progress is not None:
            self._advance(description="train")

    def _estimate(self, e) -> None:
        self._eta_end = time.monotonic() + e.seconds
        if e.quiet:  # a refinement for the bar
            return
        what = f"{e.steps:,} more steps" if e.steps else "the budget"
        evals = f", evals {e.eval_seconds:.1f} s each" if e.eval_seconds else ""
        self._print(
            f"estimate: about {clock(e.seconds)} for {what} "
            f"({e.sec_per_step * 1000:.0f} ms/step{evals})"
        )
