"""What a training run reports while it runs: plain data classes, no torch, no I/O.

The Trainer sends these to its listeners in order: the CLI's display, and the recorder
that writes the run folder (toygpt_cli/recorder.py). A notebook can pass any callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainStarted:
    run: Any  # runs.Run, or None when training without a run folder
    step: int
    iters: int  # the step limit; 0 when only the time budget ends the run
    n_params: int
    device: str
    dtype: str
    resumed: bool
    max_time: float = 0.0  # this session's wall-clock budget in seconds (0: none)
    elapsed: float = 0.0  # wall seconds already spent on the run before this session
    last_eval: dict[str, Any] | None = None  # the latest metrics record, when resuming
    budget_used: float = 0.0  # seconds of max_time already used (a resumed, unspent budget)


@dataclass
class StepDone:
    step: int
    iters: int
    loss: Any  # a tensor still on the device: call .item() only when you display it
    lr: float
    elapsed: float  # wall seconds of the whole run so far
    steps_per_sec: float  # over the training steps since the last eval
    tokens_per_sec: float
    budget_elapsed: float = 0.0  # seconds of this session's budget used


@dataclass
class EstimateReady:
    """A projection of the session's wall time, made from its first timed steps."""

    seconds: float
    steps: int
    sec_per_step: float
    eval_seconds: float
    quiet: bool = False  # a refinement (after an eval): for the progress bar, not a new line


@dataclass
class PhaseStarted:
    """Something the user waits on between steps: 'eval', 'sample' or 'checkpoint'."""

    phase: str
    step: int
    total: int = 0  # units of work in the phase (eval windows), 0 when unknown


@dataclass
class PhaseProgress:
    phase: str
    done: int
    total: int


@dataclass
class EvalDone:
    record: dict[str, Any]  # the metrics.jsonl record
    improved: bool = False  # the val loss is the best so far


@dataclass
class SampleWritten:
    step: int
    seed: int
    text: str


@dataclass
class CheckpointSaved:
    step: int
    best: bool  # the best weights so far were saved too


@dataclass
class Notice:
    """A one-line message for the user (a shrunk eval, a skipped sample, ...)."""

    text: str


@dataclass
class TrainEnded:
    status: str  # completed | interrupted | failed
    step: int
    iters: int
    wall_seconds: float
    message: str | None = None


@dataclass
class TrainResult:
    status: str  # completed | interrupted
    step: int
    iters: int
    last_eval: dict[str, Any] | None
    best_val: float | None
    run: Any
    signal: int | None = None
    steps_this_session: int = 0

    @property
    def resume_command(self) -> str | None:
        if self.status != "interrupted" or self.run is None:
            return None
        return f"toygpt train --resume {self.run.path}"


Event = (
    TrainStarted
    | StepDone
    | EstimateReady
    | PhaseStarted
    | PhaseProgress
    | EvalDone
    | SampleWritten
    | CheckpointSaved
    | Notice
    | TrainEnded
)
Callback = Callable[[Any], None]
