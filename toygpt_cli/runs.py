"""Run folders: creating them, naming them, finding them, and reading what they hold.

A run is one folder under the runs directory, named by its UTC start time
(`20261123-201502`, then `20261123-201502-2` if that name is taken). Everything needed to
sample, evaluate, resume or reproduce the run is inside it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toygpt_cli.errors import ToygptError
from toygpt_cli.fileio import append_jsonl, read_json, read_jsonl, write_json

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
EVAL = "eval.json"
CKPT_LAST = "ckpt.pt"
CKPT_BEST = "best.pt"
LOSS_PNG = "loss.png"

_NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sort_key(path: Path) -> tuple[str, int, str]:
    m = _NAME.match(path.name)
    if m:
        return (m.group(1), int(m.group(2) or 1), path.name)
    # Folders not named by toygpt sort by modification time among themselves.
    stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return (stamp, 0, path.name)


def create_run_dir(runs_dir: Path, now: datetime | None = None) -> Path:
    """A new, empty run folder named by the UTC time; unique even within one second."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToygptError(f"cannot create runs directory {runs_dir}: {exc.strerror}") from exc
    if not os.access(runs_dir, os.W_OK):
        raise ToygptError(
            f"runs directory {runs_dir} is not writable; pick another with --runs-dir"
        )
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        path = runs_dir / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()  # atomic: fails if another process took the name first
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise ToygptError(f"cannot create run folder in {runs_dir}: {exc.strerror}") from exc
    raise ToygptError(f"too many runs started at {stamp} in {runs_dir}")


def list_run_dirs(runs_dir: Path) -> list[Path]:
    """Run folders (those holding a config.json), newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    dirs = [p for p in runs_dir.iterdir() if p.is_dir() and (p / CONFIG).exists()]
    return sorted(dirs, key=_sort_key, reverse=True)


def resolve_run(ref: str, runs_dir: Path) -> Path:
    """The run folder named by `latest`, `latest~N`, a folder name or a path.

    Every command that takes a run goes through here, so they all accept the same names.
    """
    runs = list_run_dirs(runs_dir)
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if m:
        back = int(m.group(1) or 0)
        if back < len(runs):
            return runs[back]
        if not runs:
            raise ToygptError(f"no runs in {runs_dir}; start one with `toygpt train`")
        raise ToygptError(f"{ref!r}: there are only {len(runs)} runs in {runs_dir}")
    for candidate in (Path(runs_dir) / ref, Path(ref)):
        if candidate.is_dir() and (candidate / CONFIG).exists():
            return candidate
    names = ", ".join(p.name for p in runs[:10]) + (" ..." if len(runs) > 10 else "")
    known = f"runs in {runs_dir}: {names}" if runs else f"there are no runs in {runs_dir}"
    raise ToygptError(f"no run {ref!r}; {known}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Run:
    """A run folder and accessors for the files in it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    # -- configuration and status ------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return read_json(self.path / CONFIG)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.path / CONFIG, config)

    def raw_status(self) -> dict[str, Any]:
        try:
            return read_json(self.path / STATUS)
        except (OSError, ValueError):
            return {}

    def status(self) -> dict[str, Any]:
        """The recorded status, with a run whose process is gone shown as interrupted."""
        st = self.raw_status()
        if st.get("status") == "running" and st.get("host") == socket.gethostname():
            pid = st.get("pid")
            if isinstance(pid, int) and not pid_alive(pid):
                st = {**st, "status": "interrupted", "message": "the training process died"}
        st.setdefault("status", "unknown")
        return st

    def update_status(self, **fields: Any) -> dict[str, Any]:
        st = self.raw_status()
        st.update(fields, updated=utc_now())
        write_json(self.path / STATUS, st)
        return st

    def mark_running(self, step: int, planned: int) -> None:
        self.update_status(
            status="running",
            pid=os.getpid(),
            host=socket.gethostname(),
            step=step,
            planned_steps=planned,
            finished=None,
            message=None,
            **({} if self.raw_status().get("started") else {"started": utc_now()}),
        )

    # -- metrics and samples --------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS)

    def append_metric(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / METRICS, record)

    def samples(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / SAMPLES)

    def append_sample(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / SAMPLES, record)

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self, which: str = "auto") -> Path:
        """'best', 'last', or 'auto' (best when it exists)."""
        best, last = self.path / CKPT_BEST, self.path / CKPT_LAST
        if which == "best" or (which == "auto" and best.exists()):
            path = best
        elif which in ("last", "auto"):
            path = last
        else:
            raise ToygptError(f"--checkpoint must be best or last, got {which!r}")
        if not path.exists():
            raise ToygptError(
                f"run {self.name} has no {path.name} checkpoint yet"
                + ("; it is still starting" if self.status()["status"] == "running" else "")
            )
        return path

    def summary(self) -> dict[str, Any]:
        """One row of `toygpt runs list`: what a user compares runs by."""
        cfg = self.config()
        st = self.status()
        metrics = self.metrics()
        vals = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
        return {
            "name": self.name,
            "path": str(self.path),
            "started": st.get("started") or cfg.get("created"),
            "status": st["status"],
            "step": st.get("step", metrics[-1]["step"] if metrics else 0),
            "planned_steps": st.get("planned_steps", cfg.get("train", {}).get("iters")),
            "best_val_loss": min(vals) if vals else None,
            "last_val_loss": vals[-1] if vals else None,
            "last_train_loss": metrics[-1].get("train_loss") if metrics else None,
            "params": cfg.get("n_params"),
            "device": cfg.get("resolved", {}).get("device"),
            "dtype": cfg.get("resolved", {}).get("dtype"),
            "wall_seconds": st.get("wall_seconds"),
        }

    def remove_stale_temp_files(self) -> None:
        """Temporary files a killed process left mid-write (the real files are intact)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        st = self.status()
        if st["status"] == "running":
            raise ToygptError(
                f"run {self.name} is still training (pid {st.get('pid')}); stop it first"
            )
        shutil.rmtree(self.path)


def open_run(ref: str, runs_dir: Path) -> Run:
    return Run(resolve_run(ref, runs_dir))
