"""`toygpt runs`: list, show, compare, plot and remove runs.

Everything shown here comes from files a user can edit, so it is rendered as plain Text,
never parsed as rich markup, and a damaged run is shown as damaged with its reason. Tables
fit the terminal: columns that do not fit are left out, most useful first kept.
"""

from __future__ import annotations

import json
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
    screen_width,
)
from toygpt_cli.cli.options import uses
from toygpt_cli.cli.runs_show import (
    CHART_POINTS,
    STATUS_STYLE,
    _chart_width,
    _curve,
    _duration,
    _loss,
    _params,
    _run_name,
    _steps,
    show,
)
from toygpt_cli.errors import ToygptError, UsageError

app = typer.Typer(help="List, inspect, compare, plot and remove runs.", invoke_without_command=True)

SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


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


def _relative(folder: Path) -> str:
    """The runs folder as a user names it, with a final / ("runs in runs/")."""
    try:
        shown = str(Path(folder).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        shown = str(folder)
    return os.path.join(shown, "")


def _list_table(rows: list[dict], folder: Path) -> None:
    if not rows:
        err.print(Text(f"no runs in {os.path.join(folder, '')}; start one with `toygpt train`"))
        return
    width = screen_width()
    columns = pick_columns(rows, width)
    shown = _relative(folder)
    room = max(20, width - len("runs in "))
    if len(shown) > room:  # a long path never widens the table past the screen
        shown = "..." + shown[-(room - 3) :]
    table = Table(title=Text(f"runs in {shown}"))
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


app.command()(show)


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
    table.add_column("option", style="bold", no_wrap=True)
    for name in names:
        table.add_column(Text(name), overflow="fold")  # a differing path is seen whole
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
@uses("runs", "output", "runs_dir", runs=["latest"])
def report(o) -> None:
    """One self-contained HTML page of one or more runs (default: the latest): curves, evals,
    samples over time, configuration differences, final eval (default file: report.html in
    the first run)."""
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
