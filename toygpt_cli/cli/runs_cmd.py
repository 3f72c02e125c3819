"""`toygpt runs`: list, show, compare, plot and remove runs.

Everything shown here comes from files a user can edit, so it is rendered as plain Text,
never parsed as rich markup, and a damaged run is shown as damaged with its reason. Tables
fit the terminal: columns that do not fit are left out, most useful first kept.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from toygpt_cli.cli.charts import line_chart
from toygpt_cli.cli.common import (
    emit,
    err,
    get_current_context,
    out,
    paths,
    print_json_streamed,
    screen_width,
)
from toygpt_cli.cli.options import uses
from toygpt_cli.errors import ToygptError, UsageError

app = typer.Typer(help="List, inspect, compare, plot and remove runs.", invoke_without_command=True)

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "interrupted": "yellow",
    "failed": "red",
    "damaged": "bold red",
}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
SHOWN_SAMPLE = 2_000  # characters of a sample `runs show` prints (--json has them all)
SHOWN_METRICS = (5, 15)  # first and last eval rows `runs show` prints
CHART_POINTS = 400  # most points per curve in a chart


def _loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _params(n) -> str:
    return "-" if not n else f"{n / 1e6:.2f}M"


def _steps(r) -> str:
    if r["step"] is None:
        return "-"
    return f"{r['step']}/{r['planned_steps']}" if r["planned_steps"] else str(r["step"])


def _run_name(r) -> str:
    return f"{r['name']} ({r['label']})" if r.get("label") else r["name"]


def _thin(points: list, limit: int = CHART_POINTS) -> list:
    """At most `limit` evenly spaced points (the last one kept)."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit - 1)] + [points[-1]]


def _curve(records, key: str) -> list[tuple[float, float]]:
    """(step, value) points that can be drawn (a diverged run's NaNs cannot)."""
    points = [(m["step"], m.get(key)) for m in records]
    return _thin([(s, v) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v)])


@app.callback()
@uses("count", "json", "runs_dir")
def _default(o) -> None:
    """With no subcommand, `toygpt runs` lists the runs (same options as `runs list`)."""
    if get_current_context().invoked_subcommand is None:
        _list(o)


@app.command("list")
@uses("count", "json", "runs_dir")
def list_runs(o) -> None:
    """All runs, newest first: label, status, steps, losses, size, data, device, wall time."""
    _list(o)


def _list(o) -> None:
    from toygpt_cli.runs.folder import Run, list_run_dirs

    folder = paths(runs_dir=o.runs_dir).runs_dir
    rows = [Run(p).summary() for p in list_run_dirs(folder)[: o.count]]
    emit(rows, lambda: _list_table(rows, folder), o.json)


# Columns of `runs list`: (header, cell, justify, kept first when space is short: lower).
COLUMNS = [
    ("run", lambda r: r["name"], "left", 0),
    ("status", lambda r: r["status"], "left", 0),
    ("steps", _steps, "right", 0),
    ("best val", lambda r: _loss(r["best_val_loss"]), "right", 0),
    ("last val", lambda r: _loss(r["last_val_loss"]), "right", 0),
    ("label", lambda r: r["label"] or "-", "left", 1),
    ("wall", lambda r: _duration(r["wall_seconds"]), "right", 2),
    ("params", lambda r: _params(r["params"]), "right", 3),
    ("data", lambda r: r["data"] or "-", "left", 4),
    ("device", lambda r: f"{r['device'] or '-'} {SHORT_DTYPE.get(r['dtype'], '')}".strip(),
     "right", 5),
]  # fmt: skip


def pick_columns(rows: list[dict], width: int) -> list[tuple]:
    """The columns that fit in `width`, the most useful first; in their table order."""
    cells = {c[0]: [c[1](r) for r in rows] for c in COLUMNS}
    need = {c[0]: max(len(c[0]), *(len(x) for x in cells[c[0]])) + 3 for c in COLUMNS}
    chosen, used = set(), 1
    for c in sorted(COLUMNS, key=lambda c: c[3]):
        if c[3] == 0 or used + need[c[0]] <= width:
            chosen.add(c[0])
            used += need[c[0]]
    return [c for c in COLUMNS if c[0] in chosen]


