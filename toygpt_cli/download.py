"""Downloading corpora safely: retries, a sha256 check, a temp file and a rename, SHA256SUMS."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.fileio import atomic_open, new_temp_file

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_FILE = "tinyshakespeare.txt"
CHECKSUM_FILE = "SHA256SUMS"  # coreutils format: `sha256sum -c SHA256SUMS` works in data/

ProgressFn = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checksums(data_dir: Path) -> dict[str, str]:
    """{file name: sha256} recorded for the files fetched into `data_dir`."""
    path = Path(data_dir) / CHECKSUM_FILE
    sums: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if name:
                sums[name] = digest
    return sums


def _record_checksum(data_dir: Path, name: str, digest: str) -> None:
    sums = read_checksums(data_dir)
    sums[name] = digest
    with atomic_open(Path(data_dir) / CHECKSUM_FILE, "w") as f:
        f.writelines(f"{d}  {n}\n" for n, d in sorted(sums.items()))


@dataclass
class FetchResult:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False when an intact copy was already there


def file_name_for(url: str) -> str:
    if url == TINY_SHAKESPEARE_URL:
        return TINY_SHAKESPEARE_FILE
    name = Path(urlparse(url).path).name
    return name or "corpus.txt"


def fetch(
    url: str = TINY_SHAKESPEARE_URL,
    data_dir: Path = Path("data"),
    *,
    sha256: str | None = None,
    name: str | None = None,
    force: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    progress: ProgressFn | None = None,
) -> FetchResult:
    """Download `url` into `data_dir`, verifying its sha256, through a temp file and a rename.

    Tiny Shakespeare's checksum is known; for other URLs `sha256` is checked when given and
    the observed checksum is recorded in data/SHA256SUMS either way.
    """
    if sha256 is None and url == TINY_SHAKESPEARE_URL:
        sha256 = TINY_SHAKESPEARE_SHA256
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UsageError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    data_dir = Path(data_dir)
    name = name or file_name_for(url)
    dest = data_dir / name
    if dest.exists() and not force:
        expected = sha256 or read_checksums(data_dir).get(name)
        actual = sha256_file(dest)
        if expected is None or actual == expected:
            return FetchResult(dest, actual, dest.stat().st_size, downloaded=False)
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToygptError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
    try:
        digest, size = _download_with_retries(
            url, dest, sha256, timeout, retries, backoff, progress
        )
    except BaseException:
        if created:  # leave nothing behind, not even an empty folder
            with contextlib.suppress(OSError):
                data_dir.rmdir()
        raise
    _record_checksum(data_dir, name, digest)
    return FetchResult(dest, digest, size, downloaded=True)


def _download_with_retries(url, dest, sha256, timeout, retries, backoff, progress):
    for attempt in range(retries + 1):
        try:
            return _download(url, dest, sha256, timeout, progress)
        except _Retryable as exc:
            if attempt == retries:
                raise ToygptError(f"download failed after {retries + 1} attempts: {exc}") from None
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


class _Retryable(Exception):
    """A failure worth another attempt: connection problems, timeouts, 5xx."""


def _download(
    url: str, dest: Path, sha256: str | None, timeout: float, progress: ProgressFn | None
) -> tuple[str, int]:
    host = urlparse(url).netloc or url
    fd, tmp = new_temp_file(dest, ".part")
    try:
        h = hashlib.sha256()
        size = 0
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} from {url}")
            if response.status_code >= 400:
                raise ToygptError(f"HTTP {response.status_code} from {url}")
            total = response.headers.get("content-length")
            total_bytes = int(total) if total and total.isdigit() else None
            for chunk in response.iter_bytes():
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
                if progress:
                    progress(size, total_bytes)
            if total_bytes is not None and size != total_bytes:
                raise _Retryable(f"connection closed after {size} of {total_bytes} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256:
            raise ToygptError(
                f"checksum mismatch for {url}: expected {sha256}, got {digest}; nothing was saved"
            )
        if size == 0:
            raise ToygptError(f"{url} returned an empty file; nothing was saved")
        os.replace(tmp, dest)
        return digest, size
    except httpx.TimeoutException as exc:
        raise _Retryable(f"timed out talking to {host}") from exc
    except (httpx.ConnectError, httpx.NetworkError) as exc:
        raise _Retryable(f"cannot reach {host} (offline?): {exc}") from exc
    except httpx.RemoteProtocolError as exc:
        raise _Retryable(f"transfer from {host} was cut off: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ToygptError(f"download from {url} failed: {exc}") from exc
    except OSError as exc:
        raise ToygptError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
