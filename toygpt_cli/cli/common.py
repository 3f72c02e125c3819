"""What every command shares: the consoles, where data and runs live, JSON output, and the
one-line error handling.

Results go to stdout, status, progress and errors to stderr, so output pipes cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text

try:  # typer >= 0.26 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer._click.globals import get_current_context
except ImportError:  # older typer runs on click itself
    from click import get_current_context  # noqa: F401
    from click.exceptions import ClickException  # noqa: F401

    try:  # click >= 8.2
        from click.exceptions import NoArgsIsHelpError  # noqa: F401
    except ImportError:  # older click shows the help and exits 0 by itself

        class NoArgsIsHelpError(Exception):  # never raised
            exit_code = 2


from toygpt_cli.errors import OptionError, ToygptError
from toygpt_cli.stopping import importing, send_again


def _width(stream) -> int | None:
    # Off a terminal rich would assume 80 columns and cut table cells; logs and pipes get
    # room, unless COLUMNS says how wide to be.
    if os.environ.get("COLUMNS") or (stream is not None and stream.isatty()):
        return None
    return 160


class _LiveWidth(Console):
    """COLUMNS read when something is drawn, not when the console was made (rich reads it
    once): `COLUMNS=80 toygpt ...` and a caller that changes it both get what they ask."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return ConsoleDimensions(int(columns), dims.height)
        return dims

    @size.setter
    def size(self, new) -> None:
        Console.size.fset(self, new)


class _StatusConsole(_LiveWidth):
    """stderr: when it cannot be written (`2>&1 | head` closed, `2>/dev/full`), the work
    goes on quietly instead of ending (rich's default raises SystemExit mid-training)."""

    def on_broken_pipe(self) -> None:
        self._silence()

    def _silence(self) -> None:
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except OSError:
            del self._buffer[:]
            self._silence()


class _ResultConsole(_LiveWidth):
    """stdout: a failure to write it (a full disk, a dead device) is one line, exit 1."""

    def _check_buffer(self) -> None:
        try:
            super()._check_buffer()
        except BrokenPipeError:
            raise
        except OSError as exc:
            del self._buffer[:]
            raise ToygptError(f"cannot write the output: {exc.strerror or exc}") from None


out = _ResultConsole(highlight=False, soft_wrap=True, width=_width(sys.stdout))


def screen_width() -> int:
    """The columns to fit tables in: COLUMNS when set (read now, not at start-up), else
    the terminal's, else 160 for a pipe or a file."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else out.width


err = _StatusConsole(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))


@dataclass
class Paths:
    """Where datasets and runs live: ./data and ./runs of the current directory unless
    --data-dir / --runs-dir (or TOYGPT_DATA_DIR / TOYGPT_RUNS_DIR) say otherwise."""

    data_dir: Path
    runs_dir: Path


def paths(data_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> Paths:
    return Paths(
        Path(data_dir or os.environ.get("TOYGPT_DATA_DIR") or "data"),
        Path(runs_dir or os.environ.get("TOYGPT_RUNS_DIR") or "runs"),
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Say `message` (plain text, never markup) as one error line; the exit to raise."""
    message = " ".join(message.split())  # one line, whatever a name in it holds
    try:
        err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    except MemoryError:  # rich needs room to render; the bare line does not
        with contextlib.suppress(OSError):
            os.write(2, f"error: {message}\n".encode(errors="replace"))
    return typer.Exit(code)


def one_line(exc: ToygptError) -> str:
    """A ToygptError as the command line shows it: flags for the fields it names."""
    if isinstance(exc, OptionError):  # the library names fields; show the flags
        from toygpt_cli.cli.options import flag_of

        return exc.render(flag_of)
    return str(exc)


