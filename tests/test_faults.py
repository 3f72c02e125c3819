"""Faults an unlucky or hostile user meets: kills during start-up, two trainers on one run,
budgets on resume, a second Ctrl-C while a checkpoint is written, divergence, changed data."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from toygpt_cli.errors import ToygptError
from toygpt_cli.events import CheckpointDue
from toygpt_cli.runs.checkpoint import load_checkpoint, save_checkpoint
from toygpt_cli.runs.session import resume_training, start_training, stop_on_signals

from .cli_helpers import toygpt
from .conftest import TINY_ARGS


def _train_proc(corpus, runs, *extra):
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus), *TINY_ARGS]
    cmd += ["--iters", "100000", "--eval-interval", "25", "--threads", "1", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _visible_runs(runs):
    return [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []


@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5])
def test_a_kill_during_start_up_never_leaves_a_run_that_cannot_resume(dirs, corpus_file, delay):
    _, runs = dirs
    proc = _train_proc(corpus_file, runs)
    deadline = time.monotonic() + delay
    seen_early = []
    while time.monotonic() < deadline:  # a run must never be visible before it can resume
        for run in _visible_runs(runs):
            seen_early.append(run)
            assert (run / "config.json").exists() and (run / "ckpt.pt").exists()
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=30)
    listing = toygpt("runs", "list", "--json")
    assert listing.exit_code == 0, listing.stderr
    for run in _visible_runs(runs):
        r = toygpt("train", "--resume", run.name, "--steps", "2")
        assert r.exit_code == 0, r.stderr
    # What a killed start-up leaves is hidden, and swept by the next run's start.
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "1")
    assert r.exit_code == 0, r.stderr
    assert not [p for p in runs.iterdir() if p.name.startswith(".staging-")]


def test_a_second_trainer_on_the_same_run_is_refused(dirs, corpus_file):
    _, runs = dirs
    proc = _train_proc(corpus_file, runs)
    try:
        deadline = time.monotonic() + 60
        while not _visible_runs(runs) and time.monotonic() < deadline:
            time.sleep(0.05)
        (run,) = _visible_runs(runs)
        r = toygpt("train", "--resume", run.name, "--steps", "5")
        assert r.exit_code == 1
        assert "is being trained by another process" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130


def test_a_finished_budget_run_resumes_with_a_budget_of_its_own(corpus_file, tiny_model, tmp_path):
    cfg = replace(_budget_cfg(), max_time=1.0)
    first = start_training(tiny_model, cfg, corpus_file, tmp_path).run()
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
    ckpt = load_checkpoint(run.file("ckpt.pt"))
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

    cfg = replace(_budget_cfg(), max_time=60.0, eval_interval=1000)
    trainer = start_training(tiny_model, cfg, corpus_file, tmp_path)
    trainer.listeners.append(
        lambda e: trainer.request_stop(signal.SIGINT) if isinstance(e, StepDone) else None
    )
    first = trainer.run()  # stopped after one step, far from the next eval
    assert first.status == "interrupted" and first.step == 1
    costs, started = [], []
    must_stop = Budget.must_stop
    monkeypatch.setattr(Budget, "must_stop", lambda b: costs.append(b.eval_cost) or must_stop(b))
    resumed = resume_training(first.run)  # the rest of its unspent budget
    resumed.listeners.append(lambda e: started.append(e) if isinstance(e, TrainStarted) else None)
    resumed.listeners.append(
        lambda e: resumed.request_stop(signal.SIGINT) if isinstance(e, StepDone) else None
    )
    resumed.run()
    # Its first eval is 999 steps away, but the budget already counts what one costs, so
    # that the final eval fits; and the display is told how much of the budget is gone.
    assert costs and costs[0] > 0
    assert started[0].budget_used > 0 and started[0].budget_used < 60.0


def _budget_cfg():
    from toygpt_cli.config import TrainConfig

    return TrainConfig(
        iters=0, max_time=1.0, eval_interval=50, eval_iters=2, batch_size=8, sample_chars=0
    )


def test_a_second_ctrl_c_while_the_checkpoint_is_written_waits_for_it(
    corpus_file, tiny_model, tiny_train, tmp_path
):
    trainer = start_training(tiny_model, replace(tiny_train, iters=1000), corpus_file, tmp_path)
    signals = {"sent": 0}

    def interrupt_twice(event):
        # The first Ctrl-C arrives at step 3; the second while the checkpoint it causes is
        # being handed to the recorder (the slow part of stopping).
        if getattr(event, "step", 0) == 3 and signals["sent"] == 0:
            signals["sent"] = 1
            os.kill(os.getpid(), signal.SIGINT)
        if isinstance(event, CheckpointDue) and signals["sent"] == 1 and event.step >= 3:
            signals["sent"] = 2
            os.kill(os.getpid(), signal.SIGINT)

    trainer.listeners.insert(0, interrupt_twice)
    with stop_on_signals(trainer), pytest.raises(KeyboardInterrupt):
        trainer.run()
    run = trainer.run_dir
    assert load_checkpoint(run.file("ckpt.pt"))["state"]["step"] == 3  # written in full
    assert json.loads(run.file("status.json").read_text())["status"] == "interrupted"
    assert resume_training(run, 2).run().step == 5


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(dirs, corpus_file):
    _, runs = dirs
    r = toygpt(
        "train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval", "10",
        "--lr", "1e30", "--dtype", "float32",
    )  # fmt: skip
    assert r.exit_code == 1, r.stderr
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: training diverged") and "last good checkpoint" in line
    (run,) = _visible_runs(runs)
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    ckpt = load_checkpoint(run / "ckpt.pt")
    assert all(t.isfinite().all() for t in ckpt["model"].values())


def test_resume_refuses_data_that_changed_since_training(dirs, corpus_file):
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2")
    assert r.exit_code == 0, r.stderr
    lines = corpus_file.read_text().splitlines()
    corpus_file.write_text("\n".join(reversed(lines)))  # same characters, other text
    r = toygpt("train", "--resume", "--steps", "2")
    assert r.exit_code == 1 and "has changed since" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_nproc_with_a_bad_option_is_one_line_before_anything_starts(dirs, corpus_file):
    env = dict(os.environ, CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--nproc", "2", "--data", str(corpus_file)]
    proc = subprocess.run([*cmd, "--lr", "nan"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --learning-rate must be a finite number, got nan"
    ]


def _edit_checkpoint(path, edit):
    ckpt = load_checkpoint(path)
    edit(ckpt)
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k != "format"})


@pytest.mark.parametrize(
    "what, edit, message",
    [
        ("wider config", lambda c: c["model_config"].update(n_embd=64), "does not fit|damaged"),
        ("no state", lambda c: c.pop("state", None), "has no 'state'"),
        ("no rng", lambda c: c.pop("rng", None), "has no 'rng'"),
        ("bad step", lambda c: c["state"].update(step="ten"), "damaged or made by hand"),
        ("short vocab", lambda c: c.update(vocab="ab"), "vocabulary"),
    ],
)
def test_hand_made_checkpoints_are_one_line(dirs, corpus_file, what, edit, message):
    _, runs = dirs
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2").exit_code == 0
    (run,) = _visible_runs(runs)
    for name in ("ckpt.pt", "best.pt"):
        _edit_checkpoint(run / name, edit)
    for args in (["train", "--resume", "--steps", "1"], ["sample", "-n", "5"]):
        r = toygpt(*args)
        if what in ("no state", "no rng", "bad step") and args[0] == "sample":
            continue  # sampling needs none of these
        assert r.exit_code == 1, (args, r.stdout, r.stderr)
        (line,) = r.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: ") and "Traceback" not in r.stderr
        import re

        assert re.search(message, line), line
