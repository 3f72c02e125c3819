"""Where the `toygpt` console script starts: Ctrl-C while the command line's modules are
still loading (a second or more from a cold disk) stops quietly, like Ctrl-C anywhere else,
instead of printing a traceback from inside an import. `app.main` then takes over."""

from __future__ import annotations

import os
import signal

from toygpt_cli.stopping import importing

_HEARD: list[int] = []


def _stopped_while_loading(signum, frame) -> None:
    # Raised inside an import, SystemExit can be swallowed by the module being loaded (the
    # command would then go on) or break it: the stop then waits for the import to end.
    if importing(frame):
        _HEARD.append(signum)
        return
    _stop()


def _stop() -> None:
    os.write(2, b"\nstopped\n")
    raise SystemExit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _stopped_while_loading)
    from toygpt_cli.cli.app import main as run  # the slow part

    if _HEARD:
        _stop()
    run()
