"""What a resume does, decided by one pure function from what the run recorded and what
the user asked for. No files, no clocks: `plan_resume` is tested as a table of cases.

- Options follow their declared resume policy (config.py): a FIXED one must keep its value
  (refused naming both values), a CHANGE one takes its new value; `iters` is a new run's
  length, so a resume says how many more steps it takes with `steps`.
- Length: `steps` more; else an unfinished run finishes its plan (its remaining steps, or
  what is left of its time budget), and a finished one takes DEFAULT_RESUME_STEPS more.
- Time: `max_time` given is a new budget for this session (the schedule fits it; no step
  limit unless `steps` gives one). Without it an unfinished run keeps what is left of its
  budget; a finished one, or one given `steps` once its budget is spent, has none; an
  unfinished run whose budget is spent and that is given neither is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from toygpt_cli.config import FIXED, MAX_STEPS, STEPS, ModelConfig, TrainConfig, check, declared
from toygpt_cli.errors import OptionError, UsageError

DEFAULT_RESUME_STEPS = 5000


@dataclass(frozen=True)
class ResumePlan:
    train: TrainConfig  # this session's configuration: iters and max_time set
    budget_start: float  # the run's wall seconds at which this session's budget began
    changed: dict[str, list[Any]]  # option: [old, new], for what the user changed


def plan_resume(
    model: ModelConfig,
    train: TrainConfig,
    state: dict[str, Any],
    status: str | None,
    overrides: dict[str, Any],
    steps: int | None = None,
    run: str = "the run",
) -> ResumePlan:
    """The plan for resuming a run at `state` (its checkpoint's loop state: step,
    wall_seconds, budget_start) whose recorded status is `status`."""
    if steps is not None and steps <= 0:
        raise UsageError(f"--steps must be greater than 0, got {steps}")
    overrides = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    new = _apply_policies(model, train, overrides, run)
    cfg = dataclasses.replace(train, **new)
    step, wall = state["step"], state.get("wall_seconds", 0.0)
    budget_start = state.get("budget_start", 0.0)
    finished = status == "completed" or bool(train.iters and step >= train.iters)
    spent = wall - budget_start >= cfg.max_time
    if "max_time" in new:  # a budget of this session's own
        budget_start = wall
    elif finished or (steps is not None and spent):
        cfg = dataclasses.replace(cfg, max_time=0.0)
    elif cfg.max_time and spent:
        raise UsageError(
            f"run {run} has used up its {cfg.max_time:g} s budget; give --max-time for a "
            "new one, or --steps N"
        )
    if steps is not None:
        iters = step + steps
        if iters > MAX_STEPS:
            raise UsageError(f"run {run} is at step {step:,}: --steps {steps:,} would take it "
                             f"past step {MAX_STEPS:,}, the most a run counts")  # fmt: skip
    elif "max_time" in new and cfg.max_time:
        iters = 0
    elif finished or not (train.iters or cfg.max_time):
        iters = step + DEFAULT_RESUME_STEPS
    else:
        iters = train.iters
    if not cfg.max_time and not iters:
        iters = step + DEFAULT_RESUME_STEPS
    cfg = dataclasses.replace(cfg, iters=iters)
    cfg.validate()
    changed = {k: [getattr(train, k), v] for k, v in new.items() if getattr(train, k) != v}
    return ResumePlan(cfg, budget_start, changed)


def _apply_policies(model, train, overrides: dict[str, Any], run: str) -> dict[str, Any]:
    """The new values of the training options a resume may change; refusals otherwise."""
    new = {}
    for key, value in overrides.items():
        f = declared(key)
        opt = f.metadata["opt"]
        if opt.resume == STEPS:
            raise OptionError(
                f"iters is the length of a new run; to continue {run}, say how many more "
                "steps to take (--steps)",
                key,
            )
        value = check(f, value)  # the same checks (and type coercion) as for a new run
        old = getattr(model if hasattr(model, key) else train, key)
        if opt.resume == FIXED:
            if value != old:
                raise OptionError(
                    f"cannot resume {run} with {key} {value}: it is {old} in the run, "
                    f"and {key} is fixed for the life of a run",
                    key,
                )
            continue
        new[key] = value
    return new
