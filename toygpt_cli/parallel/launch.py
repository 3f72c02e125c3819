"""`toygpt train --nproc N`: start N training processes on this machine and look after them.

The launcher is the parent of every worker, so it can do what a supervisor must: a SIGINT
or SIGTERM it receives is forwarded once to each worker (which then checkpoints and stops
as a one-process run does), it waits for all of them, and its exit code is theirs. Workers
run in their own process group, so a Ctrl-C in the terminal reaches them only through the
launcher (once, not twice), and they get SIGTERM if the launcher itself dies.
For several machines, use torchrun directly (README: multi-node).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toygpt_cli.errors import ToygptError


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `python -m toygpt_cli <argv>` as ranks 0..nproc-1 of one job; its exit code.

    The workers meet through a file in a folder of their own (PyTorch's FileStore), not a
    TCP port: a port found free here could be taken by another program before rank 0 binds
    it, and that job would fail at its start."""
    meeting = tempfile.mkdtemp(prefix="toygpt-workers-")
    try:
        return _run_workers(nproc, argv, Path(meeting, "store").as_uri())
    finally:
        shutil.rmtree(meeting, ignore_errors=True)  # made above, for this job alone


def _run_workers(nproc: int, argv: list[str], rendezvous: str) -> int:
    procs: list[subprocess.Popen] = []
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        _start(procs, nproc, argv, rendezvous, received)
        if received and len(procs) < nproc:  # stopped while they started: the ones
            # started would wait for the others for ever; nothing of theirs exists yet
            for p in procs:
                p.kill()
                p.wait()
            return 128 + received[0]
        return _look_after(procs, nproc, received)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _start(procs: list, nproc: int, argv: list[str], rendezvous: str, received: list) -> None:
    for rank in range(nproc):
        if received:
            return
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            TOYGPT_RENDEZVOUS=rendezvous,
            WORLD_SIZE=str(nproc),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(nproc),
        )
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "toygpt_cli", *argv],
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        )


def _look_after(procs: list, nproc: int, received: list) -> int:
    """Wait for every worker, end the others when one fails; the job's exit code."""
    ended_here: set[int] = set()  # workers this launcher killed, after another failed
    failed_at = None
    while any(p.poll() is None for p in procs):
        time.sleep(0.1)
        # A rank that failed (or died while stopping) leaves the others waiting in a
        # collective: end them after a grace period (longer while they checkpoint).
        stopped = {128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        bad = [p for p in procs if p.poll() not in (None, 0, *stopped)]
        if bad and failed_at is None:
            failed_at = time.monotonic()
        # A worker killed outright (SIGKILL, the OOM killer) cannot be waited for: the
        # others are stuck in a collective at once. One that failed may still be saying so.
        killed = any(p.returncode is not None and p.returncode < 0 for p in bad)
        grace = 120 if received else 5 if killed else 30
        if failed_at is not None and time.monotonic() - failed_at > grace:
            for p in procs:
                if p.poll() is None:
                    ended_here.add(p.pid)
                    p.kill()
    codes = [p.returncode for p in procs]
    killed = [
        (rank, -p.returncode)
        for rank, p in enumerate(procs)
        if p.returncode < 0 and -p.returncode not in received and p.pid not in ended_here
    ]
    said = codes[0] == 1  # rank 0 speaks for the run (the others keep quiet) when it can
    if killed and not said:  # a killed worker says nothing: say it here
        rank, signum = killed[0]
        raise ToygptError(
            f"training process {rank} of {nproc} was killed ({signal.Signals(signum).name}; "
            "out of memory?); the others were stopped. A run it had started resumes from its "
            "last checkpoint with --resume"
        )
    if codes[0] and codes[0] > 0:
        return codes[0]
    worst = next((c for c in codes if c), 0)
    return 128 - worst if worst < 0 else worst