def _list_table(rows: list[dict], folder: Path) -> None:
    if not rows:
        err.print(Text(f"no runs in {folder}; start one with `toygpt train`"))
        return
    width = screen_width()
    columns = pick_columns(rows, width)
    table = Table(title=Text(f"runs in {folder}"))
    for header, _, justify, _ in columns:
        table.add_column(header, justify=justify, no_wrap=header in ("run", "status", "steps"))
    for r in rows:
        cells = [Text(cell(r)) for _, cell, _, _ in columns]
        cells[1].stylize(STATUS_STYLE.get(r["status"], ""))
        table.add_row(*cells)
    out.print(table, width=width)
    for r in rows:
        if r["problem"]:
            out.print(Text(f"{r['name']}: damaged: {r['problem']}", style="red"))


@app.command()
@uses("run_arg", "json", "runs_dir")
def show(o) -> None:
    """One run: status and losses, its latest sample, the eval table and curves, then its
    configuration and files."""
    from toygpt_cli.runs.folder import DamagedRun, open_run

    r = open_run(o.run_arg, paths(runs_dir=o.runs_dir).runs_dir)
    summary = r.summary()
    if o.json:  # everything, for machines; records streamed, however many there are
        from toygpt_cli.runs.files import METRIC_FIELDS, SAMPLE_FIELDS, iter_records

        parts: dict = {"summary": summary}
        try:
            parts["config"] = r.config()
        except DamagedRun:
            parts["config"] = None  # the summary's `problem` says why
        for key, kinds in (("metrics", METRIC_FIELDS), ("samples", SAMPLE_FIELDS)):
            path = r.file(f"{key}.jsonl")
            try:
                for _ in iter_records(path, r.name, kinds):  # a first pass: whole, or None
                    pass
                parts[key] = lambda p=path, k=kinds: iter_records(p, r.name, k)
            except DamagedRun:
                parts[key] = None
        print_json_streamed(parts)
        return
    _show(r, summary)


def _show(r, summary: dict) -> None:
    from toygpt_cli.runs.files import METRIC_FIELDS, SAMPLE_FIELDS, bounded_records, iter_records
    from toygpt_cli.runs.folder import DamagedRun

    title = f"run {_run_name(summary)}: {summary['status']}, step {_steps(summary)}"
    out.rule(Text(title))
    if summary["problem"]:
        out.print(Text(f"damaged: {summary['problem']}", style="bold red"))
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    for k, v in (
        ("best val loss", _loss(summary["best_val_loss"])),
        ("last val / train", f"{_loss(summary['last_val_loss'])} / "
                             f"{_loss(summary['last_train_loss'])}"),
        ("wall time", _duration(summary["wall_seconds"])),
        ("parameters", _params(summary["params"])),
        ("data", summary["data"] or "-"),
    ):  # fmt: skip
        facts.add_row(Text(k), Text(v))
    out.print(facts)
    try:
        head, tail, points, count = bounded_records(
            r.file("metrics.jsonl"), r.name, METRIC_FIELDS, *SHOWN_METRICS, CHART_POINTS
        )
        last_sample = None
        for last_sample in iter_records(r.file("samples.jsonl"), r.name, SAMPLE_FIELDS):  # noqa: B007
            pass
    except DamagedRun:
        head, tail, points, count, last_sample = [], [], [], 0, None
    if last_sample is not None:
        text = last_sample.get("text") or ""
        out.rule(f"latest sample, at step {last_sample['step']}", style="dim")
        out.print(text[:SHOWN_SAMPLE], markup=False, highlight=False)
        if len(text) > SHOWN_SAMPLE:
            out.print(Text(f"... ({len(text) - SHOWN_SAMPLE:,} more characters: --json has "
                           "them all)", style="dim"))  # fmt: skip
    if count:
        _metrics_table(head, tail, count)
        curves = {"train": _curve(points, "train_loss"), "val": _curve(points, "val_loss")}
        out.print(line_chart(curves, width=_chart_width()))
    _config(r)
    _files(r)


def _chart_width() -> int:
    return max(20, min(64, screen_width() - 12))


