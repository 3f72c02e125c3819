"""parallel/launch.py: `--nproc N` starts N workers, forwards signals, returns their code."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from toygpt_cli.parallel import launch

pytestmark = pytest.mark.slow  # starts processes


def test_workers_get_their_rank_and_the_launcher_returns_the_worst_code(monkeypatch, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys\n"
        "rank = int(os.environ['RANK'])\n"
        "assert os.environ['WORLD_SIZE'] == '3' and os.environ['MASTER_ADDR'] == '127.0.0.1'\n"
        "sys.exit(0 if rank != 2 else 3)\n"
    )
    real = launch.subprocess.Popen

    def popen(cmd, **kw):  # run the script instead of toygpt
        return real([sys.executable, str(script)], **kw)

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    assert launch.launch_local(3, ["train"]) == 3


def test_workers_meet_through_a_file_of_their_own_that_is_gone_afterwards(monkeypatch, tmp_path):
    """No TCP port is chosen in advance (another program could take it before rank 0 binds
    it): the workers meet through a file in a new folder, removed when they are done."""
    script = tmp_path / "worker.py"
    seen = tmp_path / "seen"
    script.write_text(
        "import os, pathlib, sys\n"
        "folder = pathlib.Path(os.environ['TOYGPT_RENDEZVOUS'])\n"
        "assert folder.is_dir() and {p.name for p in folder.iterdir()} <= {'.lock', 'here.0'}\n"
        f"pathlib.Path({str(seen)!r}, os.environ['RANK']).write_text(str(folder))\n"
    )
    seen.mkdir()
    real = launch.subprocess.Popen
    monkeypatch.setattr(
        launch.subprocess, "Popen", lambda cmd, **kw: real([sys.executable, str(script)], **kw)
    )
    assert launch.launch_local(2, ["train"]) == 0
    folders = {(seen / rank).read_text() for rank in ("0", "1")}
    assert len(folders) == 1 and not Path(folders.pop()).exists()


def test_a_signal_to_the_launcher_reaches_every_worker(monkeypatch, tmp_path):
    import os
    import threading

    script = tmp_path / "worker.py"
    script.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))\n"
        "time.sleep(60)\n"
    )
    real = launch.subprocess.Popen
    monkeypatch.setattr(launch.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, str(script)], **kw))  # fmt: skip
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    assert launch.launch_local(2, ["train"]) == 143


def _run_script(monkeypatch, tmp_path, text):
    script = tmp_path / "worker.py"
    script.write_text(text)
    real = launch.subprocess.Popen
    monkeypatch.setattr(launch.subprocess, "Popen",
                        lambda cmd, **kw: real([sys.executable, str(script)], **kw))  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_ctrl_c_waits_until_a_starting_worker_handles_it(monkeypatch, tmp_path):
    """Python raises KeyboardInterrupt (a traceback) for a Ctrl-C while it starts: workers
    start with it ignored, and the launcher sends it once the worker's handler is there."""
    import os
    import threading

    _run_script(monkeypatch, tmp_path, (
        "import os, signal, sys, time\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "time.sleep(2)  # still starting when the Ctrl-C comes\n"
        "signal.signal(signal.SIGINT, lambda s, f: sys.exit(130))\n"
        "time.sleep(60)\n"
    ))  # fmt: skip
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    assert launch.launch_local(2, ["train"]) == 130
    assert time.monotonic() - started < 10


def test_a_signal_while_workers_start_ends_them_all(monkeypatch, tmp_path):
    """One started after the signal would never hear it (nor would the others meet it)."""
    import os

    script = tmp_path / "worker.py"
    script.write_text("import time\ntime.sleep(60)\n")
    real, made = launch.subprocess.Popen, []

    def popen(cmd, **kw):
        if made:  # the signal comes while the second one starts
            os.kill(os.getpid(), signal.SIGTERM)
        made.append(real([sys.executable, str(script)], **kw))
        return made[-1]

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    with pytest.raises(launch.StoppedWhileStarting) as stopped:
        launch.launch_local(2, ["train"])
    assert stopped.value.signum == signal.SIGTERM
    assert len(made) == 2 and all(p.returncode is not None for p in made)


def test_workers_left_waiting_for_one_that_stopped_are_ended(monkeypatch, tmp_path):
    """After a Ctrl-C, one rank stopped while starting; the other waits in C++ for it (it
    cannot hear the signal): the launcher ends it, and the job's code is the stop's."""
    import os
    import threading

    _run_script(monkeypatch, tmp_path, (
        "import os, signal, sys, time\n"
        "if os.environ['RANK'] == '0':\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])  # deaf, as in C++\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "else:\n"
        "    signal.signal(signal.SIGINT, lambda s, f: sys.exit(130))\n"
        "time.sleep(60)\n"
    ))  # fmt: skip
    monkeypatch.setattr(launch, "LEAVING", 1.0)
    threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    assert launch.launch_local(2, ["train"]) == 130
    assert time.monotonic() - started < 10


def test_the_meeting_folder_of_a_launcher_killed_outright_goes_at_the_next_launch(
    monkeypatch, tmp_path
):
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    from toygpt_cli.storage import locks

    stale = tmp_path / f"toygpt-workers-{gone.pid}-abc"
    alive = tmp_path / f"toygpt-workers-{os.getppid()}-abc"  # another launcher, running
    held = tmp_path / f"toygpt-workers-{gone.pid}-def"  # its pid seen from elsewhere
    other = tmp_path / "someone-else"
    for folder in (stale, alive, held, other):
        folder.mkdir()
        (folder / "store").write_text("x")
    _run_script(monkeypatch, tmp_path, "pass\n")
    with locks.acquire(held):
        assert launch.launch_local(2, ["train"]) == 0
    assert not stale.exists() and alive.exists() and held.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob("toygpt-workers-*")) == sorted(
        [alive.name, held.name]
    )
