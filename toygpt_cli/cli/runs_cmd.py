"""`toygpt runs`: list, show, compare and remove runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from toygpt_cli.cli.charts import line_chart
from toygpt_cli.cli.common import JsonFlag, RunsDir, err, handle_errors, out, paths
from toygpt_cli.cli.progress import fmt_loss

app = typer.Typer(help="List, inspect, compare and remove runs.", invoke_without_command=True)

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "interrupted": "yellow",
    "failed": "red",
}


SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _params(n) -> str:
    return "-" if not n else f"{n / 1e6:.2f}M"


Count = Annotated[int | None, typer.Option("--count", "-n", min=1, help="Show at most N.")]


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
    """All runs, newest first: status, progress, losses, size, device, wall time."""
    from toygpt_cli.runs import Run, list_run_dirs

    folder = paths(runs_dir=runs_dir).runs_dir
    rows = [Run(p).summary() for p in list_run_dirs(folder)[:count]]
    if json_:
        out.print(json.dumps(rows, indent=2), markup=False, highlight=False)
        return
    if not rows:
        err.print(f"no runs in {folder}; start one with `toygpt train`")
        return
    table = Table(title=f"runs in {folder}")
    table.add_column("run", no_wrap=True, min_width=15)  # a name must never be cut
    table.add_column("started", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("steps", "best val", "last val", "params", "device", "wall"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["name"],
            (r["started"] or "-")[5:16].replace("T", " "),
            f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
            f"{r['step']}/{r['planned_steps']}",
            fmt_loss(r["best_val_loss"]),
            fmt_loss(r["last_val_loss"]),
            _params(r["params"]),
            f"{r['device'] or '-'} {SHORT_DTYPE.get(r['dtype'], '')}".strip(),
            _duration(r["wall_seconds"]),
        )
    out.print(table)


@app.command()
@handle_errors
def show(
    run: Annotated[str, typer.Argument(help="latest, latest~N, a run name or a path.")] = "latest",
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """One run: configuration, metrics, loss curves, first and last samples, files."""
    from toygpt_cli.runs import open_run

    r = open_run(run, paths(runs_dir=runs_dir).runs_dir)
    summary, config, metrics, samples = r.summary(), r.config(), r.metrics(), r.samples()
    if json_:
        out.print(
            json.dumps(
                {"summary": summary, "config": config, "metrics": metrics, "samples": samples},
                indent=2,
            ),
            markup=False,
            highlight=False,
        )
        return
    out.rule(
        f"run {r.name} — {summary['status']}, step {summary['step']}/{summary['planned_steps']}"
    )
    cfg = Table(show_header=False, box=None, pad_edge=False)
    cfg.add_column(style="bold")
    cfg.add_column()
    for section in ("model", "train"):
        for k, v in config.get(section, {}).items():
            cfg.add_row(k, str(v))
    for k, v in config.get("resolved", {}).items():
        cfg.add_row(f"{k} (resolved)", str(v))
    cfg.add_row("data", f"{config['data']['path']} ({config['data']['chars']:,} chars)")
    cfg.add_row("parameters", _params(config.get("n_params")))
    cfg.add_row("command", config.get("command", ""))
    out.print(cfg)
    if metrics:
        table = Table(title="metrics")
        for col in ("step", "train", "val", "lr", "tok/s", "elapsed"):
            table.add_column(col, justify="right")
        for m in metrics:
            table.add_row(
                str(m["step"]),
                fmt_loss(m["train_loss"]),
                fmt_loss(m["val_loss"]),
                f"{m['lr']:.2e}",
                f"{m['tokens_per_sec'] or 0:,.0f}",
                _duration(m["elapsed"]),
            )
        out.print(table)
        out.print(
            line_chart(
                {
                    "train": [(m["step"], m["train_loss"]) for m in metrics],
                    "val": [(m["step"], m["val_loss"]) for m in metrics],
                }
            )
        )
    if samples:
        picked = [samples[0]] if len(samples) == 1 else [samples[0], samples[-1]]
        for s in picked:
            out.rule(f"sample at step {s['step']}", style="dim")
            out.print(s["text"], markup=False, highlight=False)
    out.rule("files", style="dim")
    for p in sorted(r.path.iterdir()):
        if not p.name.startswith("."):
            out.print(f"{p}  ({p.stat().st_size:,} bytes)", highlight=False)


@app.command()
@handle_errors
def compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs.")],
    json_: JsonFlag = False,
    runs_dir: RunsDir = None,
) -> None:
    """Runs side by side: differing options highlighted, losses, val curves in one chart."""
    from toygpt_cli.errors import UsageError
    from toygpt_cli.runs import open_run

    if len(runs) < 2:
        raise UsageError("compare needs at least two runs")
    folder = paths(runs_dir=runs_dir).runs_dir
    opened = [open_run(ref, folder) for ref in runs]
    configs = [r.config() for r in opened]
    options: dict[str, list] = {}
    for i, cfg in enumerate(configs):
        for section in ("model", "train", "resolved"):
            for k, v in cfg.get(section, {}).items():
                options.setdefault(k, [None] * len(opened))[i] = v
        options.setdefault("data", [None] * len(opened))[i] = cfg["data"]["path"]
    differing = sorted(k for k, vals in options.items() if len({json.dumps(v) for v in vals}) > 1)
    summaries = [r.summary() for r in opened]
    if json_:
        out.print(
            json.dumps(
                {
                    "runs": [r.name for r in opened],
                    "differing": differing,
                    "options": options,
                    "summaries": summaries,
                },
                indent=2,
            ),
            markup=False,
            highlight=False,
        )
        return
    table = Table(title="configuration (differences highlighted)")
    table.add_column("option", style="bold")
    for r in opened:
        table.add_column(r.name)
    for k, vals in options.items():
        style = "bold yellow" if k in differing else "dim"
        table.add_row(k, *(str(v) for v in vals), style=style)
    for label, key in (
        ("steps", "step"),
        ("best val", "best_val_loss"),
        ("last val", "last_val_loss"),
        ("last train", "last_train_loss"),
        ("wall", "wall_seconds"),
    ):
        vals = [s[key] for s in summaries]
        shown = [
            str(v) if key == "step" else _duration(v) if key == "wall_seconds" else fmt_loss(v)
            for v in vals
        ]
        table.add_row(label, *shown, style="bold")
    out.print(table)
    out.print(
        line_chart(
            {r.name: [(m["step"], m["val_loss"]) for m in r.metrics()] for r in opened},
            y_label="val loss",
        )
    )


@app.command("rm")
@handle_errors
def remove(
    runs: Annotated[list[str], typer.Argument(help="Runs to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    runs_dir: RunsDir = None,
) -> None:
    """Delete runs (asks first unless --yes; refuses a run that is still training)."""
    from toygpt_cli.errors import ToygptError
    from toygpt_cli.runs import open_run

    folder = paths(runs_dir=runs_dir).runs_dir
    opened = [open_run(ref, folder) for ref in runs]
    for r in opened:
        if r.status()["status"] == "running":
            raise ToygptError(f"run {r.name} is still training; stop it before removing it")
    names = ", ".join(r.name for r in opened)
    if not yes and not typer.confirm(f"delete {names}?", err=True):
        err.print("nothing removed")
        raise typer.Exit(1)
    for r in opened:
        r.remove()
        err.print(f"removed {r.path}", highlight=False)
