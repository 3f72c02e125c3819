"""`toygpt sweep`: a grid of tiny trials, killed and continued, failing combinations as
rows, --json, --jobs, and the SLURM array job that shares the sweep folder."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from toygpt_cli.recipes.sweep import Plan, parse_axes

from ..cli_helpers import toygpt

BASE = ["--iters", "30", "--config", "{cfg}"]
TINY_TOML = (
    "n_layer = 1\nn_head = 4\nblock_size = 16\nbatch_size = 8\neval_iters = 2\n"
    "eval_interval = 15\nsample_chars = 0\nthreads = 1\n"
)


@pytest.fixture
def tiny(dirs, corpus_file, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    return [a.format(cfg=cfg) for a in BASE] + ["--data", str(corpus_file)]


def _rows(name):
    r = toygpt("sweep", "show", name, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_a_two_by_two_grid_makes_four_runs_and_a_table(dirs, tiny):
    _, runs = dirs
    r = toygpt("sweep", "run", "grid", "--set", "n_embd=32,48", "--set", "learning_rate=1e-3,3e-3",
               *tiny, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    rows = _rows("grid")
    assert len(rows) == 4 and all(row["status"] == "completed" for row in rows)
    losses = [row["val_loss"] for row in rows]
    assert losses == sorted(losses) and all(2.0 < v < 4.5 for v in losses)
    listed = json.loads(toygpt("runs", "--json").stdout)
    assert sorted(x["label"] for x in listed) == ["grid/0", "grid/1", "grid/2", "grid/3"]
    folder = runs / "sweeps" / "grid"
    assert (folder / "results.csv").read_text().count("\n") == 5
    assert (folder / "curves.png").exists()
    assert "val loss" in toygpt("sweep", "show", "grid").stdout
    # a trial is an ordinary run: it samples
    assert toygpt("sample", "--run", "grid/2", "-n", "10").exit_code == 0


def test_a_failing_combination_is_a_row_and_the_sweep_goes_on(dirs, tiny):
    r = toygpt("sweep", "run", "odd", "--set", "n_embd=30,32", *tiny, "--quiet")
    assert r.exit_code == 0, r.stderr
    rows = {row["params"]["n_embd"]: row for row in _rows("odd")}
    assert rows[32]["status"] == "completed"
    assert rows[30]["status"] == "failed" and "divisible by n_head" in rows[30]["message"]
    assert "trial 0 failed" in r.stderr


def test_running_it_again_never_repeats_a_finished_trial(dirs, tiny):
    assert toygpt("sweep", "run", "again", "--set", "n_embd=32,48", *tiny, "--quiet").exit_code == 0
    results = dirs[1] / "sweeps" / "again" / "trials"
    before = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/result.json")}
    r = toygpt("sweep", "run", "again")  # the plan as saved
    assert r.exit_code == 0 and "2 done, 0 to run" in r.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/result.json")}
    assert before == after
    r = toygpt("sweep", "run", "again", "--set", "n_embd=64", *tiny)
    assert r.exit_code == 2 and "exists with another plan" in r.stderr


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_continues_where_it_stopped(dirs, tiny):
    _, runs = dirs
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    args = [a if a != "30" else "400" for a in tiny]  # long enough trials to be killed in
    cmd = [sys.executable, "-m", "toygpt_cli", "sweep", "run", "kill", "--set", "n_embd=32,48",
           "--set", "learning_rate=1e-3,3e-3", *args, "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    trials = runs / "sweeps" / "kill" / "trials"
    while time.monotonic() < deadline and len(list(trials.glob("*/result.json"))) < 1:
        time.sleep(0.1)
    time.sleep(1.5)  # into the second trial
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert finished, "no trial finished before the kill"
    r = toygpt("sweep", "run", "kill", "--quiet")
    assert r.exit_code == 0, r.stderr
    rows = _rows("kill")
    assert [row["status"] for row in rows] == ["completed"] * 4
    for name, mtime in finished.items():  # finished trials were not run again
        assert (trials / name / "result.json").stat().st_mtime_ns == mtime
    labels = [x["label"] for x in json.loads(toygpt("runs", "--json").stdout)]
    assert sorted(labels) == ["kill/0", "kill/1", "kill/2", "kill/3"]  # the half-done resumed


@pytest.mark.slow
def test_jobs_run_trials_side_by_side(dirs, tiny):
    r = toygpt("sweep", "run", "jobs", "--set", "n_embd=32,48", "--jobs", "2", *tiny)
    assert r.exit_code == 0, r.stderr
    assert [row["status"] for row in _rows("jobs")] == ["completed"] * 2


def test_a_slurm_array_job_runs_trials_of_the_same_sweep_folder(dirs, tiny):
    _, runs = dirs
    r = toygpt("sweep", "run", "cluster", "--set", "n_embd=32,48", *tiny, "--emit", "slurm")
    assert r.exit_code == 0, r.stderr
    script = runs / "sweeps" / "cluster" / "slurm.sh"
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text
    assert 'sweep trial cluster "$SLURM_ARRAY_TASK_ID"' in text and str(runs.resolve()) in text
    assert [row["status"] for row in _rows("cluster")] == ["pending", "pending"]
    # what array task 1 runs; the table collects whatever has finished
    assert toygpt("sweep", "trial", "cluster", "1", "--quiet").exit_code == 0
    rows = {row["trial"]: row for row in _rows("cluster")}
    assert rows[1]["status"] == "completed" and rows[0]["status"] == "pending"


def test_random_search_draws_reproducible_trials_in_range(tmp_path):
    axes = parse_axes(["learning_rate=1e-4..1e-2:log", "n_embd=32,48", "dropout=0..0.2"])
    plan = Plan.create("rand", {}, axes, "x.txt", tmp_path, random_trials=6)
    again = Plan.load("rand", tmp_path)
    assert [t.params for t in plan.trials] == [t.params for t in again.trials]
    for t in plan.trials:
        assert 1e-4 <= t.params["learning_rate"] <= 1e-2 and t.params["n_embd"] in (32, 48)
        assert 0 <= t.params["dropout"] <= 0.2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("n_embdd=3", "not a training option"),
        ("n_embd", "takes name=v1,v2"),
        ("n_embd=x", "n-embd must be an integer"),
        ("iters=5", "--iters or --max-time"),
        ("learning_rate=1..0.1", "needs low < high"),
    ],  # fmt: skip
)
def test_bad_sets_are_one_line(dirs, tiny, spec, message):
    r = toygpt("sweep", "run", "bad", "--set", spec, *tiny)
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_range_needs_random_and_an_unknown_sweep_is_one_line(dirs, tiny):
    r = toygpt("sweep", "run", "r", "--set", "learning_rate=1e-3..1e-2", *tiny)
    assert r.exit_code == 2 and "needs --random N" in r.stderr
    r = toygpt("sweep", "show", "nope")
    assert r.exit_code == 1 and "no sweep 'nope'" in r.stderr
    r = toygpt("sweep", "run", "../up", "--set", "n_embd=32", *tiny)
    assert r.exit_code == 2 and "plain folder name" in r.stderr


def test_a_sweep_of_the_compiling_preset_compiles_only_trials_that_earn_it_back(dirs, tiny):
    _, runs = dirs
    for name, budget, want in (("short", "1m", False), ("long", "10m", True)):
        r = toygpt("sweep", "run", name, "--preset", "cpu", "--max-time", budget,
                   "--set", "n_embd=32,48", "--emit", "slurm", *tiny[-2:])  # fmt: skip
        assert r.exit_code == 0, r.stderr
        plan = json.loads((runs / "sweeps" / name / "sweep.json").read_text())
        assert plan["base"]["compile"] is want, name
