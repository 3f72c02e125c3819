from datetime import datetime, timezone

import pytest

from toygpt_cli.errors import ToygptError
from toygpt_cli.runs import Run, create_run_dir, list_run_dirs, resolve_run


def _run(runs, when, **status):
    path = create_run_dir(runs, datetime(2026, 11, 23, 20, 15, when, tzinfo=timezone.utc))
    Run(path).write_config({"name": path.name})
    if status:
        Run(path).update_status(**status)
    return path


def test_run_names_are_timestamps_and_unique_within_a_second(tmp_path):
    a = _run(tmp_path, 2)
    b = _run(tmp_path, 2)
    c = _run(tmp_path, 2)
    assert (a.name, b.name, c.name) == ("20261123-201502", "20261123-201502-2", "20261123-201502-3")


def test_latest_and_latest_tilde_resolution(tmp_path):
    names = [_run(tmp_path, s).name for s in (1, 1, 3)]
    for _ in range(9):  # "-10" must sort after "-9", not after "-1"
        names.append(_run(tmp_path, 5).name)
    assert [p.name for p in list_run_dirs(tmp_path)] == names[::-1]
    assert resolve_run("latest", tmp_path).name == "20261123-201505-9"
    assert resolve_run("latest~1", tmp_path).name == "20261123-201505-8"
    assert resolve_run("20261123-201501-2", tmp_path).name == "20261123-201501-2"
    assert resolve_run(str(tmp_path / names[0]), tmp_path).name == names[0]


def test_unknown_run_lists_existing(tmp_path):
    _run(tmp_path, 1)
    with pytest.raises(ToygptError, match="no run 'nope'; runs in .*: 20261123-201501"):
        resolve_run("nope", tmp_path)
    with pytest.raises(ToygptError, match="only 1 runs"):
        resolve_run("latest~3", tmp_path)
    with pytest.raises(ToygptError, match="no runs in"):
        resolve_run("latest", tmp_path / "empty")


def test_dead_running_run_shows_as_interrupted(tmp_path):
    import socket

    path = _run(tmp_path, 1, status="running", pid=2**22 + 12345, host=socket.gethostname())
    assert Run(path).status()["status"] == "interrupted"
    with pytest.raises(ToygptError, match="no ckpt.pt checkpoint"):
        Run(path).checkpoint_path("last")
