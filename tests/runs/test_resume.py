"""runs/resume.py: what a resume does, as a table of cases (no files, no clocks)."""

import pytest

from toygpt_cli.config import FIXED, ModelConfig, TrainConfig, declared_fields
from toygpt_cli.errors import OptionError, UsageError
from toygpt_cli.runs.resume import DEFAULT_RESUME_STEPS, plan_resume

STEPS_RUN = TrainConfig(iters=1000)
BUDGET_RUN = TrainConfig(iters=0, max_time=60.0, lr_schedule="cosine")


def _state(step, wall=0.0, budget_start=0.0):
    return {"step": step, "wall_seconds": wall, "budget_start": budget_start}


# (what, run's config, its state, recorded status, overrides, --steps) ->
# (iters, max_time, budget_start)
CASES = [
    ("unfinished step run finishes its plan",
     STEPS_RUN, _state(400), "interrupted", {}, None, (1000, 0.0, 0.0)),
    ("finished step run takes 5000 more",
     STEPS_RUN, _state(1000), "completed", {}, None, (1000 + DEFAULT_RESUME_STEPS, 0.0, 0.0)),
    ("--steps N on an unfinished run",
     STEPS_RUN, _state(400), "interrupted", {}, 50, (450, 0.0, 0.0)),
    ("unfinished budget run keeps what is left of it",
     BUDGET_RUN, _state(300, wall=20.0), "interrupted", {}, None, (0, 60.0, 0.0)),
    ("finished budget run has no budget left",
     BUDGET_RUN, _state(900, wall=61.0), "completed", {}, None,
     (900 + DEFAULT_RESUME_STEPS, 0.0, 0.0)),
    ("spent budget with --steps: those steps, no budget",
     BUDGET_RUN, _state(900, wall=61.0), "interrupted", {}, 5, (905, 0.0, 0.0)),
    ("--max-time: a new budget from now, no step limit",
     BUDGET_RUN, _state(900, wall=61.0), "completed", {"max_time": 30.0}, None, (0, 30.0, 61.0)),
    ("--max-time with --steps: both",
     STEPS_RUN, _state(400, wall=10.0), "interrupted", {"max_time": "30s"}, 20, (420, 30.0, 10.0)),
    ("--max-time 0 --steps N on a budget run: steps only",
     BUDGET_RUN, _state(300, wall=20.0), "interrupted", {"max_time": 0}, 10, (310, 0.0, 20.0)),
    ("--max-time 0 alone on a budget run: 5000 more",
     BUDGET_RUN, _state(300, wall=20.0), "interrupted", {"max_time": 0}, None,
     (300 + DEFAULT_RESUME_STEPS, 0.0, 20.0)),
    ("a second budget session resumes the rest of it",
     BUDGET_RUN, _state(300, wall=80.0, budget_start=61.0), "interrupted", {}, None,
     (0, 60.0, 61.0)),
]  # fmt: skip


@pytest.mark.parametrize(("what", "train", "state", "status", "overrides", "steps", "expected"),
                         CASES, ids=[c[0] for c in CASES])  # fmt: skip
def test_plan(what, train, state, status, overrides, steps, expected):
    plan = plan_resume(ModelConfig(), train, state, status, overrides, steps)
    assert (plan.train.iters, plan.train.max_time, plan.budget_start) == expected


ERRORS = [
    ("spent budget, nothing asked", BUDGET_RUN, _state(300, wall=61.0), "interrupted", {}, None,
     UsageError, "used up its 60 s budget; give --max-time for a new one, or --steps N"),
    ("--iters is a new run's length", STEPS_RUN, _state(10), "interrupted", {"iters": 5}, None,
     OptionError, "iters is the length of a new run"),
    ("a fixed option", STEPS_RUN, _state(10), "interrupted", {"seed": 1}, None,
     OptionError, "cannot resume the run with seed 1: it is 1337 in the run"),
    ("an architecture option", STEPS_RUN, _state(10), "interrupted", {"n_layer": 3}, None,
     OptionError, "n_layer is fixed for the life of a run"),
    ("a bad value", STEPS_RUN, _state(10), "interrupted", {"learning_rate": -1.0}, None,
     OptionError, "learning_rate must be greater than 0"),
    ("steps of 0", STEPS_RUN, _state(10), "interrupted", {}, 0,
     UsageError, "--steps must be greater than 0"),
    ("an unknown option", STEPS_RUN, _state(10), "interrupted", {"n_layers": 2}, None,
     UsageError, "unknown option 'n_layers'"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "train", "state", "status", "overrides", "steps", "error",
                          "message"), ERRORS, ids=[e[0] for e in ERRORS])  # fmt: skip
def test_refusals(what, train, state, status, overrides, steps, error, message):
    with pytest.raises(error, match=message):
        plan_resume(ModelConfig(), train, state, status, overrides, steps)


def test_changes_are_reported_and_a_kept_fixed_value_is_fine():
    plan = plan_resume(ModelConfig(), STEPS_RUN, _state(10), "interrupted",
                       {"seed": 1337, "weight_decay": 0.0, "n_layer": 4}, None)  # fmt: skip
    assert plan.train.weight_decay == 0.0 and plan.changed == {"weight_decay": [0.01, 0.0]}


def test_every_option_has_a_resume_policy_and_the_run_defining_ones_are_fixed():
    fixed = {f.name for _, f, opt in declared_fields() if opt.resume == FIXED and opt.cli}
    assert {"seed", "val_fraction", "n_layer", "block_size", "optimizer", "eval_iters"} <= fixed
    assert not {"learning_rate", "batch_size", "max_time", "device"} & fixed
