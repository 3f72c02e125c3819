"""train.py: the Trainer's step and loop, its state_dict (exact resume), the stop switch
(Ctrl-C at a step, during an eval, a second one while a checkpoint is written), time
budgets, divergence, and each rank's own dropout."""

import io
import math
import signal
from dataclasses import replace

import pytest
import torch

from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.corpus import corpus_from_text
from toygpt_cli.events import CheckpointSaved, EvalDone, Notice, PhaseProgress, StepDone
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.stopping import StepAbandoned, StopSwitch
from toygpt_cli.train import BudgetTooSmall, Diverged, EvalStopped, Trainer


@pytest.fixture
def corpus(tiny_text):
    return corpus_from_text(tiny_text)


def _model_cfg(corpus, **kw):
    return ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=16, n_embd=32,
                       n_layer=2, n_head=4, dropout=0.1, **kw)  # fmt: skip


def _cfg(**kw):
    return TrainConfig(**{"iters": 40, "eval_interval": 20, "eval_iters": 2, "batch_size": 8,
                          "sample_chars": 0, "dtype": "float32", **kw})  # fmt: skip


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)  # as a checkpoint file would hold it
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.slow  # a long training
def test_training_lowers_the_loss(corpus):
    records = []
    cfg = _cfg(iters=300, eval_interval=150, eval_iters=8, batch_size=32)
    trainer = Trainer(
        _model_cfg(corpus),
        cfg,
        corpus,
        listeners=[lambda e: records.append(e) if isinstance(e, EvalDone) else None],
    )
    result = trainer.run()
    losses = [e.record["val_loss"] for e in records]
    assert result.status == "completed" and result.step == 300 and len(losses) == 3
    assert losses[0] > 3.5  # about ln(vocab) at the start
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize(
    "optimizer, order, ema",
    [("adamw", "random", 0.0), ("muon", "random", 0.0), ("adamw", "epochs", 0.0),
     ("muon", "random", 0.9)],
)  # fmt: skip
@pytest.mark.parametrize("arch", ["gpt2", "modern"])  # modern: its own dropout masks
def test_state_dict_resumes_exactly(corpus, optimizer, order, ema, arch):
    model_cfg = _model_cfg(corpus, arch=arch)
    cfg = _cfg(optimizer=optimizer, data_order=order, ema=ema)
    straight = Trainer(model_cfg, cfg, corpus)
    for _ in range(25):
        straight.train_step()
    first = Trainer(model_cfg, cfg, corpus)
    for _ in range(10):
        first.train_step()
    state = _round_trip(first.state_dict())
    torch.manual_seed(999)  # whatever happened since: the state carries every stream
    second = Trainer(model_cfg, cfg, corpus)
    second.load_state_dict(state)
    for _ in range(15):
        second.train_step()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    assert second.state.step == 25
    if ema:  # the average too
        assert set(second.average) == set(straight.average)
        for name, tensor in straight.average.items():
            assert torch.equal(tensor, second.average[name]), name


def test_ema_averages_the_weights_each_step_and_checkpoints_hold_both(corpus):
    trainer = Trainer(_model_cfg(corpus), _cfg(ema=0.5), corpus)
    seen = []
    for _ in range(4):
        trainer.train_step()
        seen.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for name in seen[0]:
        if not seen[0][name].is_floating_point():
            continue
        expected = seen[0][name]  # the average starts at the weights after the first step
        for step, weights in enumerate(seen[1:], start=2):
            decay = min(0.5, (1 + step) / (10 + step))  # smaller at first
            expected = decay * expected + (1 - decay) * weights[name]
        assert torch.allclose(trainer.average[name], expected, atol=1e-6), name
    state = trainer.state_dict()
    assert state["model"] is trainer.average  # what evals and every reader use
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(state["live"][name], tensor)  # what training continues from
    assert not torch.equal(state["model"]["lm_head.weight"], state["live"]["lm_head.weight"])


def _val_loss(trainer, weights):
    trainer.model.load_state_dict(weights)
    return trainer.evals._split_loss("val", trainer.state.eval_windows, 0)


