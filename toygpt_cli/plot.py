"""`loss.png` in a run folder, when matplotlib is installed (the optional `plot` extra)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from toygpt_cli.fileio import write_atomic


def plotting_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_loss_png(path: Path, metrics: list[dict[str, Any]], title: str = "") -> bool:
    """Train and val loss against step; False (and nothing written) without matplotlib."""
    if not plotting_available() or not metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [m["train_loss"] for m in metrics], label="train", marker=".")
    ax.plot(steps, [m["val_loss"] for m in metrics], label="val", marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return True
