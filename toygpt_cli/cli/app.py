"""`toygpt`: the command-line entry point and its commands."""

from __future__ import annotations

import signal
import sys
import warnings
from typing import Annotated

import typer

from toygpt_cli.cli import bench_cmd, data_cmd, eval_cmd, export_cmd, runs_cmd, sample_cmd
from toygpt_cli.cli.common import (
    out,
)
from toygpt_cli.cli.train_cmd import train

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
app.add_typer(data_cmd.app, name="data")
app.add_typer(runs_cmd.app, name="runs")
app.command(no_args_is_help=False)(train)
app.command()(sample_cmd.sample)
app.command("eval")(eval_cmd.eval_)
app.command()(bench_cmd.bench)
app.command()(export_cmd.export)


def _version(value: bool) -> None:
    if value:
        from toygpt_cli import __version__

        out.print(f"toygpt {__version__}")
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


def main(argv: list[str] | None = None) -> None:
    # Ctrl-C means "stop" in every command, even when toygpt was started with SIGINT
    # ignored (a background job of a non-interactive shell): Python would then never raise
    # KeyboardInterrupt, and `sample -i` would wait for input for ever.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app(args=normalize_argv(sys.argv[1:] if argv is None else argv), prog_name="toygpt")
