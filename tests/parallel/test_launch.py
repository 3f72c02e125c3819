"""parallel/launch.py: `--nproc N` starts N workers, forwards signals, returns their code."""

import signal
import sys
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
        "url = os.environ['TOYGPT_RENDEZVOUS']\n"
        "assert url.startswith('file://'), url\n"
        "folder = pathlib.Path(url[len('file://'):]).parent\n"
        "assert folder.is_dir() and not any(folder.iterdir())\n"
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
