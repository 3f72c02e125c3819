"""Run folders: creating them, naming them, finding them, reading what they hold, locking
one while it trains, and removing one (toygpt's own files only).

A run is one folder under the runs directory, named by its UTC start time
(`20261123-201502`, then `20261123-201502-2` if that name is taken). Everything needed to
sample, evaluate, resume or reproduce the run is inside it. A damaged file makes its run
`damaged`, with a one-line reason (DamagedRun), and never stops other runs from listing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from toygpt_cli.errors import ToygptError
from toygpt_cli.runs.files import (
    METRIC_FIELDS,
    SAMPLE_FIELDS,
    STATUS_FIELDS,
    TRACE_FIELDS,
    DamagedRun,
    bounded_records,
    check_fields,
    config_problem,
    iter_records,
    load_json,
    read_records,
    short,
)
from toygpt_cli.storage import locks as locking
from toygpt_cli.storage.files import append_jsonl, overwrite_in_place, write_json

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
TRACE = "trace.jsonl"
EVAL = "eval.json"
CKPT_LAST = "ckpt.pt"
CKPT_BEST = "best.pt"
LOSS_PNG = "loss.png"
EXPORT = "model.safetensors"
REPORT = "report.html"
ATTENTION = ("attention.html", "attention.png")
LOCK = ".lock"
TENSORBOARD = "tb"

# Everything toygpt writes in a run folder: `runs rm` deletes these and refuses a folder
# that holds anything else. One place: a new file a run gets must be added here.
RUN_FILES = frozenset(
    {
        CONFIG,
        STATUS,
        METRICS,
        SAMPLES,
        TRACE,
        EVAL,
        CKPT_LAST,
        CKPT_BEST,
        LOSS_PNG,
        EXPORT,
        LOCK,
        REPORT,
        *ATTENTION,
    }
)
RUN_FILE_PATTERNS = (".*.tmp",)  # fileio's temporary files, left by a kill mid-write
RUN_SUBDIRS = {TENSORBOARD: ("events.out.tfevents.*",)}  # sub-folder: what may be in it

_NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sort_key(path: Path) -> tuple[str, int, str]:
    m = _NAME.match(path.name)
    if m:
        return (m.group(1), int(m.group(2) or 1), path.name)
    # Folders not named by toygpt sort by modification time among themselves.
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0
    stamp = datetime.fromtimestamp(mtime, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return (stamp, 0, path.name)


STAGING_PREFIX = ".staging-"


def make_staging(runs_dir: Path) -> Path:
    """A hidden folder in runs_dir to build a run in; stale ones of dead processes go."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for old in runs_dir.glob(STAGING_PREFIX + "*"):
            # Stale when its builder (the pid in its name) is gone and its lock is free: the
            # folder exists a moment before it is locked, so the lock alone could be wrong.
            if locking.abandoned(old, STAGING_PREFIX):
                shutil.rmtree(old, ignore_errors=True)
        staging = runs_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise ToygptError(f"cannot create a run in {runs_dir}: {exc.strerror or exc}") from None
    return staging


def discard_staging(runs_dir: Path) -> None:
    """Remove the staging folder this process made, if one is left: a Ctrl-C that PyTorch
    held back while it waited in C++ can land in the cleanup meant to remove it."""
    with contextlib.suppress(OSError):
        for mine in Path(runs_dir).glob(f"{STAGING_PREFIX}{os.getpid()}-*"):
            shutil.rmtree(mine, ignore_errors=True)


def publish(staging: Path, runs_dir: Path, now: datetime | None = None) -> Path:
    """Rename the staging folder to the run's name: its UTC start time, unique even within
    one second (`-2`, `-3`, ...)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        target = runs_dir / (stamp if n == 1 else f"{stamp}-{n}")
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic; fails if another run took the name
        except OSError:
            if target.exists():
                continue
            raise
        run = Run(target)
        config = run.config()
        config["name"] = target.name
        run.write_config(config)
        return target
    raise ToygptError(f"too many runs started at {stamp} in {runs_dir}")


def _named(path: Path) -> str:
    """A run's folder name, and its label where it has one: "20261202-115231 (mine)"."""
    label = " ".join(str(Run(path).label() or "").split())
    label = label if len(label) <= 40 else label[:37] + "..."
    return f"{path.name} ({label})" if label else path.name


