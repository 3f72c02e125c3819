"""runs/session.py: a run folder from start to resume: what it holds, exact resume through
its files, options changed on resume, budgets, and the evals' fixed windows."""

import json
from dataclasses import replace

import pytest
import torch

from toygpt_cli.config import TrainConfig
from toygpt_cli.device import resolve_dtype
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.runs.checkpoint import read_checkpoint, save_checkpoint
from toygpt_cli.runs.folder import Run
from toygpt_cli.runs.session import resume_training, start_training
from toygpt_cli.stopping import StopSwitch


def _records(run: Run):
    return [(m["step"], m["train_loss"], m["val_loss"]) for m in run.metrics()]


def _ckpt(run: Run):
    return read_checkpoint(run.file("ckpt.pt"), resume=True)


def test_run_folder_holds_everything(corpus_file, tiny_model, tiny_train, tmp_path):
    run = start_training(tiny_model, tiny_train, corpus_file, tmp_path).run().run
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "status.json", "metrics.jsonl", "samples.jsonl", "trace.jsonl",
            "ckpt.pt", "best.pt"} <= names  # fmt: skip
    cfg = run.config()
    assert cfg["train"]["iters"] == 60 and cfg["model"]["n_embd"] == 32
    assert cfg["data"]["sha256"] and cfg["vocab"] and cfg["versions"]["torch"]
    # auto picks bf16 only on CPUs with bf16 matrix instructions: the test must not care which.
    expected_dtype = resolve_dtype("auto", torch.device("cpu"))
    assert cfg["resolved"] == cfg["resolved"] | {"device": "cpu", "dtype": expected_dtype}
    assert [m["step"] for m in run.metrics()] == [0, 20, 40, 60]
    assert set(run.metrics()[-1]) == {"step", "train_loss", "val_loss", "lr", "tokens_per_sec",
                                      "elapsed"}  # fmt: skip
    assert [s["step"] for s in run.samples()] == [0, 20, 40, 60]
    assert run.trace() and all({"step", "loss", "lr"} <= set(r) for r in run.trace())
    assert run.status()["status"] == "completed"
    assert 10 < run.status()["peak_rss_mb"] < 4096
    ckpt = _ckpt(run)
    assert ckpt.step == 60 and set(ckpt.data["rng"]) == {"batches", "cpu", "cuda"}


@pytest.mark.slow
def test_resume_is_exact(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=40, eval_interval=20, eval_iters=2, batch_size=8, sample_chars=20)
    straight = start_training(tiny_model, replace(cfg, iters=70), corpus_file, tmp_path / "a").run()
    first = start_training(tiny_model, cfg, corpus_file, tmp_path / "b").run()
    second = resume_training(first.run, steps=30).run()
    assert second.step == 70
    a, b = _ckpt(straight.run), _ckpt(second.run)
    for name, tensor in a.weights.items():
        assert torch.equal(tensor, b.weights[name]), name
    assert _records(straight.run) == _records(second.run)
    assert a.state["best_val"] == b.state["best_val"]


