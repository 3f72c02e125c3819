"""`toygpt runs rm`: only toygpt runs, only their files, one line for every refusal."""

import errno
import json
import os
import re
from pathlib import Path

import pytest

from toygpt_cli.runs.folder import Run, list_run_dirs

from ..cli_helpers import toygpt
from ..fake_runs import make_run


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line_error(r, pattern: str, code: int = 1) -> None:
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert re.search(pattern, lines[0]), lines[0]


def _rm(*args, answer=None):
    return toygpt("runs", "rm", *args, input=answer)


@pytest.fixture
def victim(tmp_path):
    """The folder of the bug report: a config.json beside a source tree."""
    folder = tmp_path / "victim"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.c").write_text("int main;")
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("how", ["full path", "relative", "dot"])
def test_rm_never_touches_a_folder_that_is_not_a_run(dirs, victim, monkeypatch, how):
    _, runs = dirs
    make_run(runs, "20261123-201501")
    before = _tree(victim)
    if how == "dot":
        monkeypatch.chdir(victim)
        ref = "."
    else:
        monkeypatch.chdir(victim.parent)
        ref = str(victim) if how == "full path" else "victim"
    r = _rm("--yes", ref)
    _one_line_error(r, "not a toygpt run|outside the runs directory|refusing to remove '.'")
    assert _tree(victim) == before
    (victim / "config.json").write_text(json.dumps({"model": {}, "train": {}}))  # looks like one
    r = _rm("--yes", str(victim))
    _one_line_error(r, r"holds files that toygpt did not write \(src/\); nothing removed")
    assert (victim / "src" / "main.c").exists()


def test_rm_refuses_dot_dotdot_and_the_runs_directory(dirs, monkeypatch):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    (runs / "config.json").write_text(json.dumps({"model": {}, "train": {}}))
    monkeypatch.chdir(run)
    for ref in (".", "..", "./", str(runs), str(runs.parent)):
        r = _rm("--yes", ref)
        assert r.exit_code == 1 and "Traceback" not in r.stderr, (ref, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (run / "ckpt.pt").exists() and (runs / "config.json").exists()


def test_rm_asks_with_the_full_path_and_removes_every_file_toygpt_writes(dirs):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    for name in ("eval.json", "loss.png", "model.safetensors", ".lock", ".ckpt.pt.x1y2.tmp"):
        (run / name).write_bytes(b"x")
    (run / "tb" / "hparams").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.1.host.1").write_bytes(b"x")
    (run / "tb" / "hparams" / "events.out.tfevents.2.host.1").write_bytes(b"x")
    r = _rm("latest", answer="n\n")
    assert r.exit_code == 1 and run.exists()
    assert f"delete run {os.path.abspath(run)}?" in r.stderr
    r = _rm("latest", answer="y\n")
    assert r.exit_code == 0, r.stderr
    assert not run.exists() and runs.exists()


@pytest.mark.parametrize(
    "extra, shown",
    [
        ("notes.txt", "notes.txt"),
        ("data/", "data/"),
        ("tb/notes.txt", "tb/notes.txt"),
        ("config.json.bak", "config.json.bak"),
        (".DS_Store", ".DS_Store"),
    ],
)
def test_rm_refuses_a_run_holding_anything_else(dirs, extra, shown):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    target = run / extra
    target.parent.mkdir(parents=True, exist_ok=True)
    if extra.endswith("/"):
        target.mkdir()
    else:
        target.write_text("mine")
    before = _tree(run)
    r = _rm("--yes", run.name)
    _one_line_error(r, re.escape(shown) + r".*nothing removed")
    assert _tree(run) == before


def test_rm_refuses_a_file_with_a_run_files_name_that_is_a_folder(dirs):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    (run / "ckpt.pt").unlink()
    (run / "ckpt.pt").mkdir()
    (run / "ckpt.pt" / "keep").write_text("x")
    _one_line_error(_rm("--yes", run.name), r"ckpt.pt/")
    assert (run / "ckpt.pt" / "keep").exists()


def test_rm_outside_the_runs_directory_needs_the_full_path(dirs, tmp_path, monkeypatch):
    _, runs = dirs
    make_run(runs, "20261123-201501")
    elsewhere = make_run(tmp_path / "old-runs", "20251001-101010")
    monkeypatch.chdir(tmp_path)
    _one_line_error(_rm("--yes", "old-runs/20251001-101010"), "outside the runs directory")
    assert elsewhere.exists()
    r = _rm("--yes", str(elsewhere))
    assert r.exit_code == 0, r.stderr
    assert not elsewhere.exists() and (tmp_path / "old-runs").exists()


def test_rm_refuses_a_symlinked_run_and_unlinks_links_inside_a_run(dirs, tmp_path):
    _, runs = dirs
    real = make_run(tmp_path / "store", "20261123-201501")
    runs.mkdir(parents=True)
    (runs / "20261123-201502").symlink_to(real)
    _one_line_error(_rm("--yes", "20261123-201502"), "is a symbolic link")
    assert (real / "ckpt.pt").exists()
    run = make_run(runs, "20261123-201503")
    outside = tmp_path / "precious.pt"
    outside.write_bytes(b"keep me")
    (run / "best.pt").unlink()
    (run / "best.pt").symlink_to(outside)
    assert _rm("--yes", run.name).exit_code == 0
    assert not run.exists() and outside.read_bytes() == b"keep me"


def test_rm_on_a_read_only_file_system_is_one_line_and_removes_nothing(dirs, monkeypatch):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    before = _tree(run)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not mode & os.W_OK)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    _one_line_error(_rm("--yes", run.name), "read-only file system; nothing removed")
    assert _tree(run) == before


def test_rm_cut_short_keeps_a_run_that_lists_and_can_be_removed_again(dirs, monkeypatch):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    real_unlink = Path.unlink

    def failing_unlink(self, missing_ok=False):
        if self.name == "best.pt":
            raise OSError(errno.EIO, "Input/output error")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    _one_line_error(_rm("--yes", run.name), "could not finish removing .*Input/output error")
    assert [p.name for p in list_run_dirs(runs)] == [run.name]  # config.json goes last
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert _rm("--yes", run.name).exit_code == 0 and not run.exists()


def test_rm_refuses_a_locked_run_even_with_force(dirs):
    _, runs = dirs
    run = make_run(runs, "20261123-201501")
    handle = Run(run).lock()
    try:
        _one_line_error(_rm("--yes", "--force", run.name), "being trained by another process")
        assert (run / "ckpt.pt").exists()
    finally:
        handle.release()
    assert _rm("--yes", run.name).exit_code == 0 and not run.exists()


def test_rm_of_a_run_marked_running_without_a_lock_needs_force(dirs):
    _, runs = dirs
    # An old run whose status names a live process that started before it was last updated
    # (this one): it cannot be told apart from its trainer, so --force is the way out.
    run = make_run(runs, "20261123-201501", status="running", pid=os.getpid(), updated=None)
    _one_line_error(_rm("--yes", run.name), r"still training .*--force")
    assert run.exists()
    assert _rm("--yes", "--force", run.name).exit_code == 0 and not run.exists()


def test_rm_of_several_runs_checks_all_before_removing_any(dirs):
    _, runs = dirs
    good = make_run(runs, "20261123-201501")
    bad = make_run(runs, "20261123-201502")
    (bad / "notes.txt").write_text("mine")
    _one_line_error(_rm("--yes", good.name, bad.name), "notes.txt")
    assert good.exists() and bad.exists()
    r = toygpt("runs", "rm", "--yes", good.name, good.name)  # named twice: removed once
    assert r.exit_code == 0 and not good.exists()
