"""The run report: one self-contained HTML page for one or more runs (`toygpt runs report`).

Everything is inside the file: the charts are drawn by matplotlib as inline SVG, the few
lines of script and style are in the page, and nothing is fetched, so it opens from file://
offline, in any browser, on a phone too. It shows the loss curves with the learning rate
(runs overlaid; by step, tokens or wall time), the evals, the samples written at each
eval, the configuration with what differs between runs highlighted, and the final
`toygpt eval` results.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from typing import Any

from toygpt_cli.errors import ToygptError
from toygpt_cli.runs.files import METRIC_FIELDS, SAMPLE_FIELDS, bounded_records, iter_records
from toygpt_cli.runs.folder import EVAL, Run
from toygpt_cli.runs.plot import require_matplotlib

SHOWN_EVALS = (5, 25)  # first and last eval rows of a long run
SHOWN_SAMPLES = 40  # samples per run (evenly spread over the run when there are more)
SAMPLE_CHARS = 2_000  # characters of one sample shown
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]
AXES = {"step": "step", "tokens": "tokens seen", "time": "wall time (s)"}


def build(runs: list[Run]) -> str:
    """The report page for `runs` (each checked readable first: a damaged one is one line)."""
    plt = require_matplotlib("the report")
    parts = [_Run(r) for r in runs]
    charts = {axis: _own_ids(_curves(plt, parts, axis), axis) for axis in AXES}
    body = [
        f"<h1>{_e(' vs '.join(p.title for p in parts))}</h1>",
        _summary(parts),
        '<h2>Loss</h2><div class="tabs" role="tablist">'
        + "".join(
            f'<button data-axis="{a}"{" class=on" if a == "step" else ""}>by {a}</button>'
            for a in AXES
        )  # fmt: skip
        + "</div>"
        + "".join(
            f'<div class="chart" data-axis="{a}"{"" if a == "step" else " hidden"}>{svg}</div>'
            for a, svg in charts.items()
        ),  # fmt: skip
        "<h2>Evals</h2>" + "".join(p.evals_table() for p in parts),
        "<h2>Samples over time</h2>" + "".join(p.samples_html() for p in parts),
        "<h2>Configuration</h2>" + _config_table(parts),
        "<h2>Final eval</h2>" + "".join(p.final_eval() for p in parts),
    ]
    return PAGE.replace("__TITLE__", _e(" vs ".join(p.name for p in parts))).replace(
        "__BODY__", "\n".join(body)
    )


def _e(text: Any) -> str:
    return html.escape(str(text))


class _Run:
    """What the report shows of one run, read once."""

    def __init__(self, run: Run):
        self.run, self.name, self.title = run, run.name, run.title
        self.config = run.config()
        self.summary = run.summary()
        metrics = run.file("metrics.jsonl")
        self.head, self.tail, self.points, self.count = bounded_records(
            metrics, run.name, METRIC_FIELDS, *SHOWN_EVALS, 400
        )
        self.trace = run.thinned("trace")
        train = self.config.get("train", {})
        resolved = self.config.get("resolved", {})
        block = self.config.get("model", {}).get("block_size") or 0
        batch = resolved.get("effective_batch_size") or train.get("batch_size") or 0
        self.tokens_per_step = block * batch

    def x(self, records: list[dict], axis: str) -> list[float]:
        if axis == "tokens":
            return [r["step"] * self.tokens_per_step for r in records]
        if axis == "time":
            return [r.get("elapsed") or 0.0 for r in records]
        return [r["step"] for r in records]

    def evals_table(self) -> str:
        cut = self.count > len(self.head) + len(self.tail)
        rows = self.head + self.tail if cut else (self.head + self.tail)[-self.count :]
        seen, lines = set(), []
        for i, m in enumerate(rows):
            if id(m) in seen:
                continue
            seen.add(id(m))
            if cut and i == len(self.head):
                lines.append('<tr><td colspan="5">...</td></tr>')
            lines.append(
                "<tr>" + "".join(f"<td>{c}</td>" for c in (
                    m["step"], _loss(m.get("train_loss")), _loss(m.get("val_loss")),
                    "-" if m.get("lr") is None else f"{m['lr']:.2e}",
                    "-" if m.get("elapsed") is None else f"{m['elapsed']:.0f} s")) + "</tr>"
            )  # fmt: skip
        note = f" (first {len(self.head)} and last {len(self.tail)} of {self.count})" if cut else ""
        return (f"<h3>{_e(self.title)}{note}</h3><div class=scroll><table><tr><th>step</th>"
                "<th>train</th><th>val</th><th>lr</th><th>time</th></tr>"
                + "".join(lines) + "</table></div>")  # fmt: skip

    def samples_html(self) -> str:
        samples = list(iter_records(self.run.file("samples.jsonl"), self.name, SAMPLE_FIELDS))
        if len(samples) > SHOWN_SAMPLES:
            step = len(samples) / SHOWN_SAMPLES
            samples = [samples[int(i * step)] for i in range(SHOWN_SAMPLES - 1)] + samples[-1:]
        items = "".join(
            f"<details{' open' if i == len(samples) - 1 else ''}><summary>step {s['step']}"
            f"</summary><pre>{_e((s.get('text') or '')[:SAMPLE_CHARS])}</pre></details>"
            for i, s in enumerate(samples)
        )
        return f"<h3>{_e(self.title)}</h3>" + (items or "<p>no samples</p>")

    def final_eval(self) -> str:
        try:
            result = json.loads(self.run.file(EVAL).read_text(encoding="utf-8"))
            splits = result["splits"]
            rows = "".join(
                f"<tr><td>{_e(name)}</td><td>{s['loss']:.4f}</td><td>{s['bits_per_char']:.4f}"
                f"</td><td>{s['perplexity']:.3f}</td><td>{s.get('scored_chars', '-'):,}</td></tr>"
                for name, s in splits.items()
            )
        except (OSError, ValueError, KeyError, TypeError):
            return (f"<h3>{_e(self.title)}</h3><p>not evaluated yet: "
                    f"<code>toygpt eval --run {_e(self.name)}</code></p>")  # fmt: skip
        return (f"<h3>{_e(self.title)} ({_e(result.get('checkpoint'))}, step "
                f"{_e(result.get('step'))})</h3><table><tr><th>split</th><th>loss</th>"
                "<th>bits/char</th><th>perplexity</th><th>characters</th></tr>"
                f"{rows}</table>")  # fmt: skip


def _loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _summary(parts: list[_Run]) -> str:
    rows = "".join(
        f'<tr><td><span class="dot" style="background:{COLORS[i % len(COLORS)]}"></span>'
        f"{_e(p.title)}</td><td>{_e(p.summary['status'])}</td><td>{_e(p.summary['step'])}</td>"
        f"<td>{_loss(p.summary['best_val_loss'])}</td><td>{_loss(p.summary['last_val_loss'])}"
        f"</td><td>{_e(p.summary.get('data') or '-')}</td></tr>"
        for i, p in enumerate(parts)
    )
    head = "".join(f"<th>{h}</th>" for h in ("run", "status", "steps", "best val", "last val",
                                             "data"))  # fmt: skip
    return f"<div class=scroll><table><tr>{head}</tr>{rows}</table></div>"


def _curves(plt, parts: list[_Run], axis: str) -> str:
    """Train (dashed) and val (solid) loss of every run, the learning rate on the right."""
    with plt.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, searchable
        return _draw_curves(plt, parts, axis)


def _draw_curves(plt, parts: list[_Run], axis: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    lr_ax = ax.twinx()
    for i, p in enumerate(parts):
        color = COLORS[i % len(COLORS)]
        trace = _finite(p.trace, "loss")
        ax.plot(p.x(trace, axis), [r["loss"] for r in trace], color=color, alpha=0.25,
                linewidth=1)  # fmt: skip
        rates = _finite(p.trace or p.points, "lr")
        lr_ax.plot(p.x(rates, axis), [r["lr"] for r in rates], color=color, linestyle=":",
                   linewidth=1)  # fmt: skip
        for key, style in (("train_loss", "--"), ("val_loss", "-")):
            recs = _finite(p.points, key)
            ax.plot(p.x(recs, axis), [m[key] for m in recs], style, color=color, marker=".",
                    label=f"{p.title}: {key.split('_')[0]}")  # fmt: skip
    ax.set_xlabel(AXES[axis])
    ax.set_ylabel("loss (nats/char)")
    lr_ax.set_ylabel("learning rate (dotted)")
    lr_ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prologue: the SVG is inline


def _own_ids(svg: str, prefix: str) -> str:
    """The SVG with its ids (and the references to them) prefixed: matplotlib numbers ids
    the same way in every figure, and three inline charts share one page."""
    ids = set(re.findall(r'id="([^"]+)"', svg))
    return re.sub(
        r'(id="|#)([A-Za-z_][\w.-]*)(?=["\)])',
        lambda m: m.group(1) + prefix + "-" + m.group(2) if m.group(2) in ids else m.group(0),
        svg,
    )


def _finite(records: list[dict], key: str) -> list[dict]:
    """The records whose `key` can be drawn (a number, not NaN or infinite)."""
    return [r for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def _config_table(parts: list[_Run]) -> str:
    options: dict[str, list] = {}
    for i, p in enumerate(parts):
        for section in ("model", "train", "resolved"):
            for key, value in (p.config.get(section) or {}).items():
                options.setdefault(key, [None] * len(parts))[i] = value
        options.setdefault("data", [None] * len(parts))[i] = (p.config.get("data") or {}).get(
            "path"
        )
    head = "".join(f"<th>{_e(p.title)}</th>" for p in parts)
    rows = []
    for key, values in options.items():
        differs = len({json.dumps(v) for v in values}) > 1
        cls = ' class="diff"' if differs else ""
        rows.append(f"<tr{cls}><td>{_e(key)}</td>"
                    + "".join(f"<td>{_e(v)}</td>" for v in values) + "</tr>")  # fmt: skip
    legend = '<p class="note">Rows that differ between the runs are highlighted.</p>'
    return (legend if len(parts) > 1 else "") + (
        f"<div class=scroll><table><tr><th>option</th>{head}</tr>{''.join(rows)}</table></div>"
    )


def write(path, page: str) -> None:
    from toygpt_cli.storage.files import write_atomic

    if path.is_dir():
        raise ToygptError(f"--output {path} is a folder; give a file name")
    write_atomic(path, lambda f: f.write(page.encode("utf-8")))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>toygpt: __TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.4rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
td, th { border-bottom: 1px solid #eee; padding: 0.2rem 0.6rem; text-align: left; }
tr.diff td { background: #fff3bf; font-weight: 600; }
.scroll { overflow-x: auto; }
.chart svg { width: 100%; height: auto; }
.tabs button { border: 1px solid #bbb; background: #f6f6f6; padding: 0.3rem 0.8rem;
       border-radius: 4px; cursor: pointer; margin-right: 0.3rem; }
.tabs button.on { background: #1f77b4; color: white; border-color: #1f77b4; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.6rem; border-radius: 4px;
       font-size: 0.85rem; }
.dot { display: inline-block; width: 0.7rem; height: 0.7rem; border-radius: 50%;
       margin-right: 0.4rem; }
.note { color: #666; font-size: 0.9rem; }
details summary { cursor: pointer; }
</style></head><body>
__BODY__
<script>
const buttons = document.querySelectorAll(".tabs button");
buttons.forEach((button) => {
  button.addEventListener("click", () => {
    buttons.forEach((b) => b.classList.toggle("on", b === button));
    document.querySelectorAll(".chart").forEach((chart) => {
      chart.hidden = chart.dataset.axis !== button.dataset.axis;
    });
  });
});
</script>
</body></html>
"""