def test_a_run_is_visible_only_once_it_can_be_resumed(corpus_file, tiny_model, tiny_train,
                                                      tmp_path):  # fmt: skip
    trainer = start_training(tiny_model, tiny_train, corpus_file, tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()  # no staging folder left: it became the run
    assert (run / "config.json").exists() and (run / "ckpt.pt").exists()
    assert trainer.run_folder.path == run
    trainer.run()


def test_resume_refuses_a_different_architecture(corpus_file, tiny_model, tiny_train, tmp_path):
    run = start_training(tiny_model, tiny_train, corpus_file, tmp_path).run().run
    with pytest.raises(UsageError, match="n_layer 3: it is 2 in the run, and n_layer is fixed"):
        resume_training(run, 10, {"n_layer": 3})


def test_beta2_reaches_the_optimizer_and_may_change_on_resume(corpus_file, tiny_model,
                                                              tiny_train, tmp_path):  # fmt: skip
    trainer = start_training(tiny_model, replace(tiny_train, beta2=0.99), corpus_file, tmp_path)
    assert {g["betas"] for g in trainer.optimizer.param_groups} == {(0.9, 0.99)}
    run = trainer.run().run
    kept = resume_training(run, 10)
    assert {g["betas"] for g in kept.optimizer.param_groups} == {(0.9, 0.99)}
    kept.run()
    changed = resume_training(run, 10, {"beta2": 0.95})
    assert {g["betas"] for g in changed.optimizer.param_groups} == {(0.9, 0.95)}
    assert run.config()["resumes"][-1]["changed"]["beta2"] == [0.99, 0.95]


def _decays(trainer):
    return {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups}


def test_weight_decay_from_zero_and_decay_matrices_only_take_effect_on_resume(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    cfg = replace(tiny_train, iters=20, weight_decay=0.0)
    run = start_training(tiny_model, cfg, corpus_file, tmp_path).run().run
    resumed = resume_training(run, 5, {"weight_decay": 0.1})
    assert _decays(resumed) == {"matrices": 0.1, "vectors": 0.1}
    resumed.run()
    again = resume_training(run, 5, {"decay_matrices_only": True})
    assert _decays(again) == {"matrices": 0.1, "vectors": 0.0}
    assert again.run().status == "completed"
    assert run.config()["resumes"][-1]["changed"] == {"decay_matrices_only": [False, True]}


@pytest.mark.slow  # a long training
def test_bfloat16_training_lowers_the_loss_like_float32(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=150, eval_interval=150, eval_iters=4, batch_size=16, sample_chars=0)
    f32 = start_training(tiny_model, cfg, corpus_file, tmp_path / "f").run()
    bf16 = start_training(tiny_model, replace(cfg, dtype="bfloat16"), corpus_file,
                          tmp_path / "b").run()  # fmt: skip
    assert bf16.run.config()["resolved"]["dtype"] == "bfloat16"
    assert bf16.last_eval["val_loss"] < bf16.run.metrics()[0]["val_loss"] - 0.5
    assert abs(bf16.last_eval["val_loss"] - f32.last_eval["val_loss"]) < 0.1


def _budget_cfg(**kw):
    return TrainConfig(**{"iters": 0, "max_time": 1.0, "eval_interval": 50, "eval_iters": 2,
                          "batch_size": 8, "sample_chars": 0, **kw})  # fmt: skip


@pytest.mark.slow  # a long training
def test_a_finished_budget_run_resumes_with_a_budget_of_its_own(corpus_file, tiny_model, tmp_path):
    first = start_training(tiny_model, _budget_cfg(), corpus_file, tmp_path).run()
    assert first.status == "completed" and first.step > 0
    more = resume_training(first.run, 7).run()  # the old budget is spent: just 7 steps
    assert more.status == "completed" and more.step == first.step + 7
    wall = first.run.status()["wall_seconds"]
    timed = resume_training(first.run, None, {"max_time": 1.0}).run()  # a new budget
    assert timed.status == "completed" and timed.step > more.step
    assert first.run.status()["wall_seconds"] - wall < 3.0


def test_an_interrupted_run_whose_budget_is_spent_says_so(corpus_file, tiny_model, tmp_path):
    run = start_training(tiny_model, _budget_cfg(), corpus_file, tmp_path).run().run
    # As if killed during its final eval, after the budget ran out.
    status = json.loads(run.file("status.json").read_text())
    run.file("status.json").write_text(json.dumps(status | {"status": "interrupted"}))
    ckpt = _ckpt(run).data
    ckpt["state"]["wall_seconds"] = 5.0
    save_checkpoint(run.file("ckpt.pt"), {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(ToygptError, match="used up its 1 s budget; give --max-time"):
        resume_training(run)
    more = resume_training(run, 5).run()  # --steps N: those steps, without the spent budget
    assert more.status == "completed" and more.steps_this_session == 5
    none = resume_training(run, 3, {"max_time": 0}).run()  # --max-time 0 with --steps
    assert none.status == "completed" and none.steps_this_session == 3


def test_a_resumed_budget_session_knows_its_eval_cost_and_the_budget_used(
    corpus_file, tiny_model, tmp_path, monkeypatch
):
    from toygpt_cli.budget import Budget
    from toygpt_cli.events import StepDone, TrainStarted

    stop = StopSwitch()
    trainer = start_training(
        tiny_model, _budget_cfg(max_time=60.0, eval_interval=1000), corpus_file, tmp_path,
        callback=lambda e: stop.request() if isinstance(e, StepDone) else None, stop=stop,
    )  # fmt: skip
    first = trainer.run()  # stopped after one step, far from the next eval
    assert first.status == "interrupted" and first.step == 1
    costs, started, stop = [], [], StopSwitch()
    must_stop = Budget.must_stop
    monkeypatch.setattr(Budget, "must_stop", lambda b: costs.append(b.eval_cost) or must_stop(b))

    def listen(e):
        if isinstance(e, TrainStarted):
            started.append(e)
        if isinstance(e, StepDone):
            stop.request()

    resume_training(first.run, callback=listen, stop=stop).run()  # its unspent budget
    # Its next eval is 999 steps away, but the budget already counts what one costs, so
    # that the final eval fits; and the display is told how much of the budget is gone.
    assert costs and costs[0] > 0
    assert 0 < started[0].budget_used < 60.0


def test_every_eval_of_a_run_scores_the_same_windows_across_resumes(corpus_file, tiny_model,
                                                                     tmp_path):  # fmt: skip
    cfg = TrainConfig(iters=20, eval_interval=10, eval_iters=3, batch_size=8, sample_chars=0)
    run = start_training(tiny_model, cfg, corpus_file, tmp_path).run().run
    assert _ckpt(run).state["eval_windows"] == 24
    resume_training(run, 10, {"batch_size": 4}).run()  # another batch size: the same windows
    assert _ckpt(run).state["eval_windows"] == 24
    with pytest.raises(UsageError, match="eval_iters is fixed"):
        resume_training(run, 10, {"eval_iters": 5})


def test_a_metrics_record_lost_to_a_kill_comes_back_from_the_checkpoint(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    run = start_training(tiny_model, tiny_train, corpus_file, tmp_path).run().run
    lines = run.file("metrics.jsonl").read_text().splitlines()
    run.file("metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # killed before it
    resume_training(run, 20).run()
    assert [m["step"] for m in run.metrics()] == [0, 20, 40, 60, 80]


def test_keep_last_writes_no_best_and_keep_best_drops_the_resume_state(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    last = start_training(tiny_model, replace(tiny_train, keep="last"), corpus_file,
                          tmp_path / "l").run().run  # fmt: skip
    assert last.file("ckpt.pt").exists() and not last.file("best.pt").exists()
    best = start_training(tiny_model, replace(tiny_train, keep="best"), corpus_file,
                          tmp_path / "b").run().run  # fmt: skip
    assert best.file("best.pt").exists() and not best.file("ckpt.pt").exists()
    assert best.summary()["status"] == "completed"
    with pytest.raises(ToygptError, match="no checkpoint to resume from .*--keep best"):
        resume_training(best, 5)


def test_training_without_a_folder_writes_nothing(corpus_file, tiny_model, tiny_train, tmp_path):
    result = start_training(tiny_model, tiny_train, corpus_file, None).run()
    assert result.status == "completed" and result.run is None
    assert {p.name for p in tmp_path.iterdir()} == {corpus_file.name, ".toygpt-cache"}


def test_the_memory_check_counts_every_process_sharing_a_cpu(tiny_model, tiny_train,
                                                              monkeypatch):  # fmt: skip
    """Processes on one machine share its memory: a configuration one process fits in is
    refused for two when it fits only once, naming the processes."""
    from toygpt_cli.parallel.distributed import Distributed
    from toygpt_cli.runs import session

    need = session.memory_needed(tiny_model, tiny_train, world_size=2)
    machine = int(need * 1.5 / 0.9)
    monkeypatch.setattr(session, "system_memory", lambda: machine)
    monkeypatch.setattr(session, "available_memory", lambda: machine)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cpu = torch.device("cpu")
    session.check_memory(tiny_model, tiny_train, cpu)  # one process: fits
    two = Distributed(0, 2, 0, cpu)
    with pytest.raises(ToygptError, match="in each of 2 processes.*or fewer processes"):
        session.check_memory(tiny_model, tiny_train, cpu, two)
    monkeypatch.setattr(session, "system_memory", lambda: int(need * 2.5 / 0.9))
    session.check_memory(tiny_model, tiny_train, cpu, two)  # room for both, each under its
    # own address-space limit (`ulimit -v`: available_memory) of 1.5x what it needs
    monkeypatch.setattr(session, "available_memory", lambda: int(need * 0.5))
    with pytest.raises(ToygptError, match="needs about") as refused:
        session.check_memory(tiny_model, tiny_train, cpu, two)  # over its own limit
    assert "processes" not in str(refused.value)
