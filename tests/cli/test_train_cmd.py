"""`toygpt train` as people use it: a run from start to resume, labels, progress lines,
budgets, and a real training process stopped by Ctrl-C, SIGTERM, SIGHUP and SIGKILL at any
moment (its files stay whole and it resumes). Subprocess tests are marked slow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from toygpt_cli.runs.checkpoint import read_checkpoint
from toygpt_cli.runs.files import METRIC_FIELDS, SAMPLE_FIELDS, read_records
from toygpt_cli.runs.folder import Run

from ..cli_helpers import toygpt
from ..conftest import TINY_ARGS


def _visible_runs(runs):
    return [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []


def _step(run):
    return read_checkpoint(run / "ckpt.pt").step


def test_train_sample_eval_resume(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval",
               "20", "--sample")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    assert {"config.json", "ckpt.pt", "best.pt", "metrics.jsonl", "samples.jsonl"} <= {
        p.name for p in run.iterdir()
    }
    assert "val loss" in r.stderr and str(run) in r.stderr
    assert len(r.stdout) >= 500  # --sample prints on stdout
    r = toygpt("sample", "--run", "latest", "-n", "50", "--seed", "3")
    assert r.exit_code == 0 and len(r.stdout) == 51  # text + newline, status went to stderr
    assert toygpt("sample", "--run", run.name, "-n", "50", "--seed", "3").stdout == r.stdout
    r = toygpt("eval", "--run", "latest", "--json")
    assert r.exit_code == 0, r.stderr
    val = json.loads(r.stdout)["splits"]["val"]
    assert val["bits_per_char"] > 0 and val["perplexity"] > 1 and val["chars"] > 0
    r = toygpt("train", "--resume", "--steps", "10")
    assert r.exit_code == 0, r.stderr
    assert [m["step"] for m in Run(run).metrics()] == [0, 20, 40, 50]


def test_train_sample_with_ema_samples_the_average_the_run_saved(dirs, corpus_file, monkeypatch):
    import toygpt_cli.periodic
    import toygpt_cli.sample

    used = []

    def fake_sample(model, *args, **kwargs):
        used.append({k: v.clone() for k, v in model.state_dict().items()})
        return ["sampled"]

    monkeypatch.setattr(toygpt_cli.sample, "sample_text", fake_sample)  # --sample's
    monkeypatch.setattr(toygpt_cli.periodic, "sample_text", fake_sample)  # each eval's
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "30", "--eval-interval",
               "30", "--ema", "0.9", "--sample")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    ckpt = read_checkpoint(run / "ckpt.pt").data
    # samples at the evals of steps 0 and 30, then --sample's at the end
    assert "sampled" in r.stdout and len(used) == 3
    for weights in used[1:]:
        for name, tensor in weights.items():
            assert torch.equal(tensor, ckpt["model"][name]), name  # the average, as saved
        assert not torch.equal(weights["lm_head.weight"], ckpt["live"]["lm_head.weight"])


def test_a_run_label_is_kept_and_names_the_run(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2", "--name", "baseline")
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    assert json.loads((run / "config.json").read_text())["label"] == "baseline"
    assert json.loads(toygpt("runs", "list", "--json").stdout)[0]["label"] == "baseline"
    r = toygpt("sample", "--run", "baseline", "-n", "5", "--seed", "1")
    assert r.exit_code == 0 and f"{run.name} (baseline)" in r.stderr


@pytest.mark.slow  # a long training
def test_progress_lines_show_the_estimate_and_the_last_eval_on_resume(dirs, corpus_file):
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "300", "--eval-interval",
               "100")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "estimate: about 0:00:" in r.stderr and "more steps" in r.stderr
    r = toygpt("train", "--resume", "--steps", "10")
    assert r.exit_code == 0, r.stderr
    assert "last eval: step 300/310  train" in r.stderr


def test_training_lines_fit_in_80_columns(dirs, corpus_file):
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval",
               "20", "--max-time", "1h", "--name", "a-label-of-some-length")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith(("step", "estimate", "done"))]
    assert lines and all(len(x) <= 80 for x in lines), lines


def test_budget_runs_never_show_a_placeholder_step_count(dirs, corpus_file):
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "0", "--max-time", "2s")
    assert r.exit_code == 0, r.stderr
    assert "for 0:00:02:" in r.stderr and "/0 " not in r.stderr and "1000000" not in r.stderr
    listing = json.loads(toygpt("runs", "list", "--json").stdout)[0]
    assert listing["planned_steps"] in (None, listing["step"])


def test_a_budget_too_small_for_one_eval_is_one_line_and_leaves_no_run(dirs, corpus_file,
                                                                       monkeypatch):  # fmt: skip
    from toygpt_cli.periodic import PeriodicEval

    probe = PeriodicEval.probe

    def slow_machine(self, budget, state):  # as if one eval took 30 s here
        probe(self, budget, state)
        budget.eval_cost = 30.0

    monkeypatch.setattr(PeriodicEval, "probe", slow_machine)
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--max-time", "15s")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: --max-time 15s is too small here") and "or more" in line
    assert _visible_runs(runs) == []


def test_a_resume_refused_for_its_budget_leaves_the_run_as_it_was(dirs, corpus_file,
                                                                  monkeypatch):  # fmt: skip
    from toygpt_cli.periodic import PeriodicEval

    _, runs = dirs
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2").exit_code == 0
    (run,) = _visible_runs(runs)
    before = {name: (run / name).read_text() for name in ("config.json", "status.json")}
    probe = PeriodicEval.probe

    def slow_machine(self, budget, state):  # as if one eval took 30 s here
        probe(self, budget, state)
        budget.eval_cost = 30.0

    monkeypatch.setattr(PeriodicEval, "probe", slow_machine)
    r = toygpt("train", "--resume", "--max-time", "15s")
    assert r.exit_code == 1 and "is too small here" in r.stderr
    after = {name: json.loads((run / name).read_text()) for name in before}
    assert after["config.json"] == json.loads(before["config.json"])  # no resume recorded
    status = json.loads(before["status.json"])
    assert after["status.json"]["status"] == status["status"] == "completed"
    assert {k: v for k, v in after["status.json"].items() if k != "updated"} == {
        k: v for k, v in status.items() if k != "updated"
    }


def test_resume_refuses_data_that_changed_since_training(dirs, corpus_file):
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2").exit_code == 0
    lines = corpus_file.read_text().splitlines()
    corpus_file.write_text("\n".join(reversed(lines)))  # same characters, other text
    r = toygpt("train", "--resume", "--steps", "2")
    assert r.exit_code == 1 and "has changed since" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_resume_keeps_the_processes_the_run_trained_with_or_says_why_not(dirs, corpus_file):
    """A run that trained with more processes than this machine can start is refused in one
    line naming the way on, before anything starts; --nproc chooses and says the batch."""
    _, runs = dirs
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2").exit_code == 0
    (run,) = runs.iterdir()
    config = json.loads((run / "config.json").read_text())
    config["resolved"]["world_size"] = 64  # as if trained on a larger machine
    (run / "config.json").write_text(json.dumps(config))
    batch = config["train"]["batch_size"]
    r = toygpt("train", "--resume", "--steps", "2")
    assert r.exit_code == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "the run trained with 64 processes" in r.stderr
    assert f"--batch-size {64 * batch}" in r.stderr
    assert _step(run) == 2
    r = toygpt("train", "--resume", "--steps", "2", "--nproc", "1", "--batch-size", "3")
    assert r.exit_code == 0, r.stderr
    assert "note: the run trained with 64 processes" in r.stderr
    assert "continues with 1 (an effective batch of 3)" in r.stderr
    assert _step(run) == 4
    r = toygpt("train", "--resume", "--steps", "2")  # now one process, as it last trained
    assert r.exit_code == 0 and "note:" not in r.stderr, r.stderr
    assert _step(run) == 6


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval",
               "10", "--lr", "1e30", "--dtype", "float32")  # fmt: skip
    assert r.exit_code == 1, r.stderr
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: training diverged") and "last good checkpoint" in line
    (run,) = _visible_runs(runs)
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    read_checkpoint(run / "ckpt.pt")  # loads: finite weights


@pytest.mark.slow
def test_a_full_stderr_does_not_stop_training_or_leave_it_running(dirs, corpus_file):
    _, runs = dirs
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus_file), *TINY_ARGS,
             "--iters", "20", "--eval-interval", "10", "--threads", "1"],
            env=dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1"), stderr=full,
            stdout=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0
    (run,) = _visible_runs(runs)
    assert json.loads((run / "status.json").read_text())["status"] == "completed"


# -- a real training process, stopped ---------------------------------------------------------


def _start(corpus, runs, *extra):
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus), *TINY_ARGS,
           "--iters", "100000", "--eval-interval", "25", "--threads", "1", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_metrics(runs, count, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs.glob("*/metrics.jsonl"):
            if len(run.read_text().splitlines()) >= count:
                return run.parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training made no progress")


def _all_files_whole(run, temp_allowed=False):
    """What the docs promise: JSON files whole; in JSON-lines files every complete line is a
    record (a torn last line, from a kill mid-append, is ignored by every reader)."""
    for name, kinds in (("metrics.jsonl", METRIC_FIELDS), ("samples.jsonl", SAMPLE_FIELDS)):
        if (run / name).exists():
            text = (run / name).read_text()
            complete = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
            assert len(read_records(run / name, run.name, kinds)) == len(complete)
    for json_file in ("config.json", "status.json"):
        json.loads((run / json_file).read_text())
    temp = [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert temp_allowed or not temp  # only a kill -9 mid-write may leave one


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                           (signal.SIGHUP, 129)])  # fmt: skip
def test_a_signal_checkpoints_and_prints_the_resume_command(dirs, corpus_file, sig, code):
    _, runs = dirs
    proc = _start(corpus_file, runs)
    run = _wait_for_metrics(runs, 2, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"resume with: toygpt train --resume {run}\n" in stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted"
    step = _step(run)
    assert step == status["step"] and step >= 25
    _all_files_whole(run)
    r = toygpt("train", "--resume", run.name, "--steps", "5")
    assert r.exit_code == 0, r.stderr
    assert _step(run) == step + 5


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3, 0.7])
def test_sigkill_at_any_moment_leaves_a_resumable_run(dirs, corpus_file, delay):
    _, runs = dirs
    proc = _start(corpus_file, runs, "--save-every", "7")
    run = _wait_for_metrics(runs, 1, proc)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=30)
    _all_files_whole(run, temp_allowed=True)
    assert Run(run).status()["status"] == "interrupted"  # the dead process is noticed
    step = _step(run)
    r = toygpt("train", "--resume", run.name, "--steps", "3")
    assert r.exit_code == 0, r.stderr
    assert _step(run) == step + 3
    _all_files_whole(run)  # the resume swept any temporary file away
    steps = [m["step"] for m in Run(run).metrics()]
    assert steps == sorted(set(steps))  # nothing recorded twice


@pytest.mark.slow
def test_ctrl_c_during_an_eval_stops_within_seconds_and_resumes(dirs, corpus_file):
    _, runs = dirs
    # Long evals (a large model's, many windows), so that the signal lands inside one.
    proc = _start(corpus_file, runs, "--eval-iters", "2000", "--n-embd", "128", "--eval-interval",
                  "5")  # fmt: skip
    run = _wait_for_metrics(runs, 1, proc)  # the quick first eval is done; the next is long
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < 5.0, took
    assert "Ctrl-C: stopping at the next safe point" in stderr
    assert Run(run).status()["status"] == "interrupted"
    assert toygpt("train", "--resume", run.name, "--steps", "1").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_stops_at_once_and_leaves_a_checkpoint_that_resumes(dirs, corpus_file,
                                                                            sig, code):  # fmt: skip
    _, runs = dirs
    proc = _start(corpus_file, runs, "--eval-iters", "400")  # long evals to interrupt
    run = _wait_for_metrics(runs, 1, proc)
    before = _step(run)
    proc.send_signal(sig)
    time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr  # the signal's own code
    assert time.monotonic() - sent < 5.0
    assert _step(run) >= before  # whole: the previous checkpoint or the one it finished
    assert Run(run).status()["status"] == "interrupted"
    assert toygpt("train", "--resume", run.name, "--steps", "2").exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_that_keep_coming_while_it_stops_never_change_its_exit(dirs, corpus_file, sig,
                                                                       code):  # fmt: skip
    _, runs = dirs
    proc = _start(corpus_file, runs)
    run = _wait_for_metrics(runs, 1, proc)
    proc.send_signal(sig)
    deadline = time.monotonic() + 20
    while Run(run).status().get("status") != "interrupted" and time.monotonic() < deadline:
        time.sleep(0.001)
    while proc.poll() is None and time.monotonic() < deadline:  # every moment of the exit
        proc.send_signal(sig)
        time.sleep(0.001)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr  # never the signal's default action (-15, -2)
    assert "Traceback" not in stderr
    assert Run(run).status()["status"] == "interrupted"
    assert toygpt("train", "--resume", run.name, "--steps", "2").exit_code == 0


@pytest.mark.slow
def test_ctrl_c_during_start_up_says_no_run_was_made(dirs, corpus_file, tmp_path):
    _, runs = dirs
    big = tmp_path / "big.txt"
    big.write_text(corpus_file.read_text() * 400)  # a first encoding to interrupt
    for delay in (2.5, 5.0, 10.0):  # later where a loaded machine is still loading modules
        proc = _start(big, runs)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130
        if stderr.strip() != "stopped" or _visible_runs(runs):
            break  # past loading: start-up or training
    else:
        pytest.fail("every Ctrl-C came while toygpt was still loading its modules")
    if _visible_runs(runs):  # start-up was over already: the ordinary stop
        assert "resume with" in stderr
    else:
        assert "no run was created" in stderr and "checkpoint" not in stderr


def test_a_ctrl_c_that_lands_in_the_start_up_cleanup_leaves_no_folder(dirs, corpus_file,
                                                                      monkeypatch):  # fmt: skip
    """Under --nproc a Ctrl-C can wait in PyTorch's C++ until a collective fails, and then
    land in the cleanup of the half-made run: the command removes what it made itself."""
    from toygpt_cli.runs import session
    from toygpt_cli.runs.folder import make_staging

    _, runs = dirs
    other = make_staging(runs)  # another process's, still building (its pid is alive)
    os.rename(other, runs / f".staging-{os.getppid()}-0")

    def interrupted_cleanup(model_cfg, train_cfg, data, runs_dir, **kw):
        make_staging(runs_dir)  # ... and the KeyboardInterrupt came before its removal
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "start_training", interrupted_cleanup)
    r = toygpt("train", *TINY_ARGS, "--data", corpus_file)
    assert r.exit_code == 130 and "no run was created" in r.stderr
    assert [p.name for p in runs.iterdir()] == [f".staging-{os.getppid()}-0"]


@pytest.mark.slow
def test_a_kill_during_start_up_never_leaves_a_run_that_cannot_resume(dirs, corpus_file):
    _, runs = dirs
    made = 0
    # Fixed delays, then one kill the moment a new run appears, however slow start-up is.
    for delay in (0.3, 1.0, 1.8, 2.6, None):
        before = set(_visible_runs(runs))
        proc = _start(corpus_file, runs)
        deadline = time.monotonic() + (60.0 if delay is None else delay)
        while time.monotonic() < deadline:  # a run must never be visible before it can resume
            visible = set(_visible_runs(runs))
            for run in visible:
                assert (run / "config.json").exists() and (run / "ckpt.pt").exists()
            if delay is None and visible - before:
                break
            assert delay is not None or proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.kill()
        proc.communicate(timeout=30)
    listing = toygpt("runs", "list", "--json")
    assert listing.exit_code == 0, listing.stderr
    for run in _visible_runs(runs):
        made += 1
        r = toygpt("train", "--resume", run.name, "--steps", "2")
        assert r.exit_code == 0, r.stderr
    assert made >= 1  # the later kills came after the run was visible: that path was tried
    # What a killed start-up leaves is hidden, and swept by the next run's start.
    assert toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "1").exit_code == 0
    assert not [p for p in runs.iterdir() if p.name.startswith(".staging-")]


@pytest.mark.slow
def test_a_second_trainer_on_the_same_run_is_refused(dirs, corpus_file):
    _, runs = dirs
    proc = _start(corpus_file, runs)
    try:
        run = _wait_for_metrics(runs, 1, proc)
        (run / ".lock").unlink()  # the pid file: deleting it takes nothing away
        r = toygpt("train", "--resume", run.name, "--steps", "5")
        assert r.exit_code == 1 and "is being trained by another process" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        r = toygpt("runs", "rm", "-y", run.name)
        assert r.exit_code == 1 and run.exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130


@pytest.mark.slow
def test_sample_and_list_while_training(dirs, corpus_file):
    _, runs = dirs
    proc = _start(corpus_file, runs, "--save-every", "5")
    try:
        run = _wait_for_metrics(runs, 2, proc)
        for _ in range(3):  # checkpoints are replaced by a rename: always a whole file
            r = toygpt("sample", "--run", run.name, "--checkpoint", "last", "-n", "10")
            assert r.exit_code == 0, r.stderr
        assert json.loads(toygpt("runs", "list", "--json").stdout)[0]["status"] == "running"
        assert toygpt("runs", "rm", "--yes", run.name).exit_code == 1  # refused while training
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130


@pytest.mark.slow
def test_training_goes_on_when_its_output_pipe_closes(dirs, corpus_file):
    _, runs = dirs
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus_file), *TINY_ARGS,
           "--iters", "200", "--eval-interval", "10", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    proc.stderr.readline()  # like `| head -1`: read one line, then go away
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    (run,) = runs.iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 200


@pytest.mark.slow
def test_nproc_with_a_bad_option_is_one_line_before_anything_starts(dirs, corpus_file):
    env = dict(os.environ, CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--nproc", "2", "--data", str(corpus_file)]
    proc = subprocess.run([*cmd, "--lr", "nan"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --learning-rate must be a finite number, got nan"
    ]


@pytest.mark.slow
def test_a_lost_worker_ends_the_others_in_one_line_and_the_run_resumes(dirs, corpus_file):
    _, runs = dirs
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--nproc", "2", "--data", str(corpus_file),
           *TINY_ARGS, "--iters", "100000", "--eval-interval", "25", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    run = _wait_for_metrics(runs, 2, proc)
    workers = subprocess.run(["pgrep", "-f", "RANK|toygpt_cli train"], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
    ranks = []
    for pid in map(int, workers):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"RANK=1" in environ and pid != proc.pid:
            ranks.append(pid)
    assert ranks, "no rank-1 worker found"
    os.kill(ranks[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors and "another training process of this run ended unexpectedly" in errors[-1]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "ended unexpectedly" in status["message"]
    r = toygpt("train", "--resume", run.name, "--steps", "2")
    assert r.exit_code == 0, r.stderr
