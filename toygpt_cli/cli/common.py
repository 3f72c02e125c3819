"""Pieces every command shares: consoles, option types, and the one-line error handler."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from toygpt_cli.errors import OptionError, ToygptError

# Results go to stdout; status, progress and errors to stderr, so output pipes cleanly.


def _width(stream) -> int | None:
    # Off a terminal rich would assume 80 columns and cut table cells; logs and pipes get room.
    return None if stream is not None and stream.isatty() else 160


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


class _StatusConsole(Console):
    """stderr: when its reader goes away (`toygpt train 2>&1 | head`), the work goes on
    quietly instead of ending (rich's default raises SystemExit(1) mid-training)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())


err = _StatusConsole(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

RunsDir = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir",
        envvar="TOYGPT_RUNS_DIR",
        help="Folder holding one sub-folder per run. \\[default: ./runs]",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="TOYGPT_DATA_DIR",
        help="Folder where datasets are downloaded. \\[default: ./data]",
        show_default=False,
    ),
]


def complete_run(incomplete: str) -> list[str]:
    """Shell completion for a run: `latest` and the run folders' names, newest first."""
    from toygpt_cli.runs.folder import list_run_dirs

    try:
        names = [p.name for p in list_run_dirs(paths().runs_dir)]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in ("latest", *names) if n.startswith(incomplete)]


RunRef = Annotated[
    str,
    typer.Option(
        "--run",
        "-r",
        help="A run: latest, latest~1 (the one before), a folder name or a path.",
        autocompletion=complete_run,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads",
        envvar="TOYGPT_THREADS",
        min=0,
        help="CPU threads for torch (0: torch's choice, one per core).",
    ),
]
CheckpointOpt = Annotated[
    str,
    typer.Option(
        "--checkpoint", help="best (lowest val loss) or last; the default is best when it exists."
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func):
    """Turn a user's mistake (ToygptError) into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ToygptError as exc:
            text = str(exc)
            if isinstance(exc, OptionError):  # the library names fields; show the flags
                from toygpt_cli.config import flag_of

                text = exc.render(flag_of)
            if os.environ.get("RANK", "0") != "0":  # one line per launch, from rank 0
                raise typer.Exit(exc.exit_code) from None
            raise fail(text.replace("[", r"\["), exc.exit_code) from None

    return wrapper


def emit(data, render: Callable[[], None], as_json: bool) -> None:
    """The `--json` pattern: `data` as JSON on stdout, or else `render()` for people."""
    if as_json:
        out.print(json.dumps(data, indent=2), markup=False, highlight=False)
    else:
        render()


def paths(data_dir: Path | None = None, runs_dir: Path | None = None):
    from toygpt_cli.cli.paths import Paths

    return Paths.from_env(data_dir, runs_dir)


def fancy_output(quiet: bool = False) -> bool:
    """Live progress bars only on an interactive terminal; plain lines in CI and files."""
    return not quiet and err.is_terminal and not os.environ.get("CI")


def command_line() -> list[str]:
    return ["toygpt", *sys.argv[1:]]
