"""Downloading corpora safely, and finding Tiny Shakespeare under whatever name it has.

A fetch retries connection errors and 5xx responses with backoff, within one overall
deadline; it caps the size (after decompression), checks that the text is UTF-8 and its
sha256, and writes through a locked `.NAME.XXXX.part` file and a rename, so nothing that
looks complete is left by a failure. A `.part` left by a killed fetch is swept by the next
fetch of the same file. The checksums of fetched files are kept in data/SHA256SUMS.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import glob
import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.storage.files import atomic_open, new_temp_file, sha256_file

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_SIZE = 1_115_394
TINY_SHAKESPEARE_FILE = "tinyshakespeare.txt"
CHECKSUM_FILE = "SHA256SUMS"  # coreutils format: `sha256sum -c SHA256SUMS` works in data/

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB of text once decompressed: enwik9 fits, a bomb does not
DEFAULT_TIMEOUT = 600.0  # seconds for a whole fetch, retries included
READ_TIMEOUT = 30.0  # seconds for one connect or one read

ProgressFn = Callable[[int, int | None], None]  # (bytes received, total bytes or None)


def read_checksums(data_dir: Path) -> dict[str, str]:
    """{file name: sha256} recorded for the files fetched into `data_dir`."""
    path = Path(data_dir) / CHECKSUM_FILE
    sums: dict[str, str] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
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


def find_tiny_shakespeare(data_dir: Path) -> Path | None:
    """Tiny Shakespeare in `data_dir` whatever its file name, or None.

    In order: data/tinyshakespeare.txt (what `data fetch` saves); files whose recorded
    checksum in SHA256SUMS is Tiny Shakespeare's; then any file of exactly its size.
    Only files of that size are hashed (about 1 MB each), so this stays cheap.
    """
    data_dir = Path(data_dir)
    canonical = data_dir / TINY_SHAKESPEARE_FILE
    if canonical.is_file():
        return canonical
    recorded = [n for n, d in read_checksums(data_dir).items() if d == TINY_SHAKESPEARE_SHA256]
    try:
        others = sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))
    except OSError:
        others = []
    for name in dict.fromkeys(recorded + others):  # recorded first, each once
        path = data_dir / name
        with contextlib.suppress(OSError):
            if (
                path.is_file()
                and path.stat().st_size == TINY_SHAKESPEARE_SIZE
                and sha256_file(path) == TINY_SHAKESPEARE_SHA256
            ):
                return path
    return None


def parse_size(text: str) -> int:
    """'1048576', '500M', '2G', '1.5GiB' -> bytes (K, M, G are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"--max-bytes must look like 1000000, 500M or 2G, got {text!r}")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]
    size = int(float(m.group(1)) * scale)
    if size <= 0:
        raise UsageError(f"--max-bytes must be greater than 0, got {text!r}")
    return size


@dataclass
class FetchResult:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False when an intact copy was already there


def file_name_for(url: str) -> str:
    """The name a URL's file is saved under: the last part of its path."""
    if url == TINY_SHAKESPEARE_URL:
        return TINY_SHAKESPEARE_FILE
    name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    return name or "corpus.txt"


def _check_name(name: str, url: str) -> None:
    bad = (
        name in (".", "..")
        or name.startswith(".")  # hidden names are for temporary files
        or any(c in name for c in "/\\\0")
        or name == CHECKSUM_FILE
        or len(name.encode()) > 255
    )
    if bad:
        raise UsageError(
            f"cannot save {url} as {name!r}: the URL's path must end in a plain file name"
        )


def _check_url(url: str) -> str:
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise UsageError(f"not a valid URL: {url!r} ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--url must be an http:// or https:// URL, got {url!r}")
    return parsed.hostname or parsed.netloc


