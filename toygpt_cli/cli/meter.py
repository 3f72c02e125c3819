"""Progress of long passes (reading a corpus, scoring a split) as the core library reports
them through a `(label, done, total)` callback: a rich bar on a terminal, plain lines
elsewhere."""

from __future__ import annotations

import time

from toygpt_cli.cli.common import err

PLAIN_EVERY = 10.0  # seconds between plain progress lines


class Meter:
    """A `(label, done, total)` callback; use as a context manager around the work.

    On a terminal each label gets a bar that disappears when the work ends. Elsewhere a
    label's progress is printed at most every PLAIN_EVERY seconds, so short work prints
    nothing and long work shows it is alive.
    """

    def __init__(self, fancy: bool, unit: str = "", *, plain_done: bool = False):
        self.fancy = fancy
        self.unit = unit
        self.plain_done = plain_done  # also print a line when a label's work ends
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}

    def __enter__(self):
        if self.fancy:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("<"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(label, now)
        if self.progress is not None:
            if label not in self.tasks:
                self.tasks[label] = self.progress.add_task(label, total=total)
            self.progress.update(self.tasks[label], completed=done, total=total)
            return
        finished = done >= total
        if finished and self.plain_done:
            self._line(label, done, total, now - start)
        elif not finished and now - self.last_line.get(label, start) >= PLAIN_EVERY:
            self.last_line[label] = now
            self._line(label, done, total, now - start)

    def _line(self, label: str, done: int, total: int, elapsed: float) -> None:
        pct = 100 * done / total if total else 100.0
        unit = f" {self.unit}" if self.unit else ""
        err.print(
            f"{label}: {done:,}/{total:,}{unit} ({pct:.0f}%) in {elapsed:.1f} s", highlight=False
        )
