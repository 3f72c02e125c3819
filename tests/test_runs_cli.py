import json
import os

import pytest

from toygpt_cli import plot

from .cli_helpers import toygpt
from .conftest import TINY_ARGS


@pytest.fixture
def two_runs(dirs, corpus_file):
    _, runs = dirs
    for lr in ("1e-3", "3e-3"):
        r = toygpt(
            "train",
            "--data",
            corpus_file,
            *TINY_ARGS,
            "--iters",
            "20",
            "--eval-interval",
            "10",
            "--lr",
            lr,
        )
        assert r.exit_code == 0, r.stderr
    return sorted(runs.iterdir())


def test_list_json_newest_first(two_runs):
    r = toygpt("runs", "list", "--json")
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == [p.name for p in two_runs[::-1]]
    first = rows[0]
    assert first["status"] == "completed" and first["step"] == first["planned_steps"] == 20
    assert first["best_val_loss"] <= first["last_val_loss"] or first["best_val_loss"]
    assert first["params"] > 0 and first["device"] == "cpu"
    assert len(json.loads(toygpt("runs", "list", "--json", "-n", "1").stdout)) == 1
    assert json.loads(toygpt("runs", "--json", "-n", "1").stdout)[0]["name"] == rows[0]["name"]


def test_list_table_is_the_default(two_runs):
    r = toygpt("runs")
    assert r.exit_code == 0
    assert two_runs[0].name[:6] in r.stdout and "completed" in r.stdout


def test_show_prints_config_metrics_chart_samples_files(two_runs):
    r = toygpt("runs", "show", "latest")
    assert r.exit_code == 0, r.stderr
    for expected in (
        "learning_rate",
        "metrics",
        "sample at step 0",
        "sample at step 20",
        "ckpt.pt",
        "│",
    ):
        assert expected in r.stdout, expected


def test_compare_highlights_the_differing_option(two_runs):
    r = toygpt("runs", "compare", "latest", "latest~1", "--json")
    result = json.loads(r.stdout)
    assert result["differing"] == ["learning_rate"]
    table = toygpt("runs", "compare", "latest", "latest~1")
    assert table.exit_code == 0 and "learning_rate" in table.stdout


def test_rm_asks_and_respects_the_answer(two_runs):
    target = two_runs[0]
    r = toygpt_input("n\n", "runs", "rm", target.name)
    assert r.exit_code == 1 and target.exists()
    r = toygpt_input("y\n", "runs", "rm", target.name)
    assert r.exit_code == 0 and not target.exists()
    r = toygpt("runs", "rm", "--yes", two_runs[1].name)
    assert r.exit_code == 0 and not two_runs[1].exists()


def test_rm_refuses_a_running_run(two_runs):
    status = two_runs[0] / "status.json"
    data = json.loads(status.read_text())
    status.write_text(json.dumps(data | {"status": "running", "pid": os.getpid()}))
    r = toygpt("runs", "rm", "--yes", two_runs[0].name)
    assert r.exit_code == 1 and "still training" in r.stderr and two_runs[0].exists()


def test_checkpoint_best_and_last(two_runs):
    for which in ("best", "last"):
        r = toygpt("sample", "--checkpoint", which, "-n", "5", "--seed", "1")
        assert r.exit_code == 0 and f"{which}.pt" in r.stderr.replace("ckpt.pt", "last.pt")


@pytest.mark.skipif(not plot.plotting_available(), reason="matplotlib not installed")
def test_loss_png_written_with_matplotlib(two_runs):
    png = two_runs[0] / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_loss_png_without_matplotlib(dirs, corpus_file, monkeypatch):
    _, runs = dirs
    monkeypatch.setattr(plot, "plotting_available", lambda: False)
    r = toygpt("train", "--data", corpus_file, *TINY_ARGS, "--iters", "10")
    assert r.exit_code == 0, r.stderr
    (run,) = runs.iterdir()
    assert not (run / "loss.png").exists() and (run / "metrics.jsonl").exists()


def toygpt_input(text, *args):
    from typer.testing import CliRunner

    from toygpt_cli.cli.app import app

    return CliRunner().invoke(app, list(args), input=text)
