import json
import shutil

import pytest

from toygpt_cli.runs import plot

from ..cli_helpers import toygpt
from ..conftest import FIXTURE_CORPUS, TINY_ARGS
from ..fake_runs import make_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny runs differing in their learning rate, trained once for the module."""
    root = tmp_path_factory.mktemp("two_runs")
    corpus = root / "tiny.txt"
    corpus.write_text(FIXTURE_CORPUS.read_text(encoding="utf-8")[:30_000])
    for lr in ("1e-3", "3e-3"):
        env = {"TOYGPT_RUNS_DIR": str(root / "runs"), "CI": "1"}
        args = ["--iters", "20", "--eval-interval", "10", "--lr", lr]
        r = toygpt("train", "--data", corpus, *TINY_ARGS, *args, env=env)
        assert r.exit_code == 0, r.stderr
    return root / "runs"


@pytest.fixture
def two_runs(dirs, trained):
    """A copy of the two runs in this test's runs folder (a test may change its copy)."""
    _, runs = dirs
    shutil.copytree(trained, runs)
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


def test_show_leads_with_status_losses_and_sample_then_config_and_files(two_runs):
    r = toygpt("runs", "show", "latest")
    assert r.exit_code == 0, r.stderr
    order = ["completed", "best val loss", "latest sample, at step 20", "evals", "│",
             "learning_rate", "ckpt.pt"]  # fmt: skip
    places = [r.stdout.index(text) for text in order]
    assert places == sorted(places), r.stdout


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
    return toygpt(*args, input=text)


# -- listing what users and crashes leave behind (hand-made run folders, no training) ----------


@pytest.fixture
def odd_runs(dirs):
    """A good run, runs with damaged files, and user text that looks like rich markup."""
    _, runs = dirs
    make_run(runs, "20261123-201501", {"label": "base"})
    markup = make_run(runs, "20261123-201502", {"label": "[bold]x[/]"}, status="[]unknown[/]")
    (make_run(runs, "20261123-201503") / "metrics.jsonl").write_text("5\n")
    (make_run(runs, "20261123-201504") / "config.json").write_text('{"model": {"n_la')
    (make_run(runs, "20261123-201505") / "status.json").write_text('{"pid": ' + "9" * 31 + "}")
    return runs, markup


def test_one_odd_run_never_breaks_the_listing(odd_runs):
    r = toygpt("runs", env={"COLUMNS": "160"})  # room for every column
    assert r.exit_code == 0, r.stderr
    assert "[]unknown[/]" in r.stdout and "[bold]x[/]" in r.stdout  # shown, not parsed
    assert "20261123-201503: damaged: metrics.jsonl line 1: not a record: 5" in r.stdout
    assert "20261123-201504: damaged: config.json is not valid JSON" in r.stdout
    assert "20261123-201505: damaged: status.json: pid 9999" in r.stdout
    assert "base" in r.stdout and "tiny.txt" in r.stdout  # label and data columns
    rows = {row["name"]: row for row in json.loads(toygpt("runs", "list", "--json").stdout)}
    assert len(rows) == 5
    assert rows["20261123-201501"]["status"] == "completed"
    assert rows["20261123-201501"]["label"] == "base"
    assert rows["20261123-201501"]["data"] == "tiny.txt"
    assert [rows[n]["status"] for n in ("20261123-201503", "20261123-201504")] == ["damaged"] * 2


def test_show_of_a_damaged_run_says_why(odd_runs):
    r = toygpt("runs", "show", "20261123-201503")
    assert r.exit_code == 0, r.stderr
    assert "damaged: metrics.jsonl line 1: not a record: 5" in r.stdout
    shown = json.loads(toygpt("runs", "show", "20261123-201504", "--json").stdout)
    assert shown["config"] is None and shown["summary"]["status"] == "damaged"
    r = toygpt("runs", "show", "[bold]x[/]")  # a label names a run too
    assert r.exit_code == 0 and "20261123-201502" in r.stdout and "[]unknown[/]" in r.stdout


def test_compare_of_a_damaged_run_is_one_line(odd_runs):
    r = toygpt("runs", "compare", "20261123-201501", "20261123-201504")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "run 20261123-201504 is damaged: config.json" in r.stderr
    r = toygpt("runs", "compare", "20261123-201501", "20261123-201503")
    assert r.exit_code == 1 and r.stdout == "", r.stdout  # refused before any output
    assert "run 20261123-201503 is damaged: metrics.jsonl line 1" in r.stderr


