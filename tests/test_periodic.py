"""periodic.py: every eval of a run scores the same windows, a budget decides their number
once, the first eval of a new run is quick, and a stop request abandons an eval."""

import signal

import pytest
import torch

from toygpt_cli.budget import Budget
from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.evaluate import fixed_windows
from toygpt_cli.events import Notice, PhaseProgress
from toygpt_cli.model import GPT
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.periodic import EVAL_CHUNK, FIRST_EVAL_WINDOWS, PeriodicEval
from toygpt_cli.stopping import StopSwitch
from toygpt_cli.train import EvalStopped, LoopState


def _evals(cfg, events=None, stop=None):
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, block_size=8, n_embd=16, n_layer=1, n_head=2))
    data = {"train": torch.randint(20, (5_000,), dtype=torch.uint8),
            "val": torch.randint(20, (1_000,), dtype=torch.uint8)}  # fmt: skip
    emit = events.append if events is not None else lambda e: None
    return PeriodicEval(model, data, 8, cfg, "float32", None, emit, Distributed.single(),
                        stop or StopSwitch())  # fmt: skip


def test_windows_are_a_fixed_prefix_from_their_own_seeds():
    evals = _evals(TrainConfig(eval_iters=4, batch_size=8, seed=5))
    assert torch.equal(evals.windows("val", 10), fixed_windows(1_000, 10, 8, 7))
    assert torch.equal(evals.windows("train", 32)[:10], evals.windows("train", 10))


def test_the_count_is_decided_once_and_kept():
    state = LoopState()
    evals = _evals(TrainConfig(eval_iters=4, batch_size=8))
    assert evals.size(Budget(0.0), state) == 32 and state.eval_windows == 32
    state.last_eval_step = 10
    _, count = evals.losses(20, Budget(0.0), state)
    assert count == 32
    other = _evals(TrainConfig(eval_iters=4, batch_size=64))  # a resume with another batch
    assert other.size(Budget(0.0), state) == 32  # the run's count wins


def test_a_budget_cuts_the_count_once_and_says_so():
    events, state = [], LoopState()
    evals = _evals(TrainConfig(eval_iters=200, batch_size=32, max_time=1.0), events)
    budget = Budget(1.0)
    budget.eval_took(1.0, 100)  # 5 ms a window: a tenth of the budget is 10 windows a split
    assert evals.size(budget, state) == EVAL_CHUNK  # never less than a chunk
    assert any(isinstance(e, Notice) and "evals cut to 64 of 6400" in e.text for e in events)


def test_the_first_eval_of_a_new_run_is_quick():
    state = LoopState()
    evals = _evals(TrainConfig(eval_iters=100, batch_size=16))
    _, count = evals.losses(0, Budget(0.0), state)
    assert count == FIRST_EVAL_WINDOWS and state.eval_windows == 1600
    state.last_eval_step = 0  # a resumed run at step 0 has had its first eval
    assert evals.losses(0, Budget(0.0), state)[1] == 1600


def test_a_stop_request_abandons_an_eval_between_chunks():
    stop, events = StopSwitch(), []

    def listen(e):
        events.append(e)
        if isinstance(e, PhaseProgress) and e.done >= 2 * EVAL_CHUNK:
            stop.request(signal.SIGINT)

    evals = _evals(TrainConfig(eval_iters=16, batch_size=32), stop=stop)
    evals.emit = listen
    state = LoopState(last_eval_step=0)
    with pytest.raises(EvalStopped):
        evals.losses(10, Budget(0.0), state)
    assert max(e.done for e in events if isinstance(e, PhaseProgress)) == 2 * EVAL_CHUNK
