"""`toygpt runs show RUN`: one run, what matters first (status, losses, its latest sample),
then the evals with a chart, the configuration and the files; and the formatting every
`toygpt runs` view shares. Everything comes from files a user can edit, so it is rendered
as plain Text, never parsed as rich markup."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text

from toygpt_cli.cli.charts import line_chart
from toygpt_cli.cli.common import out, paths, print_json_streamed, screen_width
from toygpt_cli.cli.options import uses

STATUS_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "interrupted": "yellow",
    "failed": "red",
    "damaged": "bold red",
}
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
    """Steps taken of those planned: "214/5100"; a run its time budget completed early
    shows only the steps it took, as a budget-only run does ("156", not "156/5100")."""
    step, planned = r["step"], r["planned_steps"]
    if step is None:
        return "-"
    early = r.get("status") == "completed" and planned and step < planned
    return f"{step}/{planned}" if planned and not early else str(step)


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
