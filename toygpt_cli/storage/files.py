"""Crash-safe file writes: every file is written to a temporary file and renamed into place.

A reader (or a process killed at any moment) sees either the old file or the new one,
never a half-written one. JSON-lines files are appended one flushed record at a time,
and readers skip a trailing partial line left by a crash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from toygpt_cli.errors import ToygptError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def new_temp_file(dest: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A temporary file beside `dest` (same filesystem, so a rename is atomic), with the
    permissions a normally created file would get (mkstemp alone makes it 0600)."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.fchmod(fd, _umask_mode())
    return fd, Path(name)


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk (POSIX only).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    try:
        fd, tmp = new_temp_file(path)
    except OSError as exc:
        raise ToygptError(f"could not write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ToygptError(f"could not write {path}: {exc.strerror or exc}") from exc
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through `writer(f)` on a temporary binary file, then rename."""
    with atomic_open(path, "wb") as f:
        writer(f)


def write_json(path: Path, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def overwrite_in_place(path: Path, obj: Any) -> bool:
    """Rewrite a small JSON file in place, compactly: the last resort on a full disk, where a
    temporary file cannot be made but the file's own blocks can be reused. A crash in the
    middle can leave it torn, which readers report as damage. True when it worked."""
    data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if len(data) > max(st.st_size, st.st_blocks * 512):
            return False  # it would need new blocks
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def read_regular(path: Path, limit: int = 64 << 20) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Anything else (a FIFO, which
    would block the reader forever; a device; a folder; a larger file) raises OSError,
    without waiting: callers treat it as a file that cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    return json.loads(read_regular(path).decode("utf-8"))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line and push it to disk before returning."""
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
    try:
        # One write(2) right after open(2): a kill between creating the file and writing
        # the line (which left an empty file) has almost no window left to land in.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ToygptError(f"could not write {path}: {exc.strerror or exc}") from exc


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (from a crash mid-append) is ignored."""
    if not Path(path).exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite a JSON-lines file keeping only the records `keep` accepts (atomically)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    with atomic_open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def sha256_file(path: Path, progress=None, chunk: int = 16 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks; `progress("hashing", done, total)`
    hears about a long one. An unreadable file is one line."""
    path = Path(path)
    digest, done = hashlib.sha256(), 0
    try:
        total = path.stat().st_size
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress("hashing", done, total)
    except OSError as exc:
        raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def crc32_file(path: Path, chunk: int = 16 << 20) -> int:
    """The CRC-32 of a file's bytes, read in chunks (the page cache keeps them, not us)."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc
