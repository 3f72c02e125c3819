"""budget.py: the time budget's decisions, from what steps and evals were measured to cost."""

import pytest

from toygpt_cli.budget import Budget
from toygpt_cli.config import TrainConfig


def _measured(max_time=60.0, used=0.0, step=0.1, eval_cost=2.0):
    budget = Budget(max_time)
    budget._t0 -= used  # as if `used` seconds had passed
    budget.step_took(step)
    budget.eval_took(eval_cost, 500)
    return budget


def test_without_a_budget_nothing_stops_and_progress_is_by_steps():
    budget, cfg = Budget(0.0), TrainConfig(iters=1000, warmup_iters=100)
    assert not budget.must_stop()
    assert budget.progress(550, cfg) == pytest.approx(0.5)
    assert budget.affordable_windows(6400, 64) == 6400


def test_it_stops_when_one_more_step_and_the_final_eval_would_not_fit():
    assert not _measured(used=57.0, step=0.1, eval_cost=2.0).must_stop()  # 59.1 < 60
    assert _measured(used=58.0, step=0.1, eval_cost=2.0).must_stop()  # 60.1 >= 60


def test_an_eval_may_take_a_tenth_of_the_budget_but_never_less_than_a_chunk():
    budget = _measured(max_time=60.0, eval_cost=10.0)  # 10 s for 2 x 500 windows
    assert budget.affordable_windows(6400, 64) == 300  # 6 s / (10 s / 1000 windows)
    assert _measured(max_time=1.0, eval_cost=10.0).affordable_windows(6400, 64) == 64
    assert _measured(max_time=3600.0, eval_cost=1.0).affordable_windows(6400, 64) == 6400


def test_the_schedule_follows_the_clock_under_a_budget():
    budget, cfg = _measured(max_time=100.0, used=25.0), TrainConfig(iters=0, max_time=100.0)
    assert budget.progress(10, cfg) == pytest.approx(0.25, abs=0.01)
    assert budget.progress(10, cfg, used=50.0) == 0.5  # the clock all ranks agreed on


def test_samples_stop_once_one_costs_over_five_percent():
    budget = Budget(10.0)
    assert not budget.sample_took(0.4) and budget.sample_allowed(False)
    assert budget.sample_took(0.6) and not budget.sample_allowed(False)
    assert not budget.sample_took(0.6)  # said once


def test_the_estimate_counts_the_evals_left():
    budget, cfg = Budget(0.0), TrainConfig(iters=1000, eval_interval=300)
    budget.step_took(0.5)
    budget.eval_took(4.0, 100)
    seconds, steps, per_step, per_eval = budget.estimate(100, cfg)
    assert steps == 900 and per_step == 0.5 and per_eval == 4.0
    assert seconds == pytest.approx(900 * 0.5 + 4 * 4.0)  # evals at 300, 600, 900 and 1000


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_untimed_eval_is_guessed_from_the_step_and_shared_among_processes(world_size):
    # a resume far from its next eval: no eval timed yet; 320 windows a split, batches of
    # 8 on each process, a step of 0.3 s: an eval window costs a third of a training one
    budget = Budget(0.0, world_size=world_size)
    cfg = TrainConfig(iters=1000, eval_interval=300, batch_size=8)
    budget.eval_windows = 320
    budget.step_took(0.3)
    per_eval = budget.estimate(100, cfg)[3]
    assert per_eval == pytest.approx(2 * 320 / (8 * world_size) * 0.3 / 3)
