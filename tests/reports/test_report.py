"""`toygpt runs report`: one self-contained page for one or more runs, with both runs'
curves, evals, samples over time, the configuration difference and the final eval."""

from __future__ import annotations

import json
import re

import pytest

from toygpt_cli.runs import plot

from ..cli_helpers import toygpt

pytestmark = pytest.mark.skipif(not plot.plotting_available(), reason="matplotlib not installed")


@pytest.fixture(scope="module")
def page(two_runs, tmp_path_factory):
    assert toygpt("eval", "--run", two_runs[0], "--split", "val").exit_code == 0
    target = tmp_path_factory.mktemp("report") / "two.html"
    result = toygpt("runs", "report", *two_runs, "--output", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(target)
    return target.read_text(encoding="utf-8")


def test_the_page_needs_nothing_from_outside(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and not re.search(r"url\((?!#)", page)
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)) > 0  # three inline charts, no id twice
    assert page.count("<svg") == 3  # the loss chart by step, tokens and wall time


def test_both_runs_are_drawn_in_each_chart(page, two_runs):
    for chart in re.findall(r'<div class="chart".*?</svg>', page, re.DOTALL):
        for run in two_runs:
            assert f"{run.name}: val" in chart and f"{run.name}: train" in chart


def test_samples_over_time_for_both_runs(page, two_runs):
    samples = page[page.index("<h2>Samples over time</h2>") : page.index("<h2>Configuration")]
    for run in two_runs:
        assert run.name in samples
        steps = [json.loads(line)["step"] for line in (run / "samples.jsonl").open()]
        assert steps == [0, 20, 40]
    assert samples.count("<summary>step 20</summary>") == 2


def test_the_configuration_difference_is_highlighted(page):
    config = page[page.index("<h2>Configuration</h2>") : page.index("<h2>Final eval")]
    differ = set(re.findall(r'<tr class="diff"><td>([^<]+)</td>', config))
    assert {"learning_rate", "pos"} <= differ
    assert "n_embd" not in differ and "batch_size" not in differ


def test_the_final_eval_is_shown_where_there_is_one(page, two_runs):
    final = page[page.index("<h2>Final eval</h2>") :]
    assert "bits/char" in final
    assert f"toygpt eval --run {two_runs[1].name}" in final  # the other is not evaluated yet


def test_the_default_file_is_in_the_first_run(two_runs):
    result = toygpt("runs", "report", two_runs[1])
    assert result.exit_code == 0, result.stderr
    assert (two_runs[1] / "report.html").exists()


def test_without_runs_it_reports_the_latest(two_runs, tmp_path):
    target = tmp_path / "latest.html"
    env = {"TOYGPT_RUNS_DIR": str(two_runs[0].parent)}
    result = toygpt("runs", "report", "--output", target, env=env)
    assert result.exit_code == 0, result.stderr
    page = target.read_text(encoding="utf-8")
    newest, older = (row["name"] for row in json.loads(toygpt("runs", "--json", env=env).stdout))
    assert newest in page and older not in page


@pytest.mark.parametrize(
    "args, message",
    [(["no-such-run"], "no-such-run"), (["{run}", "--output", "{tmp}"], "is a folder"),
     (["{run}", "--output", "{tmp}/missing/r.html"], "missing")],
    ids=["unknown run", "output is a folder", "no such folder"],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(two_runs, tmp_path, args, message):
    args = [a.replace("{run}", str(two_runs[0])).replace("{tmp}", str(tmp_path)) for a in args]
    before = sorted(p.name for p in two_runs[0].iterdir())
    result = toygpt("runs", "report", *args)
    assert result.exit_code in (1, 2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    assert sorted(p.name for p in two_runs[0].iterdir()) == before
