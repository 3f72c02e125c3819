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

LEAVING = 3  # seconds the others get after a signal, once one stopped before they all met
# (none of them has made anything yet: the run folder is made after they meet)


class StoppedWhileStarting(Exception):
    """A stop signal came while the workers were being started; they were ended."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _worker_setup() -> None:  # runs in the child between fork and exec (Linux)
    # Python starts with Ctrl-C ignored (it keeps an inherited SIG_IGN); toygpt's own
    # handler replaces it, and the launcher sends a Ctrl-C only once that is in place
    # (`_handles`): one that came while the interpreter started would print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _handles(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` yet (Linux: its
    /proc status); True where that cannot be read (then the signal goes at once)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `python -m toygpt_cli <argv>` as ranks 0..nproc-1 of one job; its exit code.
    Raises StoppedWhileStarting for a signal that came before every worker was started.

    The workers meet through a file in a folder of their own (PyTorch's FileStore), not a
    TCP port: a port found free here could be taken by another program before rank 0 binds
    it, and that job would fail at its start."""
    from toygpt_cli.storage import locks

    _remove_stale_meetings()
    meeting = tempfile.mkdtemp(prefix=f"{MEETING_PREFIX}{os.getpid()}-")
    try:
        with locks.acquire(Path(meeting)):  # held while the job runs: not stale
            return _run_workers(nproc, argv, meeting)
    finally:
        shutil.rmtree(meeting, ignore_errors=True)  # made above, for this job alone


MEETING_PREFIX = "toygpt-workers-"


def _remove_stale_meetings() -> None:
    """The meeting folders of launchers that were killed outright (they could not remove
    their own): this user's, unlocked, named for a process that is gone."""
    from toygpt_cli.storage import locks

    for old in Path(tempfile.gettempdir()).glob(MEETING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            mine = not hasattr(os, "getuid") or old.lstat().st_uid == os.getuid()
            if mine and locks.abandoned(old, MEETING_PREFIX):
                shutil.rmtree(old, ignore_errors=True)


def _run_workers(nproc: int, argv: list[str], meeting: str) -> int:
    procs: list[subprocess.Popen] = []
    received: list[int] = []
    waiting: list[tuple[subprocess.Popen, int]] = []  # Ctrl-Cs for workers still starting

    def forward(signum, frame):
        received.append(signum)
        waiting.extend((p, signum) for p in procs)
        _deliver(waiting)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        _start(procs, nproc, argv, meeting, received)
        if received:  # stopped while they started: nothing of theirs exists yet (a run
            # folder needs all of them), and one started after the signal never heard it
            for p in procs:
                p.kill()
                p.wait()
            raise StoppedWhileStarting(received[0])
        return _look_after(procs, nproc, received, waiting, meeting)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _deliver(waiting: list) -> None:
    """Send each waiting signal whose worker can take it now (a Ctrl-C waits until the
    worker handles it); drop those of workers that have ended."""
    for entry in list(waiting):
        p, signum = entry
        if p.poll() is None and signum == signal.SIGINT and not _handles(p.pid, signum):
            continue  # not yet
        try:
            waiting.remove(entry)
        except ValueError:  # taken by a signal handled meanwhile (this runs in handlers)
            continue
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signum)


def _start(procs: list, nproc: int, argv: list[str], meeting: str, received: list) -> None:
    for rank in range(nproc):
        if received:
            return
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            TOYGPT_RENDEZVOUS=meeting,
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
                preexec_fn=_worker_setup if sys.platform.startswith("linux") else None,
            )
        )


def _look_after(procs: list, nproc: int, received: list, waiting: list, meeting: str) -> int:
    """Wait for every worker, end the others when one fails; the job's exit code."""
    ended_here: set[int] = set()  # workers this launcher killed, after another failed
    failed_at = None
    stopped = {128 + s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    while any(p.poll() is None for p in procs):
        time.sleep(0.1)
        _deliver(waiting)
        # A rank that failed (or died while stopping) leaves the others waiting in a
        # collective: end them after a grace period (longer while they checkpoint).
        ended = [p for p in procs if p.poll() is not None]
        bad = [p for p in ended if p.returncode not in (0, *stopped)]
        # After a stop request, one that stopped before every worker had joined the process
        # group leaves the others waiting for it where they cannot hear a signal (in C++)
        if failed_at is None and (bad or (received and ended)):
            failed_at = time.monotonic()
        joined = all(Path(meeting, f"joined.{r}").exists() for r in range(nproc))
        # A worker killed outright (SIGKILL, the OOM killer) cannot be waited for: the
        # others are stuck in a collective at once. One that failed may still be saying so.
        killed = any(p.returncode is not None and p.returncode < 0 for p in bad)
        grace = 5 if killed else (120 if bad or joined else LEAVING) if received else 30
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
    # the code of a worker that ended by itself (one ended here says nothing of the run)
    own = [p.returncode for p in procs if p.pid not in ended_here] or codes
    worst = next((c for c in own if c), 0)
    return 128 - worst if worst < 0 else worst
