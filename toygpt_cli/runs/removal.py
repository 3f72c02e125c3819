"""Removing runs: only folders that are toygpt runs, and in them only toygpt's own files.

What a run folder may hold is listed once, in runs.py (RUN_FILES and friends). A folder
holding anything else is refused whole; nothing outside a run is ever deleted. Everything
that can be checked is checked before the first file goes (all runs of one command,
location, contents, lock, permissions), and config.json goes last, so a removal cut short
leaves a run that still lists and can be removed again.
"""

from __future__ import annotations

import os
from pathlib import Path

from toygpt_cli.errors import ToygptError
from toygpt_cli.runs.folder import (
    CONFIG,
    LOCK,
    RUN_SUBDIRS,
    DamagedRun,
    Run,
    is_run_file,
    resolve_run,
)
from toygpt_cli.storage import locks as locking


def _full(path: Path) -> str:
    return os.path.abspath(path)


def run_to_remove(ref: str, runs_dir: Path) -> Run:
    """The run `ref` names, if it is one toygpt may delete: a run folder directly inside
    the runs directory, or a run elsewhere named by its full path. Never `.`, `..`, the
    runs directory itself, a folder holding it, or a symbolic link."""
    tail = ref.rstrip("/").rsplit("/", 1)[-1]
    if tail in ("", ".", ".."):
        raise ToygptError(f"refusing to remove {ref!r}: name a run (see `toygpt runs`)")
    path = resolve_run(ref, runs_dir)
    if path.is_symlink():
        raise ToygptError(
            f"{_full(path)} is a symbolic link to {os.path.realpath(path)}; toygpt removes "
            "only real run folders (delete the link itself with rm)"
        )
    real, runs_real = Path(os.path.realpath(path)), Path(os.path.realpath(runs_dir))
    if real == runs_real or real in runs_real.parents:
        raise ToygptError(f"refusing to remove {_full(path)}: it holds the runs directory")
    if real.parent != runs_real:
        if not os.path.isabs(ref):
            raise ToygptError(
                f"{_full(path)} is outside the runs directory {_full(Path(runs_dir))}; "
                "give its full path to remove it"
            )
        try:
            cfg = Run(path).config()
        except DamagedRun as exc:
            raise ToygptError(f"{_full(path)} is not a toygpt run ({exc.reason})") from None
        if not {"model", "train"} <= cfg.keys():
            raise ToygptError(f"{_full(path)} is not a toygpt run (its {CONFIG} is not one)")
    return Run(path)


def _inventory(run: Run) -> tuple[list[Path], list[Path]]:
    """(files, sub-folders deepest first) of a run folder; ToygptError naming what is not
    toygpt's. Links are never followed: a link is removed as a file, its target kept."""
    files: list[Path] = []
    folders: list[Path] = []
    foreign: list[str] = []

    def walk(folder: Path, rel: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = rel + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if rel or entry.name in RUN_SUBDIRS:  # nested folders only inside tb/
                        folders.append(Path(entry.path))
                        walk(Path(entry.path), name + "/")
                    else:
                        foreign.append(name + "/")
                elif is_run_file(name):
                    files.append(Path(entry.path))
                else:
                    foreign.append(name)

    try:
        walk(run.path, "")
    except OSError as exc:
        raise ToygptError(f"cannot read {_full(run.path)}: {exc.strerror or exc}") from None
    if foreign:
        shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ToygptError(
            f"{_full(run.path)} holds files that toygpt did not write ({shown}); nothing removed"
        )
    return files, sorted(folders, key=lambda p: len(p.parts), reverse=True)


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return f"no permission to change {_full(folder)}"


def check_removable(run: Run, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Everything that would stop a removal, checked before anything is deleted."""
    where = _full(run.path)
    if run.path.is_symlink() or not run.path.is_dir():
        raise ToygptError(f"{where} is not a run folder")
    files, folders = _inventory(run)
    if run.is_locked():
        raise ToygptError(_held(run, locking.lock_owner(run.path)))
    st = run.status()
    if st["status"] == "running" and not force:
        raise ToygptError(
            f"run {run.title} is still training (pid {st.get('pid')} on {st.get('host')}); "
            "stop it first, or use --force if that process is not toygpt"
        )
    for folder in (run.path.parent, run.path, *folders):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ToygptError(
                f"cannot remove {where}: {_why_not_writable(folder)}; nothing removed"
            )
    return files, folders


def remove_run(run: Run, force: bool = False) -> None:
    """Delete the run's files, its sub-folders, config.json, then the empty folder."""
    check_removable(run, force)
    where = _full(run.path)
    try:
        hold = locking.acquire(run.path)  # no trainer may start meanwhile
    except locking.LockHeld as exc:
        raise ToygptError(_held(run, exc.pid)) from None
    with hold:
        files, folders = _inventory(run)  # again, under the lock
        last = [run.path / CONFIG, run.path / LOCK]
        try:
            for f in files:
                if f not in last:
                    f.unlink(missing_ok=True)
            for folder in folders:
                folder.rmdir()
            for f in last:
                f.unlink(missing_ok=True)
            run.path.rmdir()
        except OSError as exc:
            left = "" if (run.path / CONFIG).exists() else "; what is left is no longer listed"
            raise ToygptError(
                f"could not finish removing {where}: {exc.strerror or exc}{left}"
            ) from None


def _held(run: Run, pid: int | None) -> str:
    return f"run {run.title} is being trained by another process (pid {pid or '?'}); stop it first"
