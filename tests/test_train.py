import math
from dataclasses import replace

import pytest
import torch

from toygpt_cli.config import TrainConfig
from toygpt_cli.device import resolve_dtype
from toygpt_cli.optim import learning_rate
from toygpt_cli.runs.checkpoint import load_checkpoint
from toygpt_cli.runs.folder import Run
from toygpt_cli.runs.session import resume_training, start_training


def _records(run: Run):
    return [(m["step"], m["train_loss"], m["val_loss"]) for m in run.metrics()]


def test_training_lowers_the_loss(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=300, eval_interval=150, eval_iters=8, batch_size=32, sample_chars=0)
    result = start_training(tiny_model, cfg, corpus_file, tmp_path).run()
    losses = [m["val_loss"] for m in result.run.metrics()]
    assert result.status == "completed" and result.step == 300
    assert losses[0] > 3.5  # about ln(vocab) at the start
    assert losses[-1] < losses[0] - 1.0


def test_run_folder_holds_everything(corpus_file, tiny_model, tiny_train, tmp_path):
    run = start_training(tiny_model, tiny_train, corpus_file, tmp_path).run().run
    names = {p.name for p in run.path.iterdir()}
    assert {
        "config.json",
        "status.json",
        "metrics.jsonl",
        "samples.jsonl",
        "ckpt.pt",
        "best.pt",
    } <= names
    cfg = run.config()
    assert cfg["train"]["iters"] == 60 and cfg["model"]["n_embd"] == 32
    assert cfg["data"]["sha256"] and cfg["vocab"] and cfg["versions"]["torch"]
    # auto picks bf16 only on CPUs with bf16 matrix instructions: the test must not care which.
    expected_dtype = resolve_dtype("auto", torch.device("cpu"))
    assert cfg["resolved"] == cfg["resolved"] | {"device": "cpu", "dtype": expected_dtype}
    assert [m["step"] for m in run.metrics()] == [0, 20, 40, 60]
    assert set(run.metrics()[-1]) == {
        "step",
        "train_loss",
        "val_loss",
        "lr",
        "tokens_per_sec",
        "elapsed",
    }
    assert [s["step"] for s in run.samples()] == [0, 20, 40, 60]
    assert run.status()["status"] == "completed"
    assert 10 < run.status()["peak_rss_mb"] < 4096
    ckpt = load_checkpoint(run.file("ckpt.pt"))
    assert ckpt["state"]["step"] == 60 and set(ckpt["rng"]) == {"batches", "cpu", "cuda"}


def test_resume_is_exact(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=40, eval_interval=20, eval_iters=2, batch_size=8, sample_chars=20)
    straight = start_training(tiny_model, replace(cfg, iters=70), corpus_file, tmp_path / "a").run()
    first = start_training(tiny_model, cfg, corpus_file, tmp_path / "b").run()
    second = resume_training(first.run, steps=30).run()
    assert second.step == 70
    a = load_checkpoint(straight.run.file("ckpt.pt"))
    b = load_checkpoint(second.run.file("ckpt.pt"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert _records(straight.run) == _records(second.run)
    assert a["state"]["best_val"] == b["state"]["best_val"]


def test_resume_refuses_a_different_architecture(corpus_file, tiny_model, tiny_train, tmp_path):
    from toygpt_cli.errors import UsageError

    run = start_training(tiny_model, tiny_train, corpus_file, tmp_path).run().run
    with pytest.raises(UsageError, match="n_layer 3: it is 2 in the run, and n_layer is fixed"):
        resume_training(run, 10, {"n_layer": 3})


def test_beta2_reaches_the_optimizer_and_may_change_on_resume(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    trainer = start_training(tiny_model, replace(tiny_train, beta2=0.99), corpus_file, tmp_path)
    assert {g["betas"] for g in trainer.optimizer.param_groups} == {(0.9, 0.99)}
    run = trainer.run().run
    kept = resume_training(run, 10)
    assert {g["betas"] for g in kept.optimizer.param_groups} == {(0.9, 0.99)}
    kept.run()
    changed = resume_training(run, 10, {"beta2": 0.95})
    assert {g["betas"] for g in changed.optimizer.param_groups} == {(0.9, 0.95)}
    assert run.config()["resumes"][-1]["changed"]["beta2"] == [0.99, 0.95]


def test_bfloat16_training_lowers_the_loss_like_float32(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(iters=150, eval_interval=150, eval_iters=4, batch_size=16, sample_chars=0)
    f32 = start_training(tiny_model, cfg, corpus_file, tmp_path / "f").run()
    bf16 = start_training(
        tiny_model, replace(cfg, dtype="bfloat16"), corpus_file, tmp_path / "b"
    ).run()
    assert bf16.run.config()["resolved"]["dtype"] == "bfloat16"
    start = bf16.run.metrics()[0]["val_loss"]
    assert bf16.last_eval["val_loss"] < start - 0.5
    assert abs(bf16.last_eval["val_loss"] - f32.last_eval["val_loss"]) < 0.1


def test_max_time_stops_on_budget_and_completes(corpus_file, tiny_model, tmp_path):
    cfg = TrainConfig(
        iters=100_000,
        eval_interval=50,
        eval_iters=2,
        batch_size=8,
        sample_chars=0,
        max_time=3.0,
        lr_schedule="cosine",
    )
    result = start_training(tiny_model, cfg, corpus_file, tmp_path).run()
    assert result.status == "completed"
    assert 0 < result.step < 100_000
    assert result.run.metrics()[-1]["step"] == result.step
    assert result.run.metrics()[-1]["elapsed"] < 4.0


def test_learning_rate_schedule():
    cfg = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_schedule="cosine")
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1 / 11)
    assert learning_rate(cfg, 10, 0.0) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(cfg, 99, 1.0) == pytest.approx(0.1)
    assert learning_rate(TrainConfig(), 4000, 0.8) == 1e-3  # the seed's constant rate
    assert math.isclose(learning_rate(cfg, 99, 7.0), 0.1)  # clamped past the end


def test_a_budget_schedule_follows_the_clock_all_ranks_agree_on(
    corpus_file, tiny_model, tmp_path, monkeypatch
):
    from toygpt_cli.events import StepDone
    from toygpt_cli.parallel.distributed import Distributed

    # As if the slowest rank were always halfway through the budget: every step's rate is
    # the cosine's midpoint, whatever this process's own clock says.
    monkeypatch.setattr(Distributed, "max", lambda self, value: 30.0)
    cfg = TrainConfig(
        iters=10_000, eval_interval=50, eval_iters=2, batch_size=8, sample_chars=0, max_time=60.0,
        lr_schedule="cosine", learning_rate=1.0, min_lr=0.0,
    )  # fmt: skip
    trainer = start_training(tiny_model, cfg, corpus_file, tmp_path)
    rates = []

    def listen(e):
        if isinstance(e, StepDone):
            rates.append(e.lr)
            if e.step == 20:
                trainer.request_stop(2)

    trainer.listeners.append(listen)
    trainer.run()
    assert len(rates) == 20 and rates == pytest.approx([0.5] * 20)
