"""Stop requests (Ctrl-C, SIGTERM, SIGHUP) as the training loop sees them.

The first request asks for a checkpoint and a stop at the next safe point: after the
current step, or at once during an eval (which changes nothing). A second one stops at
once, except while a checkpoint is being written, which finishes first, so the file on
disk is always whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RESEND_AFTER = 0.05  # seconds: a signal that came during an import is sent again after it


def importing(frame) -> bool:
    """Whether the code at `frame` runs inside an import (a signal handler's frame)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def send_again(signum: int, wanted: Callable[[], bool]) -> threading.Timer:
    """Send `signum` to this process again in RESEND_AFTER seconds, if wanted() then: for a
    signal that landed inside an import, to be acted on once the import is done. Cancel the
    timer returned once the signal no longer matters."""

    def resend() -> None:
        if wanted():
            os.kill(os.getpid(), signum)

    timer = threading.Timer(RESEND_AFTER, resend)
    timer.daemon = True
    timer.start()
    return timer


class StepAbandoned(KeyboardInterrupt):
    """A stop was asked for during an abandonable block (StopSwitch.abandonable). A
    KeyboardInterrupt, so that the code it interrupts (torch.compile's) passes it on."""


class StopSwitch:
    """Stop requests (Ctrl-C, SIGTERM): the first asks for a checkpoint and a stop at the
    next safe point (after the current step, or at once during an eval); a second one stops
    at once, except while a checkpoint is being written, which finishes first."""

    def __init__(self, on_first: Callable[[int], None] | None = None) -> None:
        self.signal: int | None = None
        self.second: int | None = None  # the request that stopped at once, if one did
        self.on_first = on_first  # told at once of the first request (to say what happens)
        self._writing = False
        self._abandonable = False  # a request stops at once: the block changes nothing
        self._abandoning = False  # a first request came inside an import: raise it after
        self._echo = False  # that request is being sent again (not a second request)
        self._pending = False
        self._done = False
        self._routing = False  # on_signals' block is running
        self._timers: list[threading.Timer] = []

    def request(self, signum: int = signal.SIGINT, frame=None) -> None:
        if self._done:
            return  # the stop is over: the process is on its way out
        if self._echo:  # the first request, sent again after an import
            self._echo = False
            if self._abandonable:
                self._abandon(signum, frame)
            return  # the block ended meanwhile: the stop comes at the next safe point
        if self.signal is None:
            self.signal = signum
            if self.on_first is not None:
                self.on_first(signum)
            if self._abandonable:
                self._abandon(signum, frame)
        elif self._writing:
            self._pending, self.second = True, signum
        elif importing(frame):
            # Raised inside an import, KeyboardInterrupt breaks the module being loaded (a
            # C extension's start turns it into ImportError): asked again once it is done
            self._again(signum)
        else:
            self.second, self._done = signum, True
            raise KeyboardInterrupt

    def _abandon(self, signum: int, frame) -> None:
        if importing(frame):  # raised there, it would break the module: once it is loaded
            self._abandoning = True
            self._timers.append(send_again(signum, self._echoing))
            return
        self._abandoning = False
        raise StepAbandoned

    def _echoing(self) -> bool:
        """Whether the first request, which came inside an import, is to be sent again (the
        block is still running); if so, the signal that follows is that request's echo."""
        self._echo = self._abandonable and self._abandoning
        return self._echo

    def _again(self, signum: int) -> None:
        self._timers.append(send_again(signum, lambda: self._routing and not self._done))

    def done(self) -> None:
        """The stop has been carried out (the checkpoint is on disk): a later request
        changes nothing, and the signals stay ignored after on_signals' block, so that one
        arriving while the process exits neither kills it with the signal's default action
        (a different exit code) nor adds a traceback."""
        self._done = True

    @contextlib.contextmanager
    def protect(self) -> Iterator[None]:
        """A second request waits until the block ends (a checkpoint being written)."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
            if self._pending:
                self._pending, self._done = False, True
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """A first request raises StepAbandoned inside the block (a step that takes long and
        changes nothing until it ends: the one that compiles), instead of waiting for it."""
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = self._abandoning = False

    @contextlib.contextmanager
    def on_signals(self, signals=STOP_SIGNALS):
        """Route these signals to `request` while the block runs; after it, they are
        ignored once the stop is done (the command is then exiting), else handled as
        before."""
        self._routing = True
        try:
            with _routed(signals, self.request, lambda: self._done):
                yield self
        finally:
            self._routing = False
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()


@contextlib.contextmanager
def signals_held(signals=STOP_SIGNALS) -> Iterator[None]:
    """A few lines that must run as one step (a rename and the name it gave): a signal
    that arrives meanwhile is handled, as it would have been, once the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals
        return
    caught: list[int] = []
    try:
        with _routed(signals, lambda signum, frame: caught.append(signum)):
            yield
    finally:
        for signum in caught[:1]:
            signal.raise_signal(signum)


@contextlib.contextmanager
def _routed(
    signals, handle: Callable[[int, Any], None], ignore_after: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """Each of `signals` calls handle(signum, frame) while the block runs; then the handlers
    before it are back, or SIG_IGN where ignore_after() says so."""
    old = {s: signal.signal(s, handle) for s in signals}
    try:
        yield
    finally:
        ignore = ignore_after()
        for s, handler in old.items():
            if ignore:
                handler = signal.SIG_IGN
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
