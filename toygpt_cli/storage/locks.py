"""Telling whether a process still owns something: folder locks and process identity.

A run is trained under an exclusive `flock` on its folder itself (an open descriptor of
the directory), not on a file in it: deleting a file cannot take the lock away. The kernel
drops the lock when the process ends in any way (exit, crash, `kill -9`), so "is the lock
held?" answers "is it still training?" exactly, with no stale pid to misread. The holder's
pid is written to `.lock` in the folder, for messages only. A pid recorded elsewhere is
only trusted together with the process's start time (from /proc), so a pid reused by an
unrelated process is not taken for the trainer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import datetime
from pathlib import Path

from toygpt_cli.errors import ToygptError

_HELD: dict[int, tuple[int, int]] = {}  # descriptor -> (device, inode) of each lock held here


def _close_held_in_child() -> None:
    # A forked child must not keep a lock alive after its parent (the trainer) dies.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


def held_here(path: Path) -> bool:
    """Does this very process hold the lock on `path`?"""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) in _HELD.values()


os.register_at_fork(after_in_child=_close_held_in_child)


class FileLock:
    """An exclusive lock on a folder; keep the object for as long as the lock must last.

    Released by `release()`, at the end of a `with` block, when the object is collected,
    and by the operating system whenever the process ends.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd
        st = os.fstat(fd)
        _HELD[fd] = (st.st_dev, st.st_ino)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            _HELD.pop(self._fd, None)
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


class LockHeld(ToygptError):
    """Another process holds the lock."""

    def __init__(self, pid: int | None):
        super().__init__(f"held by pid {pid if pid is not None else 'unknown'}")
        self.pid = pid


PID_FILE = ".lock"  # in the locked folder: the holder's pid, for messages


def _open_folder(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)


def acquire(folder: Path, attempts: int = 10) -> FileLock:
    """Take the exclusive lock on `folder` without waiting for a holder.

    A few quick retries cover a reader's momentary shared lock from `is_locked`. The pid is
    written to `folder/.lock`. Raises LockHeld, or ToygptError when the folder cannot be
    opened (missing, not a folder, permissions).
    """
    folder = Path(folder)
    try:
        fd = _open_folder(folder)
    except OSError as exc:
        raise ToygptError(f"cannot lock {folder}: {exc.strerror or exc}") from None
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.02)
        except OSError as exc:
            os.close(fd)
            raise ToygptError(f"cannot lock {folder}: {exc.strerror or exc}") from None
    else:
        os.close(fd)
        raise LockHeld(lock_owner(folder))
    with contextlib.suppress(OSError):
        # O_NONBLOCK: a FIFO put in its place fails at once instead of waiting for a reader
        pid_fd = os.open(folder / PID_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)  # fmt: skip
        try:
            os.write(pid_fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(pid_fd)
    return FileLock(folder, fd)


def is_locked(folder: Path) -> bool | None:
    """True while some process holds the lock on `folder`, False when none does, None when
    the folder cannot be opened: then nothing can be said."""
    try:
        fd = _open_folder(Path(folder))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared try: readers never clash
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock when it was taken
    return False


def abandoned(folder: Path, prefix: str) -> bool:
    """True for a folder named `{prefix}{pid}-...` whose maker is gone: that process has
    ended and no one holds the folder's lock. One that cannot be opened is never abandoned."""
    pid = folder.name[len(prefix) :].split("-")[0]
    return pid.isdigit() and not pid_alive(int(pid)) and is_locked(folder) is False


def lock_owner(folder: Path) -> int | None:
    """The pid recorded by the lock's holder (None when unknown)."""
    try:
        fd = os.open(Path(folder) / PID_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NONBLOCK)  # fmt: skip
    except OSError:
        return None
    try:
        return _read_pid(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 12 else None


# ----------------------------------------------------------------------------- processes

MAX_PID = 2**31 - 1  # pids are C ints; anything larger is not a process id


def valid_pid(pid: object) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid <= MAX_PID


def pid_alive(pid: int) -> bool:
    if not valid_pid(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return False
    return True


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        # The command name (field 2) may hold spaces and ")": count fields after the last ")".
        return int(data[data.rfind(b")") + 2 :].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_start_time(pid: int) -> float | None:
    """When process `pid` started, as a Unix time (Linux); None when unknown."""
    ticks, boot = process_start_ticks(pid), _boot_time()
    if ticks is None or boot is None:
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def same_process_alive(pid: object, start_ticks: object = None, not_after: object = None) -> bool:
    """Is `pid` alive and still the process that was recorded?

    `start_ticks` is its start time as recorded when it was running (exact); without it,
    `not_after` (an ISO time the process wrote) tells a pid reused by a process that
    started later, e.g. after a reboot. Where /proc is missing, a live pid is trusted.
    """
    if not valid_pid(pid) or not pid_alive(pid):
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return True
    if isinstance(start_ticks, int) and not isinstance(start_ticks, bool):
        return ticks == start_ticks
    if isinstance(not_after, str):
        try:
            written = datetime.fromisoformat(not_after).timestamp()
        except ValueError:
            return True
        started = process_start_time(pid)
        # 2 s of slack: the recorded time has whole seconds, the boot time too.
        return started is None or started <= written + 2
    return True