def _metrics_table(head: list, tail: list, count: int) -> None:
    cut = count > len(head) + len(tail)
    title = f"evals (first {len(head)} and last {len(tail)} of {count:,})" if cut else "evals"
    table = Table(title=title)
    for col in ("step", "train", "val", "lr", "tok/s", "elapsed"):
        table.add_column(col, justify="right")
    rows = head + tail if cut else head + tail[len(tail) - (count - len(head)) :]
    for i, m in enumerate(rows):
        if cut and i == len(head):
            table.add_row("...", *[""] * 5)
        lr, tps = m.get("lr"), m.get("tokens_per_sec")
        table.add_row(
            str(m["step"]) + ("*" if "eval_windows" in m else ""),
            _loss(m.get("train_loss")),
            _loss(m.get("val_loss")),
            "-" if lr is None else f"{lr:.2e}",
            "-" if tps is None else f"{tps:,.0f}",
            _duration(m.get("elapsed")),
        )
    out.print(table)
    if any("eval_windows" in m for m in rows):
        out.print(Text("* the quick first eval: fewer windows, never counted as best",
                       style="dim"))  # fmt: skip


def _config(r) -> None:
    from toygpt_cli.runs.folder import DamagedRun

    try:
        config = r.config()
    except DamagedRun:
        return
    out.rule("configuration", style="dim")
    cfg = Table(show_header=False, box=None, pad_edge=False)
    cfg.add_column(style="bold")
    cfg.add_column()
    rows = [(k, v) for s in ("model", "train") for k, v in config.get(s, {}).items()]
    rows += [(f"{k} (resolved)", v) for k, v in config.get("resolved", {}).items()]
    data = config.get("data", {})
    if data:
        chars = data.get("chars")
        shown = f"{data['path']} ({chars:,} chars)" if isinstance(chars, int) else data["path"]
        rows.append(("data", shown))
    rows += [("label", config.get("label") or "-"), ("command", config.get("command", ""))]
    for k, v in rows:
        cfg.add_row(Text(str(k)), Text(str(v)))
    out.print(cfg)