def fetch(
    url: str = TINY_SHAKESPEARE_URL,
    data_dir: Path = Path("data"),
    *,
    sha256: str | None = None,
    name: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 3,
    backoff: float = 1.0,
    progress: ProgressFn | None = None,
) -> FetchResult:
    """Download `url` into `data_dir`, verifying its sha256, through a temp file and a rename.

    `timeout` bounds the whole fetch in seconds (retries and waits included); `max_bytes`
    the file's size once decompressed. Tiny Shakespeare's checksum is known; for other URLs
    `sha256` is checked when given and the observed checksum is recorded in
    data/SHA256SUMS either way.
    """
    host = _check_url(url)
    if sha256 is None and url == TINY_SHAKESPEARE_URL:
        sha256 = TINY_SHAKESPEARE_SHA256
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UsageError(f"--sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if not timeout > 0:
        raise UsageError(f"--timeout must be greater than 0 seconds, got {timeout}")
    if max_bytes <= 0:
        raise UsageError(f"--max-bytes must be greater than 0, got {max_bytes}")
    data_dir = Path(data_dir)
    name = name or file_name_for(url)
    _check_name(name, url)
    dest = data_dir / name
    if dest.exists() and not dest.is_file():  # a folder, or a FIFO that would block
        raise ToygptError(f"{dest} is not a regular file; cannot save {url} there")
    if dest.exists() and not force:
        expected = sha256 or read_checksums(data_dir).get(name)
        try:
            actual = sha256_file(dest)
        except OSError as exc:
            raise ToygptError(f"cannot read {dest}: {exc.strerror or exc}") from None
        if expected is None or actual == expected:
            return FetchResult(dest, actual, dest.stat().st_size, downloaded=False)
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToygptError(f"cannot create data directory {data_dir}: {exc.strerror}") from exc
    try:
        _sweep_stale_parts(dest)
        job = _Job(url, host, dest, sha256, time.monotonic() + timeout, timeout, max_bytes)
        digest, size = _download_with_retries(job, retries, backoff, progress)
    except BaseException:
        if created:  # leave nothing behind, not even an empty folder
            with contextlib.suppress(OSError):
                data_dir.rmdir()
        raise
    _record_checksum(data_dir, name, digest)
    return FetchResult(dest, digest, size, downloaded=True)


def _part_pattern(dest: Path) -> str:
    return str(dest.parent / glob.escape(f".{dest.name}.")) + "*.part"


def _sweep_stale_parts(dest: Path) -> None:
    """Remove `.part` files of `dest` that no live fetch holds (their fetch was killed)."""
    for part in glob.glob(_part_pattern(dest)):
        try:
            fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a fetch still running?
            os.unlink(part)
        except OSError:
            pass
        finally:
            os.close(fd)


@dataclass
class _Job:
    url: str
    host: str
    dest: Path
    sha256: str | None
    deadline: float  # time.monotonic() by which the whole fetch must be over
    timeout: float
    max_bytes: int

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def out_of_time(self, why: str) -> ToygptError:
        return ToygptError(
            f"download from {self.host} did not finish within --timeout {self.timeout:g} s "
            f"({why}); nothing was saved"
        )


class _Retryable(Exception):
    """A failure worth another attempt: connection problems, timeouts, 5xx."""


def _download_with_retries(job: _Job, retries, backoff, progress) -> tuple[str, int]:
    for attempt in range(retries + 1):
        try:
            return _download(job, progress)
        except _Retryable as exc:
            wait = backoff * 2**attempt
            if attempt < retries and job.left() <= wait:
                raise job.out_of_time(f"last attempt: {exc}") from None
            if attempt == retries:
                raise ToygptError(f"download failed after {retries + 1} attempts: {exc}") from None
            time.sleep(wait)
    raise AssertionError("unreachable")


def _open_part(dest: Path) -> tuple[int, Path]:
    try:
        fd, tmp = new_temp_file(dest, ".part")
    except OSError as exc:
        raise ToygptError(f"cannot write into {dest.parent}: {exc.strerror or exc}") from None
    fcntl.flock(fd, fcntl.LOCK_EX)  # ours alone: marks it live for other fetches' sweeps
    return fd, tmp


def _download(job: _Job, progress: ProgressFn | None) -> tuple[str, int]:
    url, dest = job.url, job.dest
    fd, tmp = _open_part(dest)
    size = 0
    try:
        h = hashlib.sha256()
        text = codecs.getincrementaldecoder("utf-8")()
        # A read may wait at most a tenth of the budget, so a stalled or dripping server
        # overruns the deadline by little (the deadline is checked between reads).
        per_op = max(min(READ_TIMEOUT, max(job.timeout / 10, 1.0), job.left()), 0.05)
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(timeout=per_op, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 500:
                raise _Retryable(f"HTTP {response.status_code} from {url}")
            if response.status_code >= 400:
                raise ToygptError(f"HTTP {response.status_code} from {url}")
            total = response.headers.get("content-length")
            total_bytes = int(total) if total and total.isdigit() else None
            encoding = response.headers.get("content-encoding", "").strip().lower()
            if total_bytes and encoding in ("", "identity") and total_bytes > job.max_bytes:
                raise _too_big(url, job.max_bytes, f"it is {total_bytes:,} bytes")
            for chunk in response.iter_bytes():
                if job.left() < 0:
                    raise job.out_of_time(f"{response.num_bytes_downloaded:,} bytes received")
                size += len(chunk)
                if size > job.max_bytes:
                    raise _too_big(url, job.max_bytes, "once decompressed" if encoding else "")
                _check_text(url, text, chunk, size - len(chunk))
                out.write(chunk)
                h.update(chunk)
                if progress:
                    progress(response.num_bytes_downloaded, total_bytes)
            _check_text(url, text, b"", size, final=True)
            # Content-Length counts the bytes sent, compressed or not: compare those.
            got = response.num_bytes_downloaded
            if total_bytes is not None and got != total_bytes:
                raise _Retryable(f"connection closed after {got} of {total_bytes} bytes")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if job.sha256 is not None and digest != job.sha256:
            raise ToygptError(
                f"checksum mismatch for {url}: expected {job.sha256}, got {digest}; "
                "nothing was saved"
            )
        if size == 0:
            raise ToygptError(f"{url} returned an empty file; nothing was saved")
        os.replace(tmp, dest)
        return digest, size
    except httpx.TimeoutException as exc:
        if job.left() <= 0:
            raise job.out_of_time(f"{size:,} bytes received") from None
        raise _Retryable(f"timed out talking to {job.host}") from exc
    except (httpx.ConnectError, httpx.NetworkError) as exc:
        raise _Retryable(f"cannot reach {job.host} (offline?): {exc}") from exc
    except httpx.RemoteProtocolError as exc:
        raise _Retryable(f"transfer from {job.host} was cut off: {exc}") from exc
    except httpx.DecodingError as exc:
        raise ToygptError(f"{url} sent data that does not decompress: {exc}") from None
    except httpx.HTTPError as exc:
        raise ToygptError(f"download from {url} failed: {exc}") from exc
    except OSError as exc:
        raise ToygptError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _too_big(url: str, limit: int, detail: str) -> ToygptError:
    why = f" ({detail})" if detail else ""
    return ToygptError(
        f"{url} is larger than --max-bytes {limit:,}{why}; nothing was saved "
        "(raise --max-bytes to allow it)"
    )


def _check_text(url: str, decoder, chunk: bytes, offset: int, final: bool = False) -> None:
    """Corpora are UTF-8 text: no invalid sequences, no NUL bytes."""
    try:
        decoder.decode(chunk, final=final)
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"{url} is not UTF-8 text (bad byte at offset {offset + exc.start:,}); "
            "nothing was saved"
        ) from None
    if b"\0" in chunk:
        raise ToygptError(f"{url} is not text (it holds NUL bytes); nothing was saved")