def test_ema_evals_score_the_average_and_leave_the_training_weights(corpus):
    records = {True: [], False: []}
    cfg = _cfg(iters=60, eval_interval=30, ema=0.95, learning_rate=3e-3)
    runs = {}
    for ema in (True, False):
        listen = [lambda e, r=records[ema]: r.append(e.record) if isinstance(e, EvalDone) else 0]
        runs[ema] = Trainer(_model_cfg(corpus), cfg if ema else replace(cfg, ema=0.0), corpus,
                            listeners=listen)  # fmt: skip
        runs[ema].run()
    averaged, plain = runs[True], runs[False]
    for name, tensor in plain.model.state_dict().items():  # training itself is unchanged
        assert torch.equal(tensor, averaged.model.state_dict()[name]), name
    live = {k: v.clone() for k, v in averaged.model.state_dict().items()}
    assert records[False][-1]["val_loss"] == round(_val_loss(averaged, live), 5)
    assert records[True][-1]["val_loss"] == round(_val_loss(averaged, averaged.average), 5)
    assert records[True][-1]["val_loss"] != records[False][-1]["val_loss"]


def test_a_stop_during_an_eval_with_ema_saves_the_training_weights_to_resume(corpus):
    saved = []
    trainer = Trainer(_model_cfg(corpus), _cfg(ema=0.9), corpus,
                      checkpoints=lambda state, step, best: saved.append(state))  # fmt: skip
    for _ in range(25):
        trainer.train_step()
    live = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def stopped_midway(*args):  # the model holds the average now: a Ctrl-C arrives
        assert not torch.equal(trainer.model.lm_head.weight, live["lm_head.weight"])
        trainer.request_stop()
        raise EvalStopped

    trainer.evals.losses = stopped_midway
    trainer.state.last_eval_step = 0
    trainer.cfg = replace(trainer.cfg, eval_interval=5)  # an eval is due now
    result = trainer.run()
    assert result.status == "interrupted"
    for name, tensor in live.items():
        assert torch.equal(saved[-1]["live"][name], tensor), name
        assert torch.equal(trainer.model.state_dict()[name], tensor), name


def test_a_resume_without_ema_continues_from_the_training_weights(corpus):
    model_cfg = _model_cfg(corpus)
    first = Trainer(model_cfg, _cfg(ema=0.5), corpus)
    for _ in range(5):
        first.train_step()
    state = _round_trip(first.state_dict())
    second = Trainer(model_cfg, _cfg(), corpus)
    second.load_state_dict(state)
    assert second.average is None
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    second.train_step()
    assert "live" not in second.state_dict()


def test_the_loop_saves_checkpoints_through_the_call_it_was_given(corpus):
    saved = []
    trainer = Trainer(
        _model_cfg(corpus),
        _cfg(),
        corpus,
        checkpoints=lambda state, step, best: saved.append((step, best, state)),
    )
    trainer.run()
    assert [(s, b) for s, b, _ in saved] == [(0, True), (20, True), (40, True)]
    assert saved[-1][2]["state"]["step"] == 40 and "optimizer" in saved[-1][2]


def test_a_first_ctrl_c_stops_after_the_step_with_a_checkpoint(corpus):
    told, saved = [], []
    stop = StopSwitch(on_first=told.append)

    def listen(e):
        if isinstance(e, StepDone) and e.step == 5:
            stop.request(signal.SIGINT)

    trainer = Trainer(_model_cfg(corpus), _cfg(iters=1000), corpus, listeners=[listen],
                      checkpoints=lambda *a: saved.append(a[1]), stop=stop)  # fmt: skip
    result = trainer.run()
    assert told == [signal.SIGINT]  # said at once, from the handler
    assert result.status == "interrupted" and result.step == 5 and saved[-1] == 5
    assert result.signal == signal.SIGINT


def test_ctrl_c_during_an_eval_abandons_it_within_a_chunk(corpus):
    stop, chunks = StopSwitch(), []

    def listen(e):
        if isinstance(e, PhaseProgress):
            chunks.append(e.done)
            if len(chunks) == 2:
                stop.request(signal.SIGINT)

    notices = []
    trainer = Trainer(
        _model_cfg(corpus), _cfg(iters=1000, eval_iters=64), corpus, stop=stop,
        listeners=[listen, lambda e: notices.append(e.text) if isinstance(e, Notice) else None],
    )  # fmt: skip
    trainer.state.last_eval_step = 0  # past the quick first eval: a full one is due at step 20
    trainer.state.step = 20
    result = trainer.run()
    assert result.status == "interrupted" and result.step == 20
    assert len(chunks) == 2  # the third chunk was never scored
    assert any("abandoned" in n for n in notices)
    assert trainer.state.last_eval_step == 0  # a resume redoes the eval


