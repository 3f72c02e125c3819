"""Downloads (`toygpt data fetch`): verified, capped, bounded in time, nothing half-saved."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from toygpt_cli.corpus import download
from toygpt_cli.corpus.download import (
    fetch,
    find_tiny_shakespeare,
    parse_size,
    read_checksums,
)
from toygpt_cli.errors import ToygptError, UsageError

from ..cli_helpers import toygpt


def test_fetch_downloads_and_verifies(tmp_path, http_server):
    url = http_server["base"] + "/input.txt"
    result = fetch(url, tmp_path, sha256=http_server["sha256"])
    assert result.downloaded and result.path.read_bytes() == http_server["body"]
    assert read_checksums(tmp_path) == {"input.txt": http_server["sha256"]}
    again = fetch(url, tmp_path, sha256=http_server["sha256"])
    assert not again.downloaded
    assert http_server["hits"]["/input.txt"] == 1


def test_fetch_records_sha_without_expected(tmp_path, http_server):
    result = fetch(http_server["base"] + "/input.txt", tmp_path)
    assert read_checksums(tmp_path)["input.txt"] == result.sha256 == http_server["sha256"]


def test_fetch_retries_after_500(tmp_path, http_server):
    result = fetch(http_server["base"] + "/flaky.txt", tmp_path, backoff=0)
    assert result.path.read_bytes() == http_server["body"]
    assert http_server["hits"]["/flaky.txt"] == 2


def _only_checksums_or_nothing(folder):
    return [p.name for p in folder.iterdir()] if folder.exists() else []


@pytest.mark.parametrize(
    "route, message",
    [
        ("/missing.txt", "HTTP 404"),
        ("/always500.txt", "HTTP 503"),
        ("/cut.txt", "cut off|closed after"),
        ("/wrong.txt", "checksum mismatch"),
    ],
)
def test_fetch_failures_leave_nothing(tmp_path, http_server, route, message):
    folder = tmp_path / "data"
    with pytest.raises(ToygptError, match=message):
        fetch(
            http_server["base"] + route,
            folder,
            sha256=http_server["sha256"],
            backoff=0,
            retries=1,
        )
    assert not folder.exists()  # not even an empty folder


def test_fetch_offline_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ToygptError, match="cannot reach 127.0.0.1"):
        fetch(f"http://127.0.0.1:{port}/x.txt", tmp_path, backoff=0, retries=1)
    assert _only_checksums_or_nothing(tmp_path) == []


def test_fetch_keeps_existing_file_when_refetch_fails(tmp_path, http_server):
    good = fetch(http_server["base"] + "/input.txt", tmp_path)
    with pytest.raises(ToygptError):
        fetch(
            http_server["base"] + "/cut.txt",
            tmp_path,
            name="input.txt",
            force=True,
            backoff=0,
            retries=0,
        )
    assert good.path.read_bytes() == http_server["body"]


# -- servers that compress, inflate, drip, or send something that is not text ---------------


def test_gzip_content_encoding_with_a_content_length(tmp_path, http_server):
    """Content-Length counts the compressed bytes; the file is the decompressed text."""
    result = fetch(http_server["base"] + "/gzip.txt", tmp_path, sha256=http_server["sha256"])
    assert result.path.read_bytes() == http_server["body"]
    assert result.size == len(http_server["body"])


def test_a_gzip_bomb_is_capped(tmp_path, http_server):
    folder = tmp_path / "data"
    with pytest.raises(ToygptError, match=r"larger than --max-bytes 1,048,576 .*decompressed"):
        fetch(http_server["base"] + "/bomb.txt", folder, max_bytes=1 << 20, retries=0)
    assert not folder.exists()
    result = fetch(http_server["base"] + "/bomb.txt", folder, max_bytes=16 << 20)  # raised
    assert result.size == 8 << 20


def test_a_declared_size_over_the_cap_is_refused_before_downloading(tmp_path, http_server):
    with pytest.raises(ToygptError, match=r"larger than --max-bytes 1,000 \(it is 30,000 bytes"):
        fetch(http_server["base"] + "/input.txt", tmp_path / "d", max_bytes=1000, retries=0)


@pytest.mark.parametrize(
    "route, message",
    [("/latin1.txt", r"not UTF-8 text \(bad byte at offset 3\)"), ("/nul.txt", "NUL")],
)
def test_a_download_that_is_not_text_is_refused(tmp_path, http_server, route, message):
    with pytest.raises(ToygptError, match=message):
        fetch(http_server["base"] + route, tmp_path / "data", retries=0)
    assert not (tmp_path / "data").exists()


def test_a_dripping_server_hits_the_overall_deadline(tmp_path, http_server):
    folder = tmp_path / "data"
    with pytest.raises(ToygptError, match=r"did not finish within --timeout 1 s"):
        fetch(http_server["base"] + "/drip.txt", folder, timeout=1, retries=3, backoff=0)
    assert not folder.exists()


# -- what killed fetches leave behind, and where a fetch may write ---------------------------


def test_a_killed_fetch_leaves_a_part_file_that_the_next_fetch_sweeps(tmp_path, http_server):
    folder = tmp_path / "data"
    folder.mkdir()
    code = (
        "import sys; from toygpt_cli.corpus.download import fetch; "
        f"fetch({http_server['base'] + '/drip.txt'!r}, {str(folder)!r}, name='input.txt')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not list(folder.glob(".input.txt.*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (part,) = folder.glob(".input.txt.*.part")
    live_copy = folder / ".other.txt.abc.part"  # another file's part: not ours to sweep
    live_copy.write_bytes(b"x")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part.exists()  # what a kill leaves
    fetch(http_server["base"] + "/input.txt", folder)
    assert not part.exists() and live_copy.exists()
    assert sorted(p.name for p in folder.iterdir()) == [
        ".other.txt.abc.part",
        "SHA256SUMS",
        "input.txt",
    ]


def test_a_part_file_of_a_running_fetch_is_not_swept(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    fd, part = download._open_part(folder / "input.txt")  # held, as by a live fetch
    try:
        download._sweep_stale_parts(folder / "input.txt")
        assert part.exists()
    finally:
        os.close(fd)
    download._sweep_stale_parts(folder / "input.txt")
    assert not part.exists()


@pytest.mark.parametrize(
    "url, message",
    [
        ("/..", r"cannot save .* as '\.\.'"),
        ("/a/%2e%2e", r"as '\.\.'"),
        ("/x%2finput.txt", r"as 'x/input.txt'"),
        ("/.bashrc", r"as '\.bashrc'"),
        ("/SHA256SUMS", "as 'SHA256SUMS'"),
    ],
)
def test_a_url_whose_path_is_not_a_file_name_is_refused(tmp_path, http_server, url, message):
    with pytest.raises(UsageError, match=message):
        fetch(http_server["base"] + url, tmp_path / "data")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://example.org/a.txt", "must be an http:// or https:// URL"),
        ("file:///etc/passwd", "must be an http:// or https:// URL"),
        ("http://[::1/a.txt", "not a valid URL"),
        ("http://127.0.0.1:99999/a.txt", "not a valid URL"),
    ],
)
def test_a_bad_url_is_one_usage_error(tmp_path, url, message):
    with pytest.raises(UsageError, match=message):
        fetch(url, tmp_path)


def test_fetch_into_a_read_only_folder_is_one_line(dirs, http_server, monkeypatch):
    import errno
    import tempfile

    data, _ = dirs
    data.mkdir(parents=True)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    r = toygpt("data", "fetch", "--url", http_server["base"] + "/input.txt")
    assert r.exit_code == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: cannot write into {data}: Read-only file system"
    ]
    assert list(data.iterdir()) == []


def test_data_fetch_options_and_json(dirs, http_server):
    data, _ = dirs
    url = http_server["base"] + "/bomb.txt"
    r = toygpt("data", "fetch", "--url", url, "--max-bytes", "1M")
    assert r.exit_code == 1 and "larger than --max-bytes 1,048,576" in r.stderr
    r = toygpt("data", "fetch", "--url", url, "--max-bytes", "9M", "--json", "--timeout", "60")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["bytes"] == 8 << 20 and result["downloaded"] is True
    assert result["path"] == str(data / "bomb.txt")
    assert result["sha256"] == hashlib.sha256(b"a" * (8 << 20)).hexdigest()
    bad = toygpt("data", "fetch", "--url", http_server["base"] + "/..")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    bad = toygpt("data", "fetch", "--max-bytes", "lots")
    assert bad.exit_code == 2 and "--max-bytes must look like" in bad.stderr


@pytest.mark.parametrize(
    "text, size", [("1048576", 1 << 20), ("500M", 500 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


# -- Tiny Shakespeare under any name ---------------------------------------------------------


@pytest.fixture
def fake_tiny_shakespeare(monkeypatch, tiny_text):
    """Pretend the 30,000-character test corpus is Tiny Shakespeare (checksum and size)."""
    body = tiny_text.encode()
    monkeypatch.setattr(download, "TINY_SHAKESPEARE_SHA256", hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(download, "TINY_SHAKESPEARE_SIZE", len(body))
    return body


def test_tiny_shakespeare_is_found_whatever_its_name(tmp_path, fake_tiny_shakespeare):
    assert find_tiny_shakespeare(tmp_path / "missing") is None
    assert find_tiny_shakespeare(tmp_path) is None
    (tmp_path / "notes.txt").write_bytes(b"x" * len(fake_tiny_shakespeare))  # same size only
    assert find_tiny_shakespeare(tmp_path) is None
    os.mkfifo(tmp_path / "pipe")  # never opened: it has no size
    (tmp_path / "shakespeare").write_bytes(fake_tiny_shakespeare)  # any name, no suffix
    assert find_tiny_shakespeare(tmp_path) == tmp_path / "shakespeare"
    (tmp_path / "input.txt").write_bytes(fake_tiny_shakespeare)  # the seed's layout
    assert find_tiny_shakespeare(tmp_path) == tmp_path / "input.txt"
    shutil.copy(tmp_path / "input.txt", tmp_path / "shakespeare.data")  # recorded, not .txt
    (tmp_path / "SHA256SUMS").write_text(f"{download.TINY_SHAKESPEARE_SHA256}  shakespeare.data\n")
    assert find_tiny_shakespeare(tmp_path) == tmp_path / "shakespeare.data"
    (tmp_path / "tinyshakespeare.txt").write_bytes(fake_tiny_shakespeare)
    assert find_tiny_shakespeare(tmp_path) == tmp_path / "tinyshakespeare.txt"


def test_a_changed_copy_is_not_tiny_shakespeare(tmp_path, fake_tiny_shakespeare):
    changed = bytearray(fake_tiny_shakespeare)
    changed[0] ^= 1
    (tmp_path / "input.txt").write_bytes(bytes(changed))
    assert find_tiny_shakespeare(tmp_path) is None


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_target_that_is_not_a_file_is_one_line(tmp_path, http_server, kind):
    target = tmp_path / "input.txt"
    target.mkdir() if kind == "folder" else os.mkfifo(target)
    with pytest.raises(ToygptError, match="is not a regular file"):
        fetch(http_server["base"] + "/input.txt", tmp_path, retries=0)
