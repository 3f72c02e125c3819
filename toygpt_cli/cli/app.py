"""`toygpt`: the command-line entry point and its commands."""

from __future__ import annotations

import errno
import io
import os
import sys
import warnings
from typing import Annotated

import typer
from rich.markup import escape

from toygpt_cli.cli import (
    attention_cmd,
    bench_cmd,
    data_cmd,
    eval_cmd,
    export_cmd,
    runs_cmd,
    sample_cmd,
    sweep_cmd,
)
from toygpt_cli.cli.common import ClickException, NoArgsIsHelpError, err
from toygpt_cli.cli.train_cmd import train
from toygpt_cli.errors import ToygptError

# torch warns at import when NumPy is absent; toygpt never uses NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

app = typer.Typer(
    name="toygpt",
    help="Train a small character-level GPT on Tiny Shakespeare (or any text), watch it "
    "learn, and sample from it.",
    no_args_is_help=True,
    add_completion=True,
    # A real bug shows a normal, short traceback without local variables.
    pretty_exceptions_show_locals=False,
    pretty_exceptions_short=True,
    rich_markup_mode="rich",
)
app.command(no_args_is_help=False)(train)
app.command()(sample_cmd.sample)
app.command("eval")(eval_cmd.eval_)
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(sweep_cmd.app, name="sweep")
app.add_typer(data_cmd.app, name="data")
app.command()(export_cmd.export)
app.command()(attention_cmd.attention)
app.command()(bench_cmd.bench)


def _version(value: bool) -> None:
    if value:
        from toygpt_cli import __version__
        from toygpt_cli.cli.common import write_out

        write_out(f"toygpt {__version__}\n")  # a failure to write is one line
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    pass


def normalize_argv(args: list[str]) -> list[str]:
    """`--resume` takes an optional run: a bare `--resume` means `--resume latest`.

    (Typer has no optional-value options, so the default is filled in here.)
    """
    fixed = list(args)
    for i, arg in enumerate(fixed):
        if arg == "--":
            break
        if arg == "--resume" and (i + 1 == len(fixed) or fixed[i + 1].startswith("-")):
            fixed.insert(i + 1, "latest")
            break
    return fixed


def usage_line(exc: ClickException) -> str:
    """A click usage error as one line, with what to type for help."""
    message = " ".join(exc.format_message().split())
    if message.endswith(".") and not message.endswith(".."):  # not a user's "--bogus..."
        message = message[:-1]
    message = message[:1].lower() + message[1:]  # as toygpt's own errors
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{message}{where}"


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C means "stop" in every command, even when toygpt was started with SIGINT
    # ignored (a background job of a non-interactive shell): Python would then never raise
    # KeyboardInterrupt, and `sample -i` would wait for input for ever.
    from toygpt_cli.cli.common import (
        running_with,
        say_stopped,
        settle_sigint,
        stopped_unsaid,
        watch_sigint,
    )

    running_with(argv)
    watch_sigint()
    _stand_in_for_closed_streams()
    args = normalize_argv(sys.argv[1:] if argv is None else argv)
    try:
        try:
            code = app(args=args, prog_name="toygpt", standalone_mode=False)
        finally:
            settle_sigint()  # before anything below prints
        if code == 130 and stopped_unsaid():  # typer's silent answer to a KeyboardInterrupt
            say_stopped()
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        say_stopped()
        code = 130
    except ToygptError as exc:  # raised outside a command (--version to a full disk)
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        code = exc.exit_code
    except NoArgsIsHelpError as exc:  # `toygpt` or `toygpt data` alone: the help was shown
        code = exc.exit_code
    except ClickException as exc:  # usage errors: one line, exit 2
        err.print(f"[bold red]error:[/] {escape(usage_line(exc))}", markup=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        say_stopped()
        code = 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        code = 1
    except OSError as exc:  # help or usage text to a closed or dead stdout
        if exc.errno not in (errno.EBADF, errno.ENOSPC, errno.EIO):
            raise
        why = escape(exc.strerror or str(exc))
        err.print(f"[bold red]error:[/] cannot write the output: {why}", markup=True)
        code = 1
    _finish_stdout()
    sys.exit(code if isinstance(code, int) else 0)


class _Closed(io.TextIOBase):
    """Stands in for a stream toygpt was started without (`>&-`): Python leaves None there.
    Writing output then fails as on a dead device (one line, exit 1); messages for a closed
    stderr go nowhere."""

    def __init__(self, name: str):
        self.name = name

    def write(self, text: str) -> int:
        if self.name == "stdout":
            raise OSError(errno.EBADF, "standard output is closed")
        return len(text)

    def isatty(self) -> bool:
        return False


def _stand_in_for_closed_streams() -> None:
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, _Closed(name))


def _finish_stdout() -> None:
    """Flush stdout now, so that a failure to write it is handled here, not at exit."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        # Python would report the failed flush at exit: point stdout at nothing.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
