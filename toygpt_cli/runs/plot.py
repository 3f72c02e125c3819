"""`loss.png` in a run folder, when matplotlib is installed (the optional `plot` extra):
the training loss as it went (trace.jsonl, every few steps), train and val loss at each
eval, and the learning-rate schedule as it was applied, on a second axis."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from toygpt_cli.errors import ToygptError, install_hint
from toygpt_cli.storage.files import write_atomic


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def require_matplotlib(what: str = "this"):
    """matplotlib's pyplot, drawing without a display; one line when it is not installed."""
    if not plotting_available():
        raise ToygptError(f"{what} needs matplotlib: {install_hint('plot')}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) where the value is recorded and finite (a NaN cannot be drawn)."""
    pairs = [(r["step"], r.get(key)) for r in records]
    kept = [(s, v) for s, v in pairs if isinstance(v, (int, float)) and math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def write_loss_png(path: Path, run, title: str = "") -> bool:
    """Draw `run`'s curves into `path`; False (and nothing written) without matplotlib or
    anything to draw."""
    metrics, trace = run.thinned("metrics"), run.thinned("trace")
    if not plotting_available() or not (metrics or trace):
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if trace:
        ax.plot(*series(trace, "loss"), color="tab:blue", alpha=0.35, linewidth=1,
                label="train (batches)")  # fmt: skip
    for key, label, color in (
        ("train_loss", "train", "tab:blue"),
        ("val_loss", "val", "tab:orange"),
    ):
        ax.plot(*series(metrics, key), label=label, marker=".", color=color)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    lr_steps, lrs = series(trace or metrics, "lr")
    if lrs:
        lr_ax = ax.twinx()  # the learning rate has its own scale, on the right
        (line,) = lr_ax.plot(lr_steps, lrs, color="grey", linestyle="--", label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_ylim(bottom=0)
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        handles.append(line)
        labels.append("learning rate")
    ax.legend(handles, labels)
    fig.tight_layout()
    try:
        write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return True