def test_compare_warns_when_runs_differ_in_data_or_vocabulary(dirs):
    _, runs = dirs
    make_run(runs, "20261123-201501")
    make_run(runs, "20261123-201502", {"label": "same"})
    make_run(
        runs,
        "20261123-201503",
        {"data": {"path": "/d/other.txt", "sha256": "cd" * 32, "chars": 9}, "vocab": "xyz"},
    )
    same = toygpt("runs", "compare", "20261123-201501", "same", "--json")
    assert same.exit_code == 0 and json.loads(same.stdout)["warnings"] == []
    assert "warning" not in same.stderr
    r = toygpt("runs", "compare", "20261123-201501", "20261123-201503", "--json")
    (warning,) = json.loads(r.stdout)["warnings"]
    assert "different data" in warning and "other.txt" in warning
    assert "different vocabularies" in warning and "not comparable" in warning
    assert r.stderr.strip() == f"warning: {warning}"
    table = toygpt("runs", "compare", "20261123-201501", "20261123-201503")
    assert table.exit_code == 0 and "warning: " in table.stderr


def test_plot_without_matplotlib_names_the_extra(dirs, monkeypatch):
    _, runs = dirs
    make_run(runs, "20261123-201501")
    monkeypatch.setattr(plot, "plotting_available", lambda: False)
    r = toygpt("runs", "plot", "latest")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "[plot]'" in r.stderr and "pip install" in r.stderr
    assert not (runs / "20261123-201501" / "loss.png").exists()


@pytest.mark.skipif(not plot.plotting_available(), reason="matplotlib not installed")
def test_plot_redraws_loss_png_with_the_learning_rate(dirs, tmp_path):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    r = toygpt("runs", "plot", "latest")
    assert r.exit_code == 0, r.stderr
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "curves.png"
    assert toygpt("runs", "plot", run.name, "--output", out).exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    image = plt.imread(out)
    assert image.shape[0] > 100  # a real picture, not an empty file


def test_plot_of_a_run_without_evals_is_one_line(dirs, monkeypatch):
    _, runs = dirs
    (make_run(runs, "20261123-201501") / "metrics.jsonl").write_text("")
    monkeypatch.setattr(plot, "plotting_available", lambda: True)
    r = toygpt("runs", "plot", "latest")
    assert r.exit_code == 1 and "has no evals yet" in r.stderr


ODD_VALUES = [None, True, -1, 1.5, 10**30, float("nan"), "", "[red]x[/]", [], [1], {}, {"a": 1}]


def _mutate(rng, obj):
    if isinstance(obj, dict) and obj and rng.random() < 0.8:
        key = rng.choice(sorted(obj))
        obj[key] = _mutate(rng, obj[key]) if rng.random() < 0.5 else rng.choice(ODD_VALUES)
        return obj
    return rng.choice(ODD_VALUES)


@pytest.mark.parametrize("seed", range(12))
def test_random_damage_never_breaks_a_command(dirs, seed):
    """Any value anywhere in a run's files: every runs command exits 0 or 1 with at most one
    line on stderr, and never a traceback."""
    import random

    rng = random.Random(seed)
    _, runs = dirs
    good, bad = make_run(runs, "20261123-201501"), make_run(runs, "20261123-201502")
    for name in ("config.json", "status.json", "metrics.jsonl", "samples.jsonl"):
        path = bad / name
        if name.endswith(".jsonl"):
            lines = path.read_text().splitlines()
            i = rng.randrange(len(lines))
            lines[i] = json.dumps(_mutate(rng, json.loads(lines[i])))
            text = "\n".join(lines) + "\n"
        else:
            text = json.dumps(_mutate(rng, json.loads(path.read_text())))
        path.write_text(text[: rng.randrange(len(text) + 1)] if rng.random() < 0.2 else text)
    for args in (
        ["runs"],
        ["runs", "list", "--json"],
        ["runs", "show", bad.name],
        ["runs", "show", bad.name, "--json"],
        ["runs", "compare", good.name, bad.name],
        ["runs", "rm", "-y", bad.name],
    ):
        r = toygpt(*args)
        assert r.exit_code in (0, 1), (args, r)  # an exception would have been raised here
        assert len(r.stderr.strip().splitlines()) <= 1 and "Traceback" not in r.stderr, args


