"""The report and the attention view in a real browser (headless Chromium, from file://):
they load with no console error and no request leaving the file, show what they should,
respond to the reader, and stay readable at phone width. Skips where Chromium is absent."""

from __future__ import annotations

import pytest

from toygpt_cli.runs import plot

from ..cli_helpers import toygpt
from .browser import Browser, find_chromium

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed"),
    pytest.mark.skipif(not plot.plotting_available(), reason="matplotlib not installed"),
]
pytest.importorskip("websocket", reason="websocket-client not installed")


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="module")
def pages(two_runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    report, attention = folder / "report.html", folder / "attention.html"
    assert toygpt("runs", "report", *two_runs, "--output", report).exit_code == 0
    result = toygpt("attention", "--run", two_runs[1], "--prompt", "ROMEO:", "--output",
                    attention)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return report, attention


def _clean(browser, page):
    assert browser.problems() == []
    assert browser.requests() == [page.resolve().as_uri()]  # the file itself, nothing else


def test_the_report_shows_both_runs(browser, pages, two_runs, tmp_path):
    report = pages[0]
    browser.size(1100, 900)
    browser.open(report)
    _clean(browser, report)
    shown = browser.js("""(() => {
      const visible = (e) => e.getBoundingClientRect().height > 0;
      const charts = [...document.querySelectorAll('.chart')];
      return {
        charts: charts.length,
        visible: charts.filter(visible).map((c) => c.dataset.axis),
        chartHeight: Math.round(charts[0].getBoundingClientRect().height),
        lines: charts[0].querySelectorAll('path').length,
        legend: charts[0].textContent,
        samples: document.querySelectorAll('details').length,
        diff: [...document.querySelectorAll('tr.diff td:first-child')].map((t) => t.textContent),
        ids: document.querySelectorAll('[id]').length,
        uniqueIds: new Set([...document.querySelectorAll('[id]')].map((e) => e.id)).size,
      };
    })()""")
    assert shown["charts"] == 3 and shown["visible"] == ["step"]
    assert shown["chartHeight"] > 200 and shown["lines"] > 20
    for run in two_runs:
        assert f"{run.name}: val" in shown["legend"]
    assert shown["samples"] == 6  # 3 evals x 2 runs
    assert {"learning_rate", "pos"} <= set(shown["diff"])
    assert shown["ids"] == shown["uniqueIds"]
    # the tabs switch the x axis
    browser.js("document.querySelector('.tabs button[data-axis=tokens]').click()")
    visible = browser.js("[...document.querySelectorAll('.chart')]"
                         ".filter((c) => !c.hidden).map((c) => c.dataset.axis)")  # fmt: skip
    assert visible == ["tokens"]
    assert browser.js("document.querySelector('.chart[data-axis=tokens]')"
                      ".getBoundingClientRect().height") > 200  # fmt: skip
    browser.js("document.querySelector('.tabs button[data-axis=step]').click()")
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert browser.problems() == []


@pytest.mark.parametrize("page", [0, 1], ids=["report", "attention"])
def test_readable_at_phone_width(browser, pages, page):
    browser.size(390, 844, mobile=True)
    try:
        browser.open(pages[page])
        _clean(browser, pages[page])
        wide = browser.js("document.documentElement.scrollWidth")
        assert wide <= 390, f"the page is {wide} px wide on a 390 px screen"
    finally:
        browser.size(1100, 900)


def test_the_attention_view_follows_the_pointer(browser, pages):
    attention = pages[1]
    browser.open(attention)
    _clean(browser, attention)
    assert browser.js("document.querySelectorAll('.head').length") == 4  # 1 layer x 4 heads

    def shading(query: int):
        browser.js(f"document.querySelectorAll('#prompt .ch')[{query}]"
                   ".dispatchEvent(new MouseEvent('mouseenter'))")  # fmt: skip
        return browser.js("""[...document.querySelectorAll('.head')].map((h) =>
            [...h.querySelectorAll('.ch')].map((s) => {
              const m = s.style.background.match(/rgba?\\(([^)]*)\\)/);
              return m ? (m[1].split(',').length === 4 ? +m[1].split(',')[3] : 1) : 0;
            }))""")

    for query in (0, 3, 5):
        heads = shading(query)
        for weights in heads:
            assert sum(weights) == pytest.approx(1.0, abs=0.01)  # the row of that character
            assert all(w == 0 for w in weights[query + 1 :])  # nothing from later ones
    assert shading(0)[0][0] == pytest.approx(1.0, abs=1e-3)  # the first sees only itself
    assert browser.problems() == []