def _files(r) -> None:
    out.rule("files", style="dim")
    try:
        files = sorted(p for p in r.path.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        files = []
        out.print(Text(f"cannot list {r.path}: {exc.strerror}"))
    for p in files:
        try:
            what = f"{p.lstat().st_size / 1e6:,.1f} MB" if not p.is_dir() else "folder"
        except OSError as exc:
            what = exc.strerror or "unreadable"
        out.print(Text(f"{p}  ({what})"))


@app.command()
@uses("runs", "json", "runs_dir")
def compare(o) -> None:
    """Runs side by side: differing options highlighted, losses, val curves in one chart."""
    from toygpt_cli.runs.files import bounded_records
    from toygpt_cli.runs.folder import open_run

    if len(o.runs) < 2:
        raise UsageError("compare needs at least two runs")
    folder = paths(runs_dir=o.runs_dir).runs_dir
    opened = [open_run(ref, folder) for ref in o.runs]
    configs = [r.config() for r in opened]
    summaries = [r.summary() for r in opened]
    names = [_run_name(s) for s in summaries]
    curves = {}
    for r, name in zip(opened, names, strict=True):
        _, _, points, _ = bounded_records(
            r.file("metrics.jsonl"), r.name, _metric_fields(), 0, 0, CHART_POINTS
        )
        curves[name] = _curve(points, "val_loss")
    options: dict[str, list] = {}
    for i, cfg in enumerate(configs):
        for section in ("model", "train", "resolved"):
            for k, v in cfg.get(section, {}).items():
                options.setdefault(k, [None] * len(opened))[i] = v
        options.setdefault("data", [None] * len(opened))[i] = cfg.get("data", {}).get("path")
    differing = sorted(k for k, vals in options.items() if len({json.dumps(v) for v in vals}) > 1)
    warnings = _comparability(names, configs)
    for w in warnings:
        err.print(Text(f"warning: {w}", style="yellow"))
    result = {
        "runs": [r.name for r in opened],
        "differing": differing,
        "options": options,
        "summaries": summaries,
        "warnings": warnings,
    }
    emit(result, lambda: _compare_table(names, options, differing, summaries, curves), o.json)


def _metric_fields():
    from toygpt_cli.runs.files import METRIC_FIELDS

    return METRIC_FIELDS


def _comparability(names: list[str], configs: list[dict]) -> list[str]:
    """Why these runs' losses may not be comparable: other text, other vocabulary."""

    def differ(values: list) -> bool:
        return len({json.dumps(v) for v in values}) > 1

    shas = [c.get("data", {}).get("sha256") for c in configs]
    vocabs = [c.get("vocab") for c in configs]
    found = []
    if differ(shas):
        files = ", ".join(
            f"{n}: {Path(c.get('data', {}).get('path') or '?').name}"
            for n, c in zip(names, configs, strict=True)
        )
        found.append(f"the runs were trained on different data ({files})")
    if differ(vocabs):
        sizes = ", ".join(
            f"{n}: {len(v) if isinstance(v, str) else '?'}"
            for n, v in zip(names, vocabs, strict=True)
        )
        found.append(f"the runs have different vocabularies ({sizes} characters)")
    if found:
        return ["; ".join(found) + ": their losses are not comparable"]
    return []


def _compare_table(names, options, differing, summaries, curves) -> None:
    table = Table(title="configuration (differences highlighted)")
    table.add_column("option", style="bold")
    for name in names:
        table.add_column(Text(name))
    for label, key, fmt in (
        ("status", "status", str),
        ("steps", "step", lambda v: "-" if v is None else str(v)),
        ("best val", "best_val_loss", _loss),
        ("last val", "last_val_loss", _loss),
        ("last train", "last_train_loss", _loss),
        ("wall", "wall_seconds", _duration),
    ):
        table.add_row(label, *(fmt(s[key]) for s in summaries), style="bold")
    for k, vals in options.items():
        style = "bold yellow" if k in differing else "dim"
        table.add_row(Text(k), *(Text(str(v)) for v in vals), style=style)
    out.print(table)
    out.print(line_chart(curves, y_label="val loss", width=_chart_width()))


@app.command()
@uses("run_arg", "output", "runs_dir")
def plot(o) -> None:
    """Redraw a run's loss.png: the training loss, train and val at each eval, and the
    learning-rate schedule."""
    from toygpt_cli.errors import install_hint
    from toygpt_cli.runs.folder import LOSS_PNG, open_run
    from toygpt_cli.runs.plot import plotting_available, write_loss_png

    r = open_run(o.run_arg, paths(runs_dir=o.runs_dir).runs_dir)
    if not plotting_available():
        raise ToygptError(f"drawing loss.png needs matplotlib: {install_hint('plot')}")
    target = Path(o.output) if o.output else r.file(LOSS_PNG)
    if target.is_dir():
        raise ToygptError(f"--output {target} is a folder; give a file name")
    label = r.label()
    if not write_loss_png(target, r, f"{r.name} ({label})" if label else r.name):
        raise ToygptError(f"run {r.name} has no evals yet; nothing to plot")
    err.print(Text(f"wrote {target}"))


@app.command()
@uses("runs", "output", "runs_dir")
def report(o) -> None:
    """One self-contained HTML page of one or more runs: curves, evals, samples over time,
    configuration differences, final eval (default file: report.html in the first run)."""
    from toygpt_cli.reports.report import build, write
    from toygpt_cli.runs.folder import REPORT, open_run

    folder = paths(runs_dir=o.runs_dir).runs_dir
    opened = [open_run(ref, folder) for ref in o.runs]
    target = Path(o.output) if o.output else opened[0].file(REPORT)
    write(target, build(opened))
    err.print(Text(f"wrote {target} (open it in a browser; it needs no network)"))
    out.print(Text(str(target)))


@app.command("rm")
@uses("runs", "yes", "force", "runs_dir")
def remove(o) -> None:
    """Delete runs: their own files, then the folder. Asks first unless --yes; refuses a
    run being trained, and any folder holding files toygpt did not write."""
    from toygpt_cli.runs.removal import check_removable, remove_run, run_to_remove

    folder = paths(runs_dir=o.runs_dir).runs_dir
    chosen = {}
    for ref in o.runs:
        r = run_to_remove(ref, folder)
        chosen.setdefault(os.path.realpath(r.path), r)
    targets = list(chosen.values())
    for r in targets:  # every check passes before anything is deleted
        check_removable(r, o.force)
    shown = ", ".join(os.path.abspath(r.path) for r in targets)
    what = f"{len(targets)} runs: {shown}" if len(targets) > 1 else f"run {shown}"
    if not o.yes:
        try:
            sure = typer.confirm(f"delete {what}?", err=True)
        except typer.Abort:
            if sys.stdin is not None and sys.stdin.isatty():
                raise  # Ctrl-C or Ctrl-D at the prompt: stopped
            raise ToygptError("no answer (the input ended); nothing removed: pass --yes to "
                              "remove without asking") from None  # fmt: skip
        if not sure:
            err.print("nothing removed")
            raise typer.Exit(1)
    for r in targets:
        remove_run(r, o.force)
        err.print(Text(f"removed {os.path.abspath(r.path)}"))