def test_a_second_request_while_a_checkpoint_is_written_waits_for_it(corpus):
    stop, written = StopSwitch(), []

    def write(state, step, best):
        if step == 3:
            stop.request(signal.SIGINT)  # the second request, mid-write: deferred
        written.append(step)

    def listen(e):
        if isinstance(e, StepDone) and e.step == 3:
            stop.request(signal.SIGINT)

    trainer = Trainer(_model_cfg(corpus), _cfg(iters=1000), corpus, listeners=[listen],
                      checkpoints=write, stop=stop)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert written[-1] == 3  # the checkpoint was written in full before stopping


def test_signals_reach_the_switch_and_are_restored_after(corpus):
    stop = StopSwitch()
    before = signal.getsignal(signal.SIGTERM)
    with stop.on_signals():
        signal.raise_signal(signal.SIGHUP)  # a closed terminal stops like SIGTERM
    assert stop.signal == signal.SIGHUP and signal.getsignal(signal.SIGTERM) is before


def test_a_budget_ends_the_run_in_time_with_a_final_eval(corpus):
    evals = []
    cfg = _cfg(iters=0, max_time=2.0, eval_interval=50, lr_schedule="cosine")
    trainer = Trainer(_model_cfg(corpus), cfg, corpus,
                      listeners=[lambda e: evals.append(e.record) if isinstance(e, EvalDone)
                                 else None])  # fmt: skip
    result = trainer.run()
    assert result.status == "completed" and result.step > 0
    assert evals[-1]["step"] == result.step and evals[-1]["elapsed"] < 2.5
    assert result.iters == result.step  # a budget-only run is complete where it ended


def test_a_budget_too_small_for_its_evals_is_refused_before_any_step(corpus, monkeypatch):
    from toygpt_cli.periodic import PeriodicEval

    probe = PeriodicEval.probe

    def slow_machine(self, budget, state):  # as if an eval took 4 s here
        probe(self, budget, state)
        budget.eval_cost = 4.0

    monkeypatch.setattr(PeriodicEval, "probe", slow_machine)
    steps = []
    trainer = Trainer(
        _model_cfg(corpus),
        _cfg(iters=0, max_time=5.0),
        corpus,
        listeners=[lambda e: steps.append(e) if isinstance(e, StepDone) else None],
    )
    with pytest.raises(BudgetTooSmall, match=r"--max-time 5s is too small here: an eval") as info:
        trainer.run()
    assert not steps and info.value.fresh
    assert "give --max-time 18s or more" in str(info.value)


def test_a_budget_too_small_for_one_step_is_refused_before_any(corpus, monkeypatch):
    """Cheap evals, costly steps (a big batch): the probe's rate tells what a step costs."""
    from toygpt_cli.periodic import PeriodicEval

    probe = PeriodicEval.probe

    def big_steps(self, budget, state):  # evals cheap, a window's forward 0.2 s
        probe(self, budget, state)
        budget.eval_cost, budget.eval_rate = 0.1, 0.2

    monkeypatch.setattr(PeriodicEval, "probe", big_steps)
    trainer = Trainer(_model_cfg(corpus), _cfg(iters=0, max_time=5.0), corpus)
    with pytest.raises(BudgetTooSmall, match=r"a step about \d+\.\d s") as info:
        trainer.run()
    assert info.value.fresh


