"""storage/locks.py: a folder lock no file deletion can take away, released by any death,
and telling a live process from a reused pid."""

import os
import subprocess
import sys

import pytest

from toygpt_cli.storage import locks


def _holder(folder):
    code = (
        "import sys, time; from toygpt_cli.storage import locks; "
        f"h = locks.acquire({str(folder)!r}); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_lock_is_seen_refused_and_released_by_a_kill(tmp_path):
    assert locks.is_locked(tmp_path) is False
    proc = _holder(tmp_path)
    try:
        assert locks.is_locked(tmp_path) is True
        assert locks.lock_owner(tmp_path) == proc.pid
        with pytest.raises(locks.LockHeld) as info:
            locks.acquire(tmp_path)
        assert info.value.pid == proc.pid
    finally:
        proc.kill()  # no chance to clean up
        proc.wait()
    assert locks.is_locked(tmp_path) is False
    with locks.acquire(tmp_path) as handle:
        assert handle.held and locks.held_here(tmp_path)
    assert not locks.held_here(tmp_path)


def test_deleting_the_pid_file_does_not_take_the_lock_away(tmp_path):
    proc = _holder(tmp_path)
    try:
        (tmp_path / ".lock").unlink()  # what `rm runs/*/.lock` does
        assert locks.is_locked(tmp_path) is True
        with pytest.raises(locks.LockHeld):
            locks.acquire(tmp_path)
    finally:
        proc.kill()
        proc.wait()


def test_a_forked_child_does_not_keep_the_lock_alive(tmp_path):
    handle = locks.acquire(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child: its copy of the descriptor was closed at fork
        os._exit(0 if not locks._HELD else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    handle.release()


def test_a_folder_that_cannot_be_opened_is_unknown(tmp_path):
    assert locks.is_locked(tmp_path / "missing") is None
    with pytest.raises(locks.ToygptError, match="cannot lock"):
        locks.acquire(tmp_path / "missing")


def test_process_identity_survives_pid_reuse():
    me = os.getpid()
    assert locks.same_process_alive(me, locks.process_start_ticks(me))
    assert not locks.same_process_alive(me, 1)  # another start time: a reused pid
    assert not locks.same_process_alive(me, None, "2000-01-01T00:00:00+00:00")
    assert not locks.same_process_alive(2**31 - 2)  # no such process
    assert not locks.valid_pid(10**30) and not locks.valid_pid(True) and locks.valid_pid(me)


def test_a_fifo_in_place_of_the_pid_file_does_not_block(tmp_path):
    """Opening a FIFO to write waits for a reader: the lock must not."""
    import threading

    os.mkfifo(tmp_path / ".lock")
    taken = []
    worker = threading.Thread(target=lambda: taken.append(locks.acquire(tmp_path)))
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(os.open(tmp_path / ".lock", os.O_RDONLY | os.O_NONBLOCK)):
            pass
        worker.join(5)
        pytest.fail("acquire waited on a FIFO")
    assert taken[0].held
    assert locks.lock_owner(tmp_path) is None  # no pid could be recorded: unknown, not wrong
    taken[0].release()