def _is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and (path / CONFIG).exists()
    except (OSError, ValueError):  # a name too long for the system, a NUL byte
        return False


def list_run_dirs(runs_dir: Path) -> list[Path]:
    """Run folders (those holding a config.json), newest first. Hidden folders (a run
    still being set up, say) are not runs."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    try:
        entries = list(runs_dir.iterdir())
    except OSError as exc:
        raise ToygptError(f"cannot read runs directory {runs_dir}: {exc.strerror}") from None
    dirs = [p for p in entries if not p.name.startswith(".") and _is_run_dir(p)]
    return sorted(dirs, key=_sort_key, reverse=True)


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref.startswith((".", "~"))


def resolve_run(ref: str, runs_dir: Path) -> Path:
    """The run folder named by `latest`, `latest~N`, a folder name, a label or a path.

    A folder name wins over a label; a label names the newest run that carries it. Every
    command that takes a run goes through here, so they all accept the same names.
    """
    runs = list_run_dirs(runs_dir)
    where = os.path.join(runs_dir, "")  # "runs in runs/"
    m = re.fullmatch(r"latest(?:~(\d+))?", ref)
    if m:
        back = int(m.group(1) or 0)
        if back < len(runs):
            return runs[back]
        if not runs:
            raise ToygptError(f"no runs in {where}; start one with `toygpt train`")
        raise ToygptError(f"{ref!r}: there are only {len(runs)} runs in {where}")
    if _is_run_dir(Path(runs_dir) / ref):
        return Path(runs_dir) / ref
    if _looks_like_path(ref) and _is_run_dir(Path(ref).expanduser()):
        return Path(ref).expanduser()
    for path in runs:
        if Run(path).label() == ref:
            return path
    if _is_run_dir(Path(ref)):
        return Path(ref)
    names = ", ".join(_named(p) for p in runs[:10]) + (" ..." if len(runs) > 10 else "")
    known = f"runs in {where}: {names}" if runs else f"there are no runs in {where}"
    raise ToygptError(f"no run {ref!r}; {known}")


# -- reading and checking what a run holds ---------------------------------------------------


@dataclass
class Run:
    """A run folder and accessors for the files in it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def title(self) -> str:
        """The name, with the run's label when it has one: `20261130-101500 (baseline)`."""
        label = self.label()
        return f"{self.name} ({label})" if label else self.name

    def file(self, name: str) -> Path:
        return self.path / name

    def _load(self, name: str) -> Any:
        return load_json(self.path / name, self.name)

    # -- configuration and status ------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """config.json, checked for the shape toygpt writes (DamagedRun otherwise)."""
        cfg = self._load(CONFIG)
        problem = config_problem(cfg)
        if problem:
            sep = " is " if problem.startswith("not ") else ": "
            raise DamagedRun(self.name, f"{CONFIG}{sep}{problem}")
        return cfg

    def label(self) -> str | None:
        """The run's label (`toygpt train --name`), None when it has none or is damaged."""
        try:
            return self.config().get("label")
        except DamagedRun:
            return None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.path / CONFIG, config)

    def raw_status(self) -> dict[str, Any]:
        """status.json as recorded; {} when it is missing or damaged."""
        try:
            st = self._load(STATUS)
        except DamagedRun:
            return {}
        return st if isinstance(st, dict) else {}

    def _checked_status(self) -> tuple[dict[str, Any], str | None]:
        if not (self.path / STATUS).exists():
            return {}, None
        try:
            st = self._load(STATUS)
        except DamagedRun as exc:
            return {}, exc.reason
        if not isinstance(st, dict):
            return {}, f"{STATUS} is not a JSON object: {short(st)}"
        problem = check_fields(st, STATUS_FIELDS)
        if problem is None and "pid" in st and not locking.valid_pid(st["pid"]):
            problem = f"pid {short(st['pid'])} is not a process id"
        return st, (f"{STATUS}: {problem}" if problem else None)

    def is_locked(self) -> bool | None:
        """True while a process trains the run (holds the lock on its folder), False when
        none does, None when the folder cannot be opened."""
        return locking.is_locked(self.path)

    def lock(self) -> locking.FileLock:
        """Take the run's exclusive training lock; keep the returned handle for the whole
        training. The OS releases it when the process ends, however it ends. Raises
        ToygptError when another process holds it."""
        try:
            return locking.acquire(self.path)
        except locking.LockHeld as exc:
            raise ToygptError(
                f"run {self.title} is being trained by another process (pid {exc.pid or '?'})"
            ) from None

    def status(self) -> dict[str, Any]:
        """The recorded status, corrected by what can be observed: `running` while the
        run's folder is locked; a run marked running whose lock is free is `interrupted`
        unless its recorded process is verifiably alive on this host (the same pid and
        start time: a trainer of an older toygpt, which locked differently); an
        unreadable status.json is `damaged`, with the reason as `message`. Never raises."""
        st, problem = self._checked_status()
        locked = self.is_locked()
        if locked and locking.held_here(self.path):
            return {**st, "status": st.get("status") or "unknown"}  # what this process wrote
        if locked:
            owner = locking.lock_owner(self.path)
            return {**st, "status": "running", "pid": owner or st.get("pid"), "message": None}
        if problem:
            return {"status": "damaged", "message": problem}
        if st.get("status") == "running":
            alive = st.get("host") == socket.gethostname() and locking.same_process_alive(
                st.get("pid"), st.get("pid_start"), st.get("updated")
            )
            if not alive:
                st = {**st, "status": "interrupted", "message": "the training process died"}
        return {**st, "status": st.get("status") or "unknown"}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Record fields in status.json. On a full disk the file is rewritten in place (a
        status line fits in the blocks it already has), so the end of a run is recorded."""
        st = self.raw_status()
        st.update(fields, updated=utc_now())
        try:
            write_json(self.path / STATUS, st)
        except ToygptError:
            if not overwrite_in_place(self.path / STATUS, st):
                raise
        return st

    def mark_running(self, step: int, planned: int) -> None:
        self.update_status(
            status="running",
            pid=os.getpid(),
            pid_start=locking.process_start_ticks(os.getpid()),  # tells a reused pid apart
            host=socket.gethostname(),
            step=step,
            planned_steps=planned,
            finished=None,
            message=None,
            **({} if self.raw_status().get("started") else {"started": utc_now()}),
        )

    # -- metrics and samples --------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        return read_records(self.path / METRICS, self.name, METRIC_FIELDS)

    def append_metric(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / METRICS, record)

    def samples(self) -> list[dict[str, Any]]:
        return read_records(self.path / SAMPLES, self.name, SAMPLE_FIELDS)

    def append_sample(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / SAMPLES, record)

    def trace(self) -> list[dict[str, Any]]:
        """The training loss and learning rate every few steps (trace.jsonl)."""
        return read_records(self.path / TRACE, self.name, TRACE_FIELDS)

    def thinned(self, kind: str, points: int = 2_000) -> list[dict[str, Any]]:
        """About `points` (at most 2x) records of metrics.jsonl or trace.jsonl spread evenly
        over the run, first and last included, read in one pass in bounded memory: what a
        chart needs, however long the run."""
        name, kinds = {"metrics": (METRICS, METRIC_FIELDS), "trace": (TRACE, TRACE_FIELDS)}[kind]
        return bounded_records(self.path / name, self.name, kinds, 0, 0, points)[2]

    def append_trace(self, record: dict[str, Any]) -> None:
        append_jsonl(self.path / TRACE, record)

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
                f"run {self.title} has no {path.name} checkpoint yet"
                + ("; it is still starting" if self.status()["status"] == "running" else "")
            )
        return path

    def summary(self) -> dict[str, Any]:
        """One row of `toygpt runs list`: what a user compares runs by. Never raises: a run
        that cannot be read has status `damaged` and the reason in `problem`."""
        st = self.status()
        row: dict[str, Any] = {"name": self.name, "path": str(self.path), "label": None}
        row.update(dict.fromkeys(("data", "started", "step", "planned_steps")))
        row.update(dict.fromkeys(("best_val_loss", "last_val_loss", "last_train_loss")))
        row.update(dict.fromkeys(("params", "device", "dtype", "wall_seconds", "evals")))
        row.update(status=st["status"], problem=None, started=st.get("started"))
        try:
            cfg = self.config()
            seen = self.metric_summary()
            for _ in iter_records(self.path / SAMPLES, self.name, SAMPLE_FIELDS):
                pass  # read only to be checked: `runs show` prints them
        except DamagedRun as exc:
            return {**row, "status": "damaged", "problem": exc.reason}
        row.update(
            label=cfg.get("label"),
            data=Path(cfg["data"]["path"]).name if "data" in cfg else None,
            started=st.get("started") or cfg.get("created"),
            step=st.get("step", seen["last_step"] or 0),
            planned_steps=st.get("planned_steps", cfg.get("train", {}).get("iters")),
            best_val_loss=seen["best_val"],
            last_val_loss=seen["last_val"],
            last_train_loss=seen["last_train"],
            params=cfg.get("n_params"),
            device=cfg.get("resolved", {}).get("device"),
            dtype=cfg.get("resolved", {}).get("dtype"),
            wall_seconds=st.get("wall_seconds"),
            evals=seen["evals"],
        )
        if st["status"] == "damaged":
            row["problem"] = st.get("message")
        elif st["status"] != "running" and not (self.path / CKPT_LAST).exists():
            only_best = cfg.get("train", {}).get("keep") == "best" and st["status"] == "completed"
            if not (only_best and (self.path / CKPT_BEST).exists()):
                row.update(
                    status="damaged", problem=f"no {CKPT_LAST}: it stopped before saving one"
                )
        return row

    def metric_summary(self) -> dict[str, Any]:
        """Counted in one pass over metrics.jsonl (memory does not grow with it): evals,
        best and last val loss, last train loss and step. A partial eval (the quick first
        one, `eval_windows` recorded) is never the best."""
        seen: dict[str, Any] = dict.fromkeys(("best_val", "last_val", "last_train", "last_step"))
        seen["evals"] = 0
        for m in iter_records(self.path / METRICS, self.name, METRIC_FIELDS):
            seen["evals"] += 1
            seen["last_step"], seen["last_train"] = m["step"], m.get("train_loss")
            val = m.get("val_loss")
            if val is not None:
                seen["last_val"] = val
                if "eval_windows" not in m and (seen["best_val"] is None or val < seen["best_val"]):
                    seen["best_val"] = val
        return seen

    def remove_stale_temp_files(self) -> None:
        """Temporary files a killed process left mid-write (the real files are intact)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def open_run(ref: str, runs_dir: Path) -> Run:
    return Run(resolve_run(ref, runs_dir))


def is_run_file(relative: str) -> bool:
    """Is `relative` (a path inside a run folder, '/'-separated) a file toygpt writes?"""
    parts = relative.split("/")
    if len(parts) == 1:
        return parts[0] in RUN_FILES or any(fnmatchcase(parts[0], p) for p in RUN_FILE_PATTERNS)
    patterns = RUN_SUBDIRS.get(parts[0], ())
    return any(fnmatchcase(parts[-1], p) for p in patterns)
