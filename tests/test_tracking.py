"""Watching a run: TensorBoard events, run labels, progress lines, a closed output pipe."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from .cli_helpers import toygpt
from .conftest import TINY_ARGS

needs_tb = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed"
)


@needs_tb
def test_tensorboard_events_hold_losses_lr_speed_and_samples(dirs, corpus_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, runs = dirs
    r = toygpt(
        "train", "--data", corpus_file, *TINY_ARGS, "--iters", "40", "--eval-interval", "20",
        "--tensorboard",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "lr", "tokens_per_sec"} <= set(tags["scalars"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = events.Scalars("loss/val")  # float32 in the event file
    assert [e.step for e in val] == [m["step"] for m in metrics]
    assert all(abs(e.value - m["val_loss"]) < 1e-5 for e, m in zip(val, metrics, strict=True))
    samples = events.Tensors("sample/text_summary")
    assert [s.step for s in samples] == [0, 20, 40]
    first = json.loads((run / "samples.jsonl").read_text().splitlines()[0])["text"]
    assert first in samples[0].tensor_proto.string_val[0].decode()
    # A resume keeps writing to the same place.
    assert toygpt("train", "--resume", "--steps", "20").exit_code == 0
    events = EventAccumulator(str(run / "tb")).Reload()
    assert [e.step for e in events.Scalars("loss/val")][-1] == 60


def test_tensorboard_without_the_extra_is_one_line(dirs, corpus_file, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2", "--tensorboard")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "error: --tensorboard needs the tensorboard package: pip install 'toygpt[tensorboard]'"
    )
    assert not runs.exists() or not list(runs.iterdir())


def test_a_run_label_is_kept_and_names_the_run(dirs, corpus_file):
    _, runs = dirs
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "2", "--name", "baseline")
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    assert json.loads((run / "config.json").read_text())["label"] == "baseline"
    listing = json.loads(toygpt("runs", "list", "--json").stdout)
    assert listing[0]["label"] == "baseline"
    r = toygpt("sample", "--run", "baseline", "-n", "5", "--seed", "1")
    assert r.exit_code == 0, r.stderr


def test_progress_lines_show_the_estimate_and_the_last_eval_on_resume(dirs, corpus_file):
    r = toygpt(
        "train", "--data", corpus_file, *TINY_ARGS, "--iters", "300", "--eval-interval", "100"
    )
    assert r.exit_code == 0, r.stderr
    assert "estimate: about 0:00:" in r.stderr and "more steps" in r.stderr
    r = toygpt("train", "--resume", "--steps", "10")
    assert r.exit_code == 0, r.stderr
    assert "last eval: step    300/310  train" in r.stderr


def test_budget_runs_never_show_a_placeholder_step_count(dirs, corpus_file):
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "0", "--max-time", "2s")
    assert r.exit_code == 0, r.stderr
    assert "for 0:00:02:" in r.stderr and "/0 " not in r.stderr and "1000000" not in r.stderr
    listing = json.loads(toygpt("runs", "list", "--json").stdout)[0]
    assert listing["planned_steps"] in (None, listing["step"])


def test_training_goes_on_when_its_output_pipe_closes(dirs, corpus_file):
    _, runs = dirs
    env = dict(os.environ, TOYGPT_RUNS_DIR=str(runs), CI="1")
    cmd = [sys.executable, "-m", "toygpt_cli", "train", "--data", str(corpus_file), *TINY_ARGS]
    cmd += ["--iters", "200", "--eval-interval", "10", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    proc.stderr.readline()  # like `| head -1`: read one line, then go away
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0
    (run,) = runs.iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 200