@pytest.mark.parametrize("processes", [1, 2])
def test_the_eval_probe_counts_an_eval_shared_among_processes(corpus, monkeypatch, processes):
    """Each process times the probe's 64 windows alone (here 0.64 s); an eval shares its
    windows among the processes, so a window costs the run 1/processes of that."""
    from types import SimpleNamespace

    from toygpt_cli import periodic
    from toygpt_cli.budget import Budget

    dist = SimpleNamespace(world_size=processes, rank=0, is_main=True, min=lambda v: v)
    train, val = corpus.splits()
    evals = periodic.PeriodicEval(None, {"train": train, "val": val}, 16, _cfg(max_time=600.0),
                                  "float32", None, lambda e: None, dist, None)  # fmt: skip
    budget, state = Budget(600.0), SimpleNamespace(eval_windows=None)
    clock = iter([10.0, 10.64])  # the probe's timed pass: 0.64 s
    monkeypatch.setattr(periodic.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(periodic.PeriodicEval, "_loss", lambda self, split, starts: 0.0)
    evals.probe(budget, state)
    assert budget.eval_rate == pytest.approx(0.64 / 64 / processes)
    assert state.eval_windows == 2 * 8 * processes  # eval_iters batches of every process's


def test_a_budget_schedule_follows_the_clock_all_ranks_agree_on(corpus, monkeypatch):
    # As if the slowest rank were always halfway through the budget: every step's rate is
    # the cosine's midpoint, whatever this process's own clock says.
    monkeypatch.setattr(Distributed, "max", lambda self, value: 30.0)
    cfg = _cfg(iters=10_000, eval_interval=50, max_time=60.0, lr_schedule="cosine",
               learning_rate=1.0, min_lr=0.0)  # fmt: skip
    rates, stop = [], StopSwitch()

    def listen(e):
        if isinstance(e, StepDone):
            rates.append(e.lr)
            if e.step == 20:
                stop.request()

    Trainer(_model_cfg(corpus), cfg, corpus, listeners=[listen], stop=stop).run()
    assert len(rates) == 20 and rates == pytest.approx([0.5] * 20)


def test_divergence_stops_with_one_line_and_the_last_good_step(corpus):
    cfg = _cfg(iters=40, eval_interval=10, learning_rate=1e30)
    saved = []
    trainer = Trainer(
        _model_cfg(corpus), cfg, corpus, checkpoints=lambda s, step, b: saved.append(_round_trip(s))
    )
    with pytest.raises(Diverged, match="training diverged.*last good checkpoint"):
        trainer.run()
    assert all(torch.isfinite(t).all() for t in saved[-1]["model"].values())


def test_the_first_eval_of_a_new_run_is_quick_and_never_the_best(corpus):
    records = []
    cfg = _cfg(iters=20, eval_interval=10, eval_iters=100, batch_size=8)  # 800 windows
    Trainer(
        _model_cfg(corpus),
        cfg,
        corpus,
        listeners=[lambda e: records.append(e) if isinstance(e, EvalDone) else None],
    ).run()
    first, later = records[0], records[1:]
    assert first.record["eval_windows"] == 512 and not first.improved
    assert all("eval_windows" not in e.record for e in later) and later[0].improved


def test_a_rank_other_than_0_draws_its_own_dropout(corpus, monkeypatch):
    monkeypatch.setattr(Distributed, "wrap", lambda self, model: model)  # no process group
    model_cfg, cfg = _model_cfg(corpus, attn_dropout=True), _cfg()
    masks = []
    for rank in (0, 1):
        trainer = Trainer(model_cfg, cfg, corpus, dist=Distributed(rank=rank, world_size=2))
        layer = trainer.model.blocks[0].attn.resid_drop
        masks.append(layer(torch.ones(64, 64)) == 0)
        weights = trainer.model.state_dict()
        if rank == 0:
            first = weights
    assert not torch.equal(masks[0], masks[1])  # different dropout noise
    for name, tensor in first.items():  # the same initial weights
        assert torch.equal(tensor, weights[name]), name


def test_rank_0_of_several_draws_what_a_single_process_draws(corpus, monkeypatch):
    monkeypatch.setattr(Distributed, "wrap", lambda self, model: model)
    a = Trainer(_model_cfg(corpus), _cfg(), corpus)
    a_rng = torch.get_rng_state()
    b = Trainer(_model_cfg(corpus), _cfg(), corpus, dist=Distributed(rank=0, world_size=2))
    assert torch.equal(a.batch_gen.get_state(), b.batch_gen.get_state())
    assert torch.equal(a_rng, torch.get_rng_state())


def test_checkpoint_saved_events_follow_each_save(corpus):
    events = []
    Trainer(_model_cfg(corpus), _cfg(iters=20), corpus, listeners=[events.append],
            checkpoints=lambda *a: None).run()  # fmt: skip
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.step for e in saved] == [0, 20] and math.isfinite(saved[0].step)


def test_a_stopped_eval_leaves_the_model_in_training_mode_for_the_next_session(corpus):
    trainer = Trainer(_model_cfg(corpus), replace(_cfg(), iters=1), corpus)
    trainer.run()
    assert trainer.model.training