def handle_errors(func):
    """A user's mistake (ToygptError) becomes one line on stderr and its exit code; Ctrl-C
    that reaches here ends with 130 and one line."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            _IN_COMMAND.append(True)
            return func(*args, **kwargs)
        except (typer.Exit, SystemExit):
            raise
        except BaseException as exc:
            if interrupted():  # whatever broke, it broke because of the Ctrl-C
                say_stopped()
                raise typer.Exit(130) from None
            _one_line(exc)
        finally:
            if _IN_COMMAND:  # a Ctrl-C can come before the append
                _IN_COMMAND.pop()

    return wrapper


_SIGINT: list[int] = []


def on_sigint(signum, frame) -> None:
    """Ctrl-C before a command installs its own handling: remembered, then raised. Raised
    inside an import, a KeyboardInterrupt can land in PyTorch's C++ (which then aborts the
    process) or be swallowed, so while a module loads it is only remembered and the signal
    is sent again a moment later, to be raised once the import is done."""
    _SIGINT.append(signum)
    if _importing(frame):
        _RESENDS.append(send_again(signum, lambda: not _ACTED))
        return
    _ACTED[:] = [True]
    _UNSAID[:] = [] if _IN_COMMAND else [True]
    raise KeyboardInterrupt


def stopped_unsaid() -> bool:
    """Whether the last Ctrl-C broke into the command line's own machinery (parsing the
    options, before or after a command ran), and "stopped" was not said: typer then returns
    130 without a word, and no command was there to say it."""
    return bool(_UNSAID) and not _SAID


def say_stopped() -> None:
    """The one line for a Ctrl-C, once per command line."""
    if not _SAID:
        _SAID[:] = [True]
        err.print("\nstopped")


_IN_COMMAND: list[bool] = []  # one entry while a command runs (handle_errors)
_UNSAID: list[bool] = []  # [True] when the last Ctrl-C was raised outside any command
_SAID: list[bool] = []  # [True] once "stopped" was printed
_RESENDS: list = []  # the timers that send a Ctrl-C again once an import is done
_ACTED: list[bool] = []  # [True] once the command has acted on a Ctrl-C: none is sent again


def watch_sigint() -> None:
    """From now on Ctrl-C means "stop" (on_sigint), with nothing remembered yet."""
    settle_sigint()
    _SIGINT.clear()
    _ACTED.clear()
    _UNSAID.clear()
    _SAID.clear()
    _IN_COMMAND.clear()
    signal.signal(signal.SIGINT, on_sigint)


def settle_sigint() -> None:
    """Once a command has stopped for a Ctrl-C and only exits: a copy of the signal still
    on its way (sent again after an import) would raise KeyboardInterrupt while Python
    shuts down, a traceback after "stopped". Cancel those, and ignore any more."""
    if not _SIGINT:
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # first: a copy already sent is dropped
    for timer in _RESENDS:
        timer.cancel()
    _RESENDS.clear()


def _importing(frame) -> bool:
    return importing(frame)


def interrupted() -> bool:
    """Whether a Ctrl-C came while a module loaded; the caller then stops for it."""
    if _SIGINT:
        _ACTED[:] = [True]
    return bool(_SIGINT)


def _one_line(exc: BaseException):
    """Raise what the command line shows for `exc`: one line and an exit code, or `exc`
    itself when it is a bug."""
    try:
        raise exc
    except ToygptError as exc:
        if os.environ.get("RANK", "0") != "0":  # one line per launch, from rank 0
            raise typer.Exit(exc.exit_code) from None
        raise fail(one_line(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        say_stopped()
        raise typer.Exit(130) from None
    except (ImportError, SystemError, OSError) as exc:
        if _loading_torch(exc):
            _torch_failed()
        if not isinstance(exc, OSError) or isinstance(exc, BrokenPipeError):
            raise
        # A file or folder the system refused that no check above foresaw (a name too
        # long, a permission, a full disk): what and where, in one line.
        where = f": {_short(exc.filename)}" if exc.filename else ""
        raise fail(f"{exc.strerror or exc}{where}") from None
    except (MemoryError, RuntimeError) as exc:
        if _loading_torch(exc):
            _torch_failed()
        if not out_of_memory(exc):
            raise
        raise fail(
            "out of memory: this needs more memory than the machine has free; use a "
            "smaller model, batch or --eval-iters"
        ) from None


def _short(name, limit: int = 120) -> str:
    text = os.fsdecode(name) if isinstance(name, (str, bytes)) else str(name)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


TORCH_FAILED = (
    b"error: cannot load PyTorch: under a memory limit (ulimit -v) it needs more room; "
    b"otherwise reinstall torch\n"
)


def _loading_torch(exc: BaseException) -> bool:
    """Whether the error came from PyTorch's own files while it was being imported (a
    failed import leaves no `torch` in sys.modules; a loaded one stays)."""
    if "torch" in sys.modules:
        return False
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}torch{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _torch_failed():
    """Loading PyTorch failed part-way, most often for want of memory: nothing else can be
    relied on now (rendering, even raising), so say it plainly and leave."""
    with contextlib.suppress(BaseException):
        os.write(2, TORCH_FAILED)
    os._exit(1)


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or torch's way of saying the same (CPU or CUDA)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def print_json(data: Any) -> None:
    """JSON on stdout: the `--json` of every command."""
    write_out(json.dumps(data, indent=2) + "\n")


def print_json_streamed(parts: dict[str, Any]) -> None:
    """An object on stdout as `print_json` writes it, where a value that is a callable gives
    an iterator of list items: they are written as they come, so a list of any length
    takes no memory (`runs show --json` of a run with a million evals)."""
    import textwrap

    buffer: list[str] = ["{\n"]
    size = 0

    def put(text: str) -> None:
        nonlocal size
        buffer.append(text)
        size += len(text)
        if size > 1 << 16:
            write_out("".join(buffer))
            buffer.clear()
            size = 0

    for n, (key, value) in enumerate(parts.items()):
        put(("" if n == 0 else ",\n") + f"  {json.dumps(key)}: ")
        if callable(value):
            first = True
            for item in value():
                put(("[\n" if first else ",\n") + textwrap.indent(json.dumps(item, indent=2),
                                                                  "    "))  # fmt: skip
                first = False
            put("[]" if first else "\n  ]")
        else:
            put(json.dumps(value, indent=2).replace("\n", "\n  "))
    put("\n}\n")
    write_out("".join(buffer))


def write_out(text: str) -> None:
    """Text on stdout, now (streaming output)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, AttributeError) as exc:  # AttributeError: stdout is closed (None)
        why = getattr(exc, "strerror", None) or exc
        raise ToygptError(f"cannot write the output: {why}") from None


def emit(data, render, as_json: bool) -> None:
    """`data` as JSON on stdout, or else `render()` for people."""
    if as_json:
        print_json(data)
    else:
        render()


def fancy_output(quiet: bool = False) -> bool:
    """Live progress bars only on an interactive terminal; plain lines in CI and files."""
    return not quiet and err.is_terminal and not os.environ.get("CI")


_arguments: list[str] | None = None  # what `main` was called with, when not sys.argv


def running_with(argv: list[str] | None) -> None:
    """Set by `main`: the arguments the command line runs with (None: sys.argv's)."""
    global _arguments
    _arguments = None if argv is None else list(argv)


def command_line() -> list[str]:
    """`toygpt` and its arguments as given: recorded in config.json, and what the processes
    of `--nproc` are started with."""
    return ["toygpt", *(sys.argv[1:] if _arguments is None else _arguments)]
