"""`toygpt runs`: list, show, compare, plot and remove runs.

Everything shown here comes from files a user can edit, so it is rendered as plain Text,
never parsed as rich markup, and a damaged run is shown as damaged with its reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from toygpt_cli.cli.charts import line_chart
from toygpt_cli.cli.common import JsonFlag, RunsDir, emit, err, handle_errors, out, paths

app = typer.Typer(help="List, inspect, compare, plot and remove runs.", invoke_without_command=True)

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "interrupted": "yellow",
    "failed": "red",
    "damaged": "bold red",
}
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
RunArg = Annotated[str, typer.Argument(help="latest, latest~N, a run name, a label or a path.")]
Count = Annotated[int | None, typer.Option("--count", "-n", min=1, help="Show at most N.")]


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


def _curve(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) points that can be drawn (a diverged run's NaNs cannot)."""
    points = [(m["step"], m.get(key)) for m in metrics]
    return [(s, v) for s, v in points if v is not None and math.isfinite(v)]


@app.callback()
def _default(
    ctx: typer.Context, count: Count = None, json_: JsonFlag = False, runs_dir: RunsDir = None
) -> None:
    """With no subcommand, `toygpt runs` lists the runs (same options as `runs list`)."""
    if ctx.invoked_subcommand is None:
        list_runs(count=count, json_=json_, runs_dir=runs_dir)


@app.command("list")
@handle_errors
def list_runs(count: Count = None, json_: JsonFlag = False, runs_dir: RunsDir = None) -> None:
    """All runs, newest first: label, status, progress, losses, data, size, device, wall time."""
    from toygpt_cli.runs.folder import Run, list_run_dirs

    folder = paths(runs_dir=runs_dir).runs_dir
    rows = [Run(p).summary() for p in list_run_dirs(folder)[:count]]
    emit(rows, lambda: _list_table(rows, folder), json_)


def _list_table(rows: list[dict], folder: Path) -> None:
    if not rows:
        err.print(Text(f"no runs in {folder}; start one with `toygpt train`"))
        return
    table = Table(title=Text(f"runs in {folder}"))
    table.add_column("run", no_wrap=True, min_width=15)  # a name must never be cut
    for col in ("label", "started", "status"):
        table.add_column(col, no_wrap=True)
    for col in ("steps", "best val", "last val", "params", "data", "device", "wall"):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [
            r["name"],
            r["label"] or "-",
            (r["started"] or "-")[5:16].replace("T", " "),
            Text(r["status"], style=STATUS_STYLE.get(r["status"], "")),
            _steps(r),
            _loss(r["best_val_loss"]),
            _loss(r["last_val_loss"]),
            _params(r["params"]),
            r["data"] or "-",
            f"{r['device'] or '-'} {SHORT_DTYPE.get(r['dtype'], '')}".strip(),
            _duration(r["wall_seconds"]),
        ]
        table.add_row(*(c if isinstance(c, Text) else Text(c) for c in cells))
    out.print(table)
    for r in rows:
        if r["problem"]:
            out.print(Text(f"{r['name']}: damaged: {r['problem']}", style="red"))


@app.command()
@handle_errors
def show(run: RunArg = "latest", json_: JsonFlag = False, runs_dir: RunsDir = None) -> None:
    """One run: configuration, metrics, loss curves, first and last samples, files."""
    from toygpt_cli.runs.folder import DamagedRun, open_run

    r = open_run(run, paths(runs_dir=runs_dir).runs_dir)
    summary = r.summary()
    parts: dict = {"summary": summary}
    for key, read in (("config", r.config), ("metrics", r.metrics), ("samples", r.samples)):
        try:
            parts[key] = read()
        except DamagedRun:
            parts[key] = None  # the summary's `problem` says why
    emit(parts, lambda: _show(r, parts), json_)


