"""storage/files.py: every file replaced whole or not at all, JSON lines appended one
flushed record at a time, a torn last line ignored."""

import json
import os

import pytest

from toygpt_cli.errors import ToygptError
from toygpt_cli.storage import files


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "f.json"
    files.write_json(path, {"a": 1})

    def half_then_fail(f):
        f.write(b'{"a": 2')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        files.write_atomic(path, half_then_fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_json(tmp_path / "f.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


def test_an_unwritable_folder_is_one_line(tmp_path):
    with pytest.raises(ToygptError, match="could not write .*: No such file or directory"):
        files.write_json(tmp_path / "missing" / "f.json", {})


def test_json_lines_append_and_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    files.append_jsonl(path, {"step": 1})
    files.append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a crash mid-append
    assert files.read_jsonl(path) == [{"step": 1}, {"step": 2}]
    files.truncate_jsonl(path, lambda r: r["step"] < 2)
    assert path.read_text() == '{"step":1}\n'


def test_sha256_of_a_file(tmp_path):
    import hashlib

    path = tmp_path / "x"
    path.write_bytes(b"abc" * 100_000)
    assert files.sha256_file(path) == hashlib.sha256(b"abc" * 100_000).hexdigest()
