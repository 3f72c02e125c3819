import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from toygpt_cli.errors import ToygptError
from toygpt_cli.runs.folder import (
    DamagedRun,
    Run,
    list_run_dirs,
    make_staging,
    publish,
    resolve_run,
)

from ..fake_runs import make_run


def _run(runs, when, **status):
    staging = make_staging(Path(runs))
    Run(staging).write_config({"name": staging.name})
    path = publish(staging, Path(runs), datetime(2026, 11, 23, 20, 15, when, tzinfo=timezone.utc))
    assert Run(path).config()["name"] == path.name
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
    with pytest.raises(ToygptError, match="no run 'nope'; runs in .*/: 20261123-201501$"):
        resolve_run("nope", tmp_path)
    labelled = _run(tmp_path, 2)
    Run(labelled).write_config({"name": labelled.name, "label": "mine"})
    with pytest.raises(ToygptError, match=r": 20261123-201502 \(mine\), 20261123-201501$"):
        resolve_run("nope", tmp_path)
    with pytest.raises(ToygptError, match="only 2 runs"):
        resolve_run("latest~3", tmp_path)
    with pytest.raises(ToygptError, match="no runs in"):
        resolve_run("latest", tmp_path / "empty")


def test_hidden_folders_are_not_runs(tmp_path):
    make_run(tmp_path, "20261123-201501")
    make_run(tmp_path, ".staging-123")  # a run still being set up
    assert [p.name for p in list_run_dirs(tmp_path)] == ["20261123-201501"]
    assert resolve_run("latest", tmp_path).name == "20261123-201501"


def test_labels_name_the_newest_run_and_folder_names_win(tmp_path):
    make_run(tmp_path, "20261123-201501", {"label": "baseline"})
    make_run(tmp_path, "20261123-201502", {"label": "baseline"})
    make_run(tmp_path, "20261123-201503", {"label": "20261123-201501"})
    assert resolve_run("baseline", tmp_path).name == "20261123-201502"
    assert resolve_run("20261123-201501", tmp_path).name == "20261123-201501"
    assert Run(tmp_path / "20261123-201502").summary()["label"] == "baseline"
    assert Run(tmp_path / "20261123-201501").summary()["data"] == "tiny.txt"


