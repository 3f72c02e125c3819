"""Run folders made by hand, shaped as toygpt writes them, for tests of listing and removal
that need no training (and so no torch)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

CONFIG = {
    "model": {"n_layer": 2, "n_embd": 32},
    "train": {"iters": 20, "learning_rate": 0.001},
    "resolved": {"device": "cpu", "dtype": "float32"},
    "data": {"path": "/data/tiny.txt", "sha256": "ab" * 32, "chars": 30000},
    "vocab": "\n !abc",
    "n_params": 12345,
    "command": "toygpt train",
}
METRICS = [
    {"step": 0, "train_loss": 4.2, "val_loss": 4.3, "lr": 0.001, "tokens_per_sec": None},
    {"step": 10, "train_loss": 3.1, "val_loss": 3.2, "lr": 0.001, "tokens_per_sec": 900.0},
    {"step": 20, "train_loss": 2.9, "val_loss": 3.0, "lr": 0.001, "tokens_per_sec": 950.0},
]


def make_run(runs: Path, name: str, config: dict | None = None, **status) -> Path:
    """A finished run folder `runs/name` with every file a training leaves."""
    path = Path(runs) / name
    path.mkdir(parents=True)
    cfg = {**CONFIG, "name": name, **(config or {})}
    (path / "config.json").write_text(json.dumps(cfg))
    st = {
        "status": "completed",
        "step": 20,
        "planned_steps": 20,
        "started": "2026-11-23T20:15:02+00:00",
        "updated": "2026-11-23T20:16:02+00:00",
        "host": socket.gethostname(),
        "pid": 999_999,
        "wall_seconds": 60.0,
        **status,
    }
    (path / "status.json").write_text(json.dumps(st))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    (path / "samples.jsonl").write_text(
        "".join(json.dumps({"step": m["step"], "text": "To be"}) + "\n" for m in METRICS)
    )
    (path / "ckpt.pt").write_bytes(b"checkpoint")
    (path / "best.pt").write_bytes(b"checkpoint")
    return path
