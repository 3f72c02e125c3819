"""A real training subprocess stopped by SIGINT, SIGTERM and SIGKILL at different moments:
the run's files stay whole and the run resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from toygpt_cli.runs.checkpoint import load_checkpoint

from .cli_helpers import toygpt
from .conftest import TINY_ARGS


def _start(corpus, runs, *extra):
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    cmd = [
        sys.executable,
        "-m",
        "toygpt_cli",
        "train",
        "--data",
        str(corpus),
        *TINY_ARGS,
        "--iters",
        "100000",
        "--eval-interval",
        "25",
        "--threads",
        "1",
        *extra,
    ]
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
    for line_file in ("metrics.jsonl", "samples.jsonl"):
        if not (run / line_file).exists():  # killed before its first record
            continue
        text = (run / line_file).read_text()
        assert text.endswith("\n")
        [json.loads(line) for line in text.splitlines()]
    for json_file in ("config.json", "status.json"):
        json.loads((run / json_file).read_text())
    temp = [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert temp_allowed or not temp  # only a kill -9 mid-write may leave one


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_prints_resume_command(dirs, corpus_file, sig, code):
    _, runs = dirs
    proc = _start(corpus_file, runs)
    run = _wait_for_metrics(runs, 2, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"resume with: toygpt train --resume {run}\n" in stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted"
    step = load_checkpoint(run / "ckpt.pt")["state"]["step"]
    assert step == status["step"] and step >= 25
    _all_files_whole(run)
    r = toygpt("train", "--resume", run.name, "--steps", "5")
    assert r.exit_code == 0, r.stderr
    assert load_checkpoint(run / "ckpt.pt")["state"]["step"] == step + 5


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.7])
def test_sigkill_at_any_moment_leaves_a_resumable_run(dirs, corpus_file, delay):
    _, runs = dirs
    proc = _start(corpus_file, runs, "--save-every", "7")
    run = _wait_for_metrics(runs, 1, proc)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=30)
    _all_files_whole(run, temp_allowed=True)
    from toygpt_cli.runs.folder import Run

    assert Run(run).status()["status"] == "interrupted"  # the dead process is noticed
    step = load_checkpoint(run / "ckpt.pt")["state"]["step"]
    r = toygpt("train", "--resume", run.name, "--steps", "3")
    assert r.exit_code == 0, r.stderr
    assert load_checkpoint(run / "ckpt.pt")["state"]["step"] == step + 3
    _all_files_whole(run)  # the resume swept any temporary file away
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # nothing recorded twice


def test_second_sigint_stops_at_once(dirs, corpus_file):
    _, runs = dirs
    proc = _start(corpus_file, runs, "--eval-iters", "400")  # long evals to interrupt
    run = _wait_for_metrics(runs, 1, proc)
    before = (run / "ckpt.pt").read_bytes()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    ckpt = load_checkpoint(run / "ckpt.pt")  # still loads
    assert ckpt["state"]["step"] >= 0 and len(before) > 0


def test_sample_and_list_while_training(dirs, corpus_file):
    _, runs = dirs
    proc = _start(corpus_file, runs, "--save-every", "5")
    try:
        run = _wait_for_metrics(runs, 2, proc)
        for _ in range(3):  # checkpoints are replaced by a rename: always a whole file
            r = toygpt("sample", "--run", run.name, "--checkpoint", "last", "-n", "10")
            assert r.exit_code == 0, r.stderr
        listing = json.loads(toygpt("runs", "list", "--json").stdout)
        assert listing[0]["status"] == "running"
        assert toygpt("runs", "rm", "--yes", run.name).exit_code == 1  # refused while training
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