def _show(r, parts: dict) -> None:
    summary, config = parts["summary"], parts["config"] or {}
    metrics, samples = parts["metrics"] or [], parts["samples"] or []
    out.rule(Text(f"run {r.name} — {summary['status']}, step {_steps(summary)}"))
    if summary["problem"]:
        out.print(Text(f"damaged: {summary['problem']}", style="bold red"))
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
    rows += [("label", config.get("label") or "-"), ("parameters", _params(config.get("n_params")))]
    rows.append(("command", config.get("command", "")))
    for k, v in rows:
        cfg.add_row(Text(str(k)), Text(str(v)))
    out.print(cfg)
    if metrics:
        table = Table(title="metrics")
        for col in ("step", "train", "val", "lr", "tok/s", "elapsed"):
            table.add_column(col, justify="right")
        for m in metrics:
            lr, tps = m.get("lr"), m.get("tokens_per_sec")
            table.add_row(
                str(m["step"]),
                _loss(m.get("train_loss")),
                _loss(m.get("val_loss")),
                "-" if lr is None else f"{lr:.2e}",
                "-" if tps is None else f"{tps:,.0f}",
                _duration(m.get("elapsed")),
            )
        out.print(table)
        out.print(
            line_chart({"train": _curve(metrics, "train_loss"), "val": _curve(metrics, "val_loss")})
        )
    picked = samples[:1] + samples[-1:] if len(samples) > 1 else samples
    for s in picked:
        out.rule(f"sample at step {s['step']}", style="dim")
        out.print(s.get("text") or "", markup=False, highlight=False)
    out.rule("files", style="dim")
    try:
        files = sorted(p for p in r.path.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        files = []
        out.print(Text(f"cannot list {r.path}: {exc.strerror}"))
    for p in files:
        try:
            what = f"{p.lstat().st_size:,} bytes" if not p.is_dir() else "folder"
        except OSError as exc:
            what = exc.strerror or "unreadable"
        out.print(Text(f"{p}  ({what})"))


@app.command()
@handle_errors
def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs.")],
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """Runs side by side: differing options highlighted, losses, val curves in one chart."""
    from toygpt_cli.errors import UsageError
    from toygpt_cli.runs.folder import open_run

    if len(runs) < 2:
        raise UsageError("compare needs at least two runs")
    folder = paths(runs_dir=runs_dir).runs_dir
    opened = [open_run(ref, folder) for ref in runs]
    configs = [r.config() for r in opened]
    curves = {r.name: _curve(r.metrics(), "val_loss") for r in opened}  # damage shows here
    options: dict[str, list] = {}
    for i, cfg in enumerate(configs):
        for section in ("model", "train", "resolved"):
            for k, v in cfg.get(section, {}).items():
                options.setdefault(k, [None] * len(opened))[i] = v
        options.setdefault("data", [None] * len(opened))[i] = cfg.get("data", {}).get("path")
    differing = sorted(k for k, vals in options.items() if len({json.dumps(v) for v in vals}) > 1)
    summaries = [r.summary() for r in opened]
    warnings = _comparability(opened, configs)
    for w in warnings:
        err.print(Text(f"warning: {w}", style="yellow"))
    result = {
        "runs": [r.name for r in opened],
        "differing": differing,
        "options": options,
        "summaries": summaries,
        "warnings": warnings,
    }
    emit(result, lambda: _compare_table(opened, options, differing, summaries, curves), json_)


def _comparability(opened, configs: list[dict]) -> list[str]:
    """Why these runs' losses may not be comparable: other text, other vocabulary."""
    names = [r.name for r in opened]

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


def _compare_table(opened, options, differing, summaries, curves) -> None:
    table = Table(title="configuration (differences highlighted)")
    table.add_column("option", style="bold")
    for r in opened:
        table.add_column(Text(r.name))
    for k, vals in options.items():
        style = "bold yellow" if k in differing else "dim"
        table.add_row(Text(k), *(Text(str(v)) for v in vals), style=style)
    for label, key in (
        ("steps", "step"),
        ("best val", "best_val_loss"),
        ("last val", "last_val_loss"),
        ("last train", "last_train_loss"),
        ("wall", "wall_seconds"),
    ):
        vals = [s[key] for s in summaries]
        shown = [
            str(v if v is not None else "-")
            if key == "step"
            else _duration(v)
            if key == "wall_seconds"
            else _loss(v)
            for v in vals
        ]
        table.add_row(label, *shown, style="bold")
    out.print(table)
    out.print(line_chart(curves, y_label="val loss"))


@app.command()
@handle_errors
def plot(
    run: RunArg = "latest",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: RUN/loss.png).")
    ] = None,
    runs_dir: RunsDir = None,
) -> None:
    """Redraw a run's loss.png: train and val loss, and the learning rate."""
    from toygpt_cli.errors import ToygptError
    from toygpt_cli.runs.folder import LOSS_PNG, open_run
    from toygpt_cli.runs.plot import plotting_available, write_loss_png

    r = open_run(run, paths(runs_dir=runs_dir).runs_dir)
    if not plotting_available():
        raise ToygptError("drawing loss.png needs matplotlib: pip install 'toygpt[plot]'")
    metrics = r.metrics()
    if not metrics:
        raise ToygptError(f"run {r.name} has no evals yet; nothing to plot")
    target = output or r.file(LOSS_PNG)
    if target.is_dir():
        raise ToygptError(f"--output {target} is a folder; give a file name")
    label = r.label()
    write_loss_png(target, metrics, f"{r.name} ({label})" if label else r.name)
    err.print(Text(f"wrote {target}"))


@app.command("rm")
@handle_errors
def remove(
    runs: Annotated[list[str], typer.Argument(help="Runs to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove a run marked running whose process cannot be checked (no lock file: "
            "made by an older toygpt, or on another host). A locked run is never removed.",
        ),
    ] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Delete runs: their own files, then the folder. Asks first unless --yes; refuses a
    run being trained, and any folder holding files toygpt did not write."""
    import os

    from toygpt_cli.runs.removal import check_removable, run_to_remove

    folder = paths(runs_dir=runs_dir).runs_dir
    chosen = {}
    for ref in runs:
        r = run_to_remove(ref, folder)
        chosen.setdefault(os.path.realpath(r.path), r)
    targets = list(chosen.values())
    for r in targets:  # every check passes before anything is deleted
        check_removable(r, force)
    shown = ", ".join(os.path.abspath(r.path) for r in targets)
    what = f"{len(targets)} runs: {shown}" if len(targets) > 1 else f"run {shown}"
    if not yes and not typer.confirm(f"delete {what}?", err=True):
        err.print("nothing removed")
        raise typer.Exit(1)
    for r in targets:
        r.remove(force)
        err.print(Text(f"removed {os.path.abspath(r.path)}"))