@pytest.mark.parametrize("width", [80, 120])
def test_the_list_fits_the_terminal_and_always_shows_status_steps_and_losses(dirs, width):
    _, runs = dirs
    make_run(runs, "20261123-201501", config={"label": "a-rather-long-label"})
    make_run(runs, "20261123-201502", status="interrupted", step=10)
    r = toygpt("runs", env={"COLUMNS": str(width)})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= width for line in lines), max(map(len, lines))
    header = next(line for line in lines if "run" in line and "status" in line)
    for column in ("status", "steps", "best val", "last val"):
        assert column in header, (width, header)
    assert "20/20" in r.stdout and "3.0000" in r.stdout and "interrupted" in r.stdout
    assert "10/20" in r.stdout  # the interrupted run: steps of those planned
    if width == 120:  # room for the label and more
        assert "a-rather-long-label" in r.stdout and "data" in header


def test_a_run_its_time_budget_ended_shows_the_steps_it_took(dirs):
    _, runs = dirs
    make_run(runs, "20261123-201501", step=156, planned_steps=5100)  # completed, by its budget
    make_run(runs, "20261123-201502", status="interrupted", step=214, planned_steps=5100)
    rows = toygpt("runs", env={"COLUMNS": "120"}).stdout
    assert "214/5100" in rows and "156/5100" not in rows and " 156 " in rows
    title = toygpt("runs", "show", "20261123-201501").stdout.splitlines()[0]
    assert "completed, step 156" in title and "5100" not in title


@pytest.mark.parametrize(
    "label, shown",
    [
        ("\\[/x] [bold]", "\\[/x] [bold]"),
        ("two\nlines", "two lines"),
        ("y" * 300, "y" * 37 + "..."),
    ],
    ids=["markup", "newline", "long"],
)
def test_an_unknown_run_lists_labels_as_they_are_on_one_line(dirs, label, shown):
    _, runs = dirs
    make_run(runs, "20261123-201501", config={"label": label})
    r = toygpt("runs", "show", "nope")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: no run 'nope'; runs in {runs}/: 20261123-201501 ({shown})"


def test_show_of_a_huge_run_prints_a_bounded_view(dirs):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    with open(run / "metrics.jsonl", "a") as f:
        for step in range(30, 20_030):
            f.write(json.dumps({"step": step, "train_loss": 2.0, "val_loss": 2.1}) + "\n")
    with open(run / "samples.jsonl", "a") as f:
        f.write(json.dumps({"step": 20_030, "text": "x" * 100_000}) + "\n")
    r = toygpt("runs", "show", run.name)
    assert r.exit_code == 0, r.stderr
    assert "first 5 and last 15 of 20,003" in r.stdout
    assert "98,000 more characters" in r.stdout
    assert len(r.stdout) < 20_000


def _peak_mb(args, env) -> tuple[float, str]:
    """Peak memory (MB) of `toygpt ARGS` in a fresh process, and its stderr."""
    import os
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from toygpt_cli.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "finally:\n"
        "    sys.stderr.write(f'peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
                          timeout=300)  # fmt: skip
    peak = int(proc.stderr.rsplit("peak ", 1)[1].split()[0]) / 1024
    return peak, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["runs", "show", "--json", "RUN"], ["runs", "show", "RUN"], ["runs", "plot", "RUN"]],
    ids=["show --json", "show", "plot"],
)
def test_memory_stays_flat_however_long_a_run(dirs, args):
    if args[1] == "plot" and not plot.plotting_available():
        pytest.skip("matplotlib not installed")
    """300,000 evals and a 50 MB damaged line: a run's files are read in bounded memory."""
    _, runs = dirs
    small = make_run(runs, "20261123-201500", config={"name": "small"})
    run = make_run(runs, "20261123-201501")
    with open(run / "metrics.jsonl", "a") as f:
        record = '{{"step": {}, "train_loss": 2.0, "val_loss": 2.1, "lr": 0.001}}\n'
        f.write("".join(record.format(s) for s in range(30, 300_030)))
        f.write('{"step": 1, "junk": "' + "x" * (50 << 20) + '"}\n')
    env = {"TOYGPT_RUNS_DIR": str(runs)}
    base, _ = _peak_mb([*args[:-1], small.name], env)
    peak, stderr = _peak_mb([*args[:-1], run.name], env)
    assert peak - base < 120, (base, peak, stderr)