def _damage(run, file, content):
    path = run / file
    if content is None:
        path.unlink()
    elif content == "FIFO":
        path.unlink()
        os.mkfifo(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


DAMAGE = [
    # (id, file, content, reason)
    ("truncated config", "config.json", '{"model": {"n_la', "config.json is not valid JSON"),
    ("config list", "config.json", "[1, 2]", "config.json is not a JSON object"),
    ("config data", "config.json", '{"data": "x.txt"}', 'config.json: data is "x.txt"'),
    ("config path", "config.json", '{"data": {"path": 5}}', "config.json: data.path is 5"),
    ("config null section", "config.json", '{"resolved": null}', "config.json: resolved is null"),
    ("config dtype list", "config.json", '{"resolved": {"dtype": []}}', r"resolved.dtype is \[\]"),
    ("config chars", "config.json", '{"data": {"path": "a", "chars": "x"}}', 'data.chars is "x"'),
    ("config latin-1", "config.json", b'{"label": "caf\xe9"}', "config.json is not UTF-8"),
    ("deep config", "config.json", "[" * 100_000 + "]" * 100_000, "config.json is not valid"),
    ("metric 5", "metrics.jsonl", '{"step": 0}\n5\n', "metrics.jsonl line 2: not a record: 5"),
    ("metric abc", "metrics.jsonl", '{"step": 0, "val_loss": "abc"}\n', 'val_loss is "abc"'),
    ("metric step", "metrics.jsonl", '{"step": "ten"}\n', 'line 1: step is "ten"'),
    ("sample text", "samples.jsonl", '{"step": 0, "text": 7}\n', "samples.jsonl line 1: text"),
    ("status list", "status.json", "[]", r"status.json is not a JSON object: \[\]"),
    ("status huge pid", "status.json", '{"pid": ' + "1" * 31 + "}", "pid 1111111111111.*not a"),
    ("status pid str", "status.json", '{"pid": "12"}', 'pid "12" is not a process id'),
    ("status step", "status.json", '{"step": 1.5}', "status.json: step is 1.5"),
    ("status empty", "status.json", "", "status.json is not valid JSON"),
    ("no checkpoint", "ckpt.pt", None, "no ckpt.pt"),
    ("config fifo", "config.json", "FIFO", "config.json is not a regular file"),
    ("metrics fifo", "metrics.jsonl", "FIFO", "metrics.jsonl is not a regular file"),
    ("status fifo", "status.json", "FIFO", "status.json is not a regular file"),
]


@pytest.mark.parametrize("case", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_one_damaged_run_is_shown_as_damaged_and_the_others_list(tmp_path, case):
    _, file, content, reason = case
    make_run(tmp_path, "20261123-201501")
    bad = make_run(tmp_path, "20261123-201502")
    make_run(tmp_path, "20261123-201503")
    _damage(bad, file, content)
    rows = {r["name"]: r for r in (Run(p).summary() for p in list_run_dirs(tmp_path))}
    assert len(rows) == 3
    assert rows["20261123-201502"]["status"] == "damaged"
    import re

    assert re.search(reason, rows["20261123-201502"]["problem"]), rows["20261123-201502"]
    assert "\n" not in rows["20261123-201502"]["problem"]
    for good in ("20261123-201501", "20261123-201503"):
        assert rows[good]["status"] == "completed" and rows[good]["problem"] is None
    json.dumps(list(rows.values()))  # the listing still serialises


def test_reading_a_damaged_file_is_one_clear_error(tmp_path):
    run = make_run(tmp_path, "20261123-201501")
    (run / "config.json").write_text('{"data": {"pa')
    with pytest.raises(DamagedRun, match="run 20261123-201501 is damaged: config.json is not"):
        Run(run).config()
    (run / "metrics.jsonl").write_text("5\n")
    with pytest.raises(DamagedRun, match="metrics.jsonl line 1"):
        Run(run).metrics()
    (run / "status.json").write_text("[]")
    assert Run(run).raw_status() == {}  # update_status can still rewrite it
    Run(run).update_status(status="interrupted")
    assert Run(run).status()["status"] == "interrupted"


@pytest.mark.parametrize("recorded", [None, ""])
def test_a_missing_status_value_is_unknown(tmp_path, recorded):
    run = make_run(tmp_path, "20261123-201501", status=recorded)
    assert Run(run).status()["status"] == Run(run).summary()["status"] == "unknown"


def test_a_torn_last_line_is_not_damage(tmp_path):
    run = make_run(tmp_path, "20261123-201501")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "train_lo')  # a crash mid-append
    assert [m["step"] for m in Run(run).metrics()] == [0, 10, 20]
    assert Run(run).summary()["status"] == "completed"


def test_dead_running_run_shows_as_interrupted(tmp_path):
    path = _run(tmp_path, 1, status="running", pid=2**22 + 12345, host=socket.gethostname())
    assert Run(path).status()["status"] == "interrupted"
    with pytest.raises(ToygptError, match="no ckpt.pt checkpoint"):
        Run(path).checkpoint_path("last")


def test_a_reused_pid_is_not_the_trainer(tmp_path):
    """A live pid that belongs to another process (pid reuse after a restart) must not
    keep a run `running` for ever: without a lock file, its start time tells."""
    me = os.getpid()
    host = socket.gethostname()
    recorded = make_run(tmp_path, "a", status="running", pid=me, pid_start=1, host=host)
    assert Run(recorded).status()["status"] == "interrupted"  # other start time
    long_ago = "2000-01-01T00:00:00+00:00"
    old = make_run(tmp_path, "b", status="running", pid=me, host=host, updated=long_ago)
    assert Run(old).status()["status"] == "interrupted"  # started after the run was last seen
    live = make_run(tmp_path, "c", status="running", host=host, updated=long_ago)
    Run(live).mark_running(3, 20)  # records this process, with its start time
    assert Run(live).status()["status"] == "running"


def test_lock_decides_running_and_is_released_by_any_death(tmp_path):
    run = make_run(tmp_path, "20261123-201501", status="running", pid=os.getpid())
    (run / ".lock").touch()  # a lock file nobody holds: not running, whatever the pid says
    assert Run(run).is_locked() is False
    assert Run(run).status()["status"] == "interrupted"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from toygpt_cli.runs.folder import Run; "
            f"h = Run(__import__('pathlib').Path({str(run)!r})).lock(); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert Run(run).is_locked() is True
        st = Run(run).status()
        assert st["status"] == "running" and st["pid"] == holder.pid
        held = rf"being trained by another process \(pid {holder.pid}\)"
        with pytest.raises(ToygptError, match=held):
            Run(run).lock()
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    assert Run(run).is_locked() is False
    assert Run(run).status()["status"] == "interrupted"
    with Run(run).lock() as handle:  # free again
        assert handle.held


def test_the_lock_holder_sees_its_own_recorded_status(tmp_path):
    run = Run(make_run(tmp_path, "20261123-201501"))
    handle = run.lock()
    assert run.status()["status"] == "completed"  # what this process recorded
    assert run.is_locked() is True
    with pytest.raises(ToygptError, match="being trained by another process"):
        run.lock()  # a second lock, even from the same process, is refused
    handle.release()
    assert run.is_locked() is False


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "n_layer", "x"),
        ("model", "dropout", 7),
        ("train", "learning_rate", "fast"),
        ("train", "optimizer", "sgd"),
        ("model", "pos", None),
    ],  # fmt: skip
)
def test_a_config_with_values_its_options_refuse_is_damaged(tmp_path, section, key, value):
    import json

    run = make_run(tmp_path, "20261123-201501")
    cfg = json.loads((run / "config.json").read_text())
    cfg[section][key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    row = Run(run).summary()
    if value is None:  # null means "not recorded": fine
        assert row["status"] == "completed"
    else:
        assert row["status"] == "damaged" and f"{section}.{key}" in row["problem"]


def test_the_end_of_a_run_is_recorded_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    from toygpt_cli.runs import folder

    run = Run(make_run(tmp_path, "20261123-201501", status="running"))

    def full(path, obj):
        raise ToygptError(f"could not write {path}: No space left on device")

    monkeypatch.setattr(folder, "write_json", full)
    run.update_status(status="failed", message="could not write ckpt.pt")
    import json

    st = json.loads(run.file("status.json").read_text())
    assert st["status"] == "failed" and st["message"] == "could not write ckpt.pt"