def test_epoch_order_batches_are_the_epoch_sequence_and_random_ones_are_not(corpus):
    from toygpt_cli.data import epoch_starts

    trainer = Trainer(_model_cfg(corpus), _cfg(data_order="epochs"), corpus)
    train = trainer.data["train"]
    trainer.state.windows_taken = 3 * 8  # as after 3 steps
    x, _ = trainer.batch()
    starts = epoch_starts(len(train), 16, 3 * 8, 8, seed=1337)
    assert torch.equal(x[:, 0], train[starts].long())
    for _ in range(3):  # the sequence goes on where the windows taken so far end
        trainer.train_step()
    trainer.cfg = _cfg(data_order="epochs", batch_size=5)  # (a resume may change it)
    starts = epoch_starts(len(train), 16, 3 * 8 + 3 * 8, 5, seed=1337)
    assert torch.equal(trainer.batch()[0][:, 0], train[starts].long())
    random = Trainer(_model_cfg(corpus), _cfg(), corpus)
    random.state.step = 3
    assert not torch.equal(random.batch()[0], x)


def test_the_process_group_wrapper_is_let_go_when_the_run_ends(corpus):
    """The wrapper (DistributedDataParallel under --nproc) holds the process group: left
    alive until the interpreter exits, gloo's threads can abort the process there."""
    import gc
    import weakref

    class Wrapper(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(*args)

    made = []

    class Wrapping(Distributed):
        def wrap(self, model):
            made.append(Wrapper(model))
            return made[-1]

    trainer = Trainer(_model_cfg(corpus), _cfg(iters=2), corpus, dist=Wrapping())
    gone = weakref.ref(made.pop())
    assert trainer.step_model is gone()  # the steps go through it
    trainer.run()
    gc.collect()
    assert gone() is None and trainer.step_model is trainer.model


class _FakeCompiled:
    """What torch.compile returns, standing in for it: the model, except that its first
    call does `first` (raise as a compiler would, or meet a stop request) after drawing from
    the random streams, as a real first step does before it fails or is stopped."""

    def __init__(self, model, first):
        self.model, self.first, self.calls = model, first, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            torch.rand(3)  # the dropout stream moved
            self.first()
        return self.model(*args)


def _compiling(monkeypatch, first):
    made = []

    def fake_compile(model, mode=None):
        made.append(_FakeCompiled(model, first))
        return made[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    return made


def _weights_after(trainer, steps):
    for _ in range(steps):
        trainer.train_step()
    return trainer.model.state_dict()


def test_a_compiler_that_fails_leaves_a_note_and_the_same_training_uncompiled(corpus, monkeypatch):
    def fail():
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore text")

    made = _compiling(monkeypatch, fail)
    notes = []
    model_cfg = _model_cfg(corpus, arch="modern")
    note = lambda e: isinstance(e, Notice) and notes.append(e.text)  # noqa: E731
    compiled = Trainer(model_cfg, _cfg(compile=True), corpus, listeners=[note])
    got = _weights_after(compiled, 4)  # each trainer seeds the global stream when made
    want = _weights_after(Trainer(model_cfg, _cfg(), corpus), 4)
    assert notes == ["--compile failed here, training without it: InvalidCxxCompiler: No "
                     "working C++ compiler found"]  # fmt: skip
    assert made[0].calls == 1 and compiled.step_model is compiled.eager_step_model
    for name, tensor in want.items():  # the failed step's batch and dropout drawn again
        assert torch.equal(tensor, got[name]), name


def test_a_model_that_fails_uncompiled_too_raises_its_own_error_without_the_note(
    corpus, monkeypatch
):
    def broken(*args):
        raise ValueError("the model's own error")

    _compiling(monkeypatch, lambda: broken())
    notes = []
    note = lambda e: isinstance(e, Notice) and notes.append(e.text)  # noqa: E731
    trainer = Trainer(_model_cfg(corpus), _cfg(compile=True), corpus, listeners=[note])
    monkeypatch.setattr(trainer, "eager_step_model", broken)
    with pytest.raises(ValueError, match="the model's own error"):
        trainer.train_step()
    assert notes == []  # not blamed on the compiler


def test_a_compile_refused_at_once_leaves_the_same_note_and_trains_uncompiled(corpus, monkeypatch):
    def refuse(model, mode=None):
        raise RuntimeError("Dynamo is not supported on Python 3.13+")

    monkeypatch.setattr(torch, "compile", refuse)
    notes = []
    note = lambda e: isinstance(e, Notice) and notes.append(e.text)  # noqa: E731
    trainer = Trainer(_model_cfg(corpus), _cfg(compile=True, iters=3), corpus, listeners=[note])
    assert trainer.run().status == "completed"
    assert notes == ["--compile failed here, training without it: Dynamo is not supported on "
                     "Python 3.13+"]  # fmt: skip


def test_a_stop_while_compiling_the_backward_prints_no_traceback(corpus, monkeypatch):
    """torch traces a compiled backward in anomaly mode: a stop there makes it warn with the
    forward's traceback, which the user is not shown."""
    import warnings

    stop = StopSwitch()

    def interrupted_in_the_backward():
        warnings.warn("Error detected in MulBackward0. Traceback of forward call", stacklevel=1)
        stop.request(signal.SIGINT)

    _compiling(monkeypatch, interrupted_in_the_backward)
    trainer = Trainer(_model_cfg(corpus, arch="modern"), _cfg(compile=True), corpus, stop=stop)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(StepAbandoned), stop.on_signals([]):
            trainer.train_step()
    assert [str(w.message) for w in shown] == []


def test_a_stop_while_the_first_step_compiles_abandons_it_and_resumes_exactly(corpus, monkeypatch):
    stop, saved, notes = StopSwitch(), [], []
    _compiling(monkeypatch, lambda: stop.request(signal.SIGINT))  # mid-step, as a handler
    model_cfg, cfg = _model_cfg(corpus, arch="modern"), _cfg(iters=1000, compile=True)
    trainer = Trainer(
        model_cfg, cfg, corpus, stop=stop, checkpoints=lambda state, *a: saved.append(state),
        listeners=[lambda e: isinstance(e, Notice) and notes.append(e.text)],
    )  # fmt: skip
    result = trainer.run()
    assert result.status == "interrupted" and result.step == 0
    assert notes == ["step 1 abandoned while compiling: stopping"]
    # each trainer draws from the global stream: one after the other
    want = _weights_after(Trainer(model_cfg, _cfg(), corpus), 3)
    resumed = Trainer(model_cfg, _cfg(), corpus)
    resumed.load_state_dict(_round_trip(saved[-1]))
    got = _weights_after(resumed, 3)
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name


@pytest.mark.slow  # torch.compile: tens of seconds on a CPU, the first time
def test_a_really_compiled_step_learns_as_the_uncompiled_one(corpus):
    """inductor on this machine's C++ compiler, through the modern block's own pieces (its
    dropout masks, RMSNorm, QK-norm with rotary): the same losses, to float32 rounding."""
    model_cfg = replace(_model_cfg(corpus, arch="modern", pos="rope"), dropout=0.0)
    losses = {}
    for compiled in (False, True):
        trainer = Trainer(model_cfg, _cfg(compile=compiled, optimizer="muon"), corpus)
        losses[compiled] = [trainer.train_step()[0].item() for _ in range(3)]
        assert (trainer.step_model is trainer.eager_step_model) != compiled
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    trainer = Trainer(_model_cfg(corpus, arch="modern"), _cfg(compile=True), corpus)
    masked = [trainer.train_step()[0].item() for _ in range(2)]  # dropout 0.1, compiled
    assert all(math.isfinite(x) for x in masked)
    assert trainer.step_model is not trainer.eager_step_model


def test_the_step_that_compiles_is_left_out_of_the_step_time_estimates(corpus, monkeypatch):
    import time

    from toygpt_cli.events import EstimateReady

    _compiling(monkeypatch, lambda: time.sleep(2.1))  # as long as a real compile
    estimates = []
    cfg = _cfg(compile=True, iters=205, eval_interval=1000, max_time=600.0)
    listen = lambda e: isinstance(e, EstimateReady) and estimates.append(e)  # noqa: E731
    trainer = Trainer(_model_cfg(corpus), cfg, corpus, listeners=[listen])
    trainer.run()
    # counted, the compile alone would have made the estimate at step 5, at ~0.4 s a step
    assert estimates and estimates[0].sec_per_step < 0.1 and estimates[0].steps < 205
