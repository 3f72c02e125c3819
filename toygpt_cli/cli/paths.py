"""Where datasets and runs live: ./data and ./runs of the current directory unless
TOYGPT_DATA_DIR / TOYGPT_RUNS_DIR (or --data-dir / --runs-dir) say otherwise."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Paths:
    """Where datasets and runs live (default: ./data and ./runs of the current directory)."""

    data_dir: Path = field(default_factory=lambda: Path("data"))
    runs_dir: Path = field(default_factory=lambda: Path("runs"))

    @classmethod
    def from_env(cls, data_dir: Path | None = None, runs_dir: Path | None = None) -> Paths:
        return cls(
            data_dir=Path(data_dir or os.environ.get("TOYGPT_DATA_DIR") or "data"),
            runs_dir=Path(runs_dir or os.environ.get("TOYGPT_RUNS_DIR") or "runs"),
        )
