"""Every option of every command, declared once, and how a command takes its options.

The configurations' fields (ModelConfig, TrainConfig in config.py; SampleConfig in
sample.py) and the command-line's own options (`CommandOptions`, below) are all declared
the same way: a dataclass field with an `Opt` (help, flag, bounds, choices, panel).
`@uses(...)` gives a command the options it names, as Typer parameters built from those
declarations, and checks each value against its declaration before the command runs, so
--help, the generated reference (docs/cli.md) and the checks all come from one place.

    @app.command()
    @uses("run", SampleConfig, "device", "dtype", "threads", "runs_dir")
    def sample(o):  # o.run, o.temperature, o.device, ... checked
        ...
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer

from toygpt_cli.config import RUN as RUN_PANEL
from toygpt_cli.config import (
    ModelConfig,
    SampleConfig,
    TrainConfig,
    check,
    field_type,
    format_default,
    option,
)
from toygpt_cli.recipes.presets import PRESETS


def complete_run(incomplete: str) -> list[str]:
    """Shell completion for a run: `latest` and the run folders' names, newest first."""
    from toygpt_cli.runs.folder import list_run_dirs

    try:
        runs_dir = Path(os.environ.get("TOYGPT_RUNS_DIR") or "runs")
        names = [p.name for p in list_run_dirs(runs_dir)]
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [n for n in ("latest", *names) if n.startswith(incomplete)]


RUN_HELP = "A run: latest, latest~1 (the one before), a folder name, a label or a path."


@dataclass
class CommandOptions:
    """The command line's own options (the configurations hold the rest)."""

    # -- which run, where things live, how results are shown --------------------------------
    run: str = option("latest", RUN_HELP, flag="--run", aliases=("-r",), complete=complete_run)
    run_arg: str = option("latest", RUN_HELP, flag="RUN", argument=True, complete=complete_run)
    runs: str = option(None, "Runs: latest, latest~N, names, labels or paths.", flag="RUNS",
                       argument=True, many=True, required=True, complete=complete_run)  # fmt: skip
    runs_dir: str = option(
        None, "Folder holding one sub-folder per run. \\[default: ./runs]",
        envvar="TOYGPT_RUNS_DIR", metavar="PATH",
    )  # fmt: skip
    data_dir: str = option(
        None, "Folder where datasets are downloaded. \\[default: ./data]",
        envvar="TOYGPT_DATA_DIR", metavar="PATH",
    )  # fmt: skip
    json: bool = option(False, "Print JSON on stdout, for scripts.", negatable=False)
    quiet: bool = option(
        False, "Plain log lines instead of a live progress display.", aliases=("-q",),
        negatable=False,
    )  # fmt: skip
    checkpoint: str = option(
        "auto", "best (lowest val loss) or last; auto: best when it exists.",
        choices=("auto", "best", "last"),
    )  # fmt: skip
    # -- train: the run itself ----------------------------------------------------------
    data: str = option(
        None, "Train on this UTF-8 text file instead of Tiny Shakespeare.", RUN_PANEL,
        metavar="FILE",
    )  # fmt: skip
    preset: str = option(
        None, "Named options: " + ", ".join(PRESETS) + " (docs/training.md).", RUN_PANEL,
        choices=tuple(PRESETS),
    )  # fmt: skip
    name: str = option(None, "A label for the run, usable wherever a run is named.", RUN_PANEL)
    resume: str = option(
        None, "Continue a run (default: latest) from its last checkpoint.", RUN_PANEL,
        metavar="[RUN]", complete=complete_run,
    )  # fmt: skip
    steps: int = option(
        None, "With --resume: this many more steps (default: finish the plan, or 5000 more).",
        RUN_PANEL, min=1,
    )  # fmt: skip
    config: str = option(
        None, "Options from a TOML file (or a run's config.json).", RUN_PANEL, metavar="FILE"
    )
    like: str = option(None, "Start a new run with another run's options.", RUN_PANEL,
                       metavar="RUN", complete=complete_run)  # fmt: skip
    init_from: str = option(
        None, "Start a new run from this run's weights and architecture (fine-tuning, "
        "e.g. on new text with --data).", RUN_PANEL, metavar="RUN", complete=complete_run,
    )  # fmt: skip
    init_checkpoint: str = option(
        "auto", "With --init-from: best, last, or auto (best when it exists).", RUN_PANEL,
        choices=("auto", "best", "last"),
    )  # fmt: skip
    tensorboard: bool = option(
        False, "Also write TensorBoard event files to <run>/tb (the tensorboard extra).",
        RUN_PANEL, negatable=False,
    )  # fmt: skip
    sample: bool = option(
        False, "Print a 500-character sample when done.", RUN_PANEL, negatable=False
    )
    nproc: int = option(
        None, "Processes to start on this machine (DDP). \\[default: 1; with --resume, as "
        "many as the run trained with]", RUN_PANEL, min=1, max=64,
    )  # fmt: skip
    # -- sample ---------------------------------------------------------------------------
    prompt: str = option("", "Text to continue.", aliases=("-p",))
    prompt_file: str = option(None, "Continue the text of this UTF-8 file (- for stdin).",
                              metavar="FILE")  # fmt: skip
    look_at: str = option("", "The text to look into (at most the model's block_size "
                          "characters).", flag="--prompt", aliases=("-p",))  # fmt: skip
    interactive: bool = option(
        False, "Read a prompt per line from stdin and continue each; EOF or an empty line ends.",
        aliases=("-i",), negatable=False,
    )  # fmt: skip
    # -- eval -----------------------------------------------------------------------------
    split: str = option("both", "train, val or both.", choices=("train", "val", "both"))
    max_chars: int = option(
        None, "Score about this many characters per split, in evenly spaced windows "
        "(default: every character).", min=1,
    )  # fmt: skip
    offsets: int = option(
        1, "Score the whole split N times, the windows shifted by block_size / N each time, "
        "and average (so the figure does not depend on one alignment).", min=1, max=64,
    )  # fmt: skip
    # -- bench ----------------------------------------------------------------------------
    seconds: float = option(
        5.0,
        "Seconds for each measurement; the whole bench takes about ten times this, plus ~10 s.",
        min=0.5, max=600.0,
    )  # fmt: skip
    # -- export and plots ------------------------------------------------------------------
    output: str = option(None, "File to write.", aliases=("-o",), metavar="FILE")
    # -- data fetch -------------------------------------------------------------------------
    url: str = option(None, "Fetch another plain-text corpus instead.")
    sha256: str = option(None, "Expected sha256 of the file (hex).")
    refetch: bool = option(False, "Download again even if present.", flag="--force",
                           negatable=False)  # fmt: skip
    max_bytes: str = option(
        "1G", "Refuse a file larger than this once decompressed (e.g. 500M, 4G)."
    )
    timeout: float = option(
        600.0, "Seconds the whole download may take, retries included.", above=0.0, max=1e6
    )
    file: str = option(
        None, "A text file; default: Tiny Shakespeare in the data folder.", flag="FILE",
        argument=True,
    )  # fmt: skip
    # -- sweep ----------------------------------------------------------------------------
    sweep_name: str = option(None, "The sweep's name (its folder: runs/sweeps/NAME).",
                             flag="NAME", argument=True, required=True)  # fmt: skip
    trial: int = option(None, "A trial's number (from 0).", flag="TRIAL", argument=True,
                        required=True, min=0)  # fmt: skip
    sets: str = option(
        None, "An option and its values: name=v1,v2 (a grid), or name=low..high[:log] with "
        "--random. Repeat for each option.", flag="--set", many=True, metavar="NAME=VALUES",
    )  # fmt: skip
    random: int = option(
        None, "A random search: draw this many trials from the --set values and ranges.",
        min=1, max=10_000,
    )  # fmt: skip
    jobs: int = option(
        1, "Trials run at once, each in its own process with its share of the CPU threads.",
        min=1, max=64,
    )  # fmt: skip
    emit: str = option(
        None, "slurm: write a SLURM array job (runs/sweeps/NAME/slurm.sh), one task per trial, "
        "instead of running here.", choices=("slurm",),
    )  # fmt: skip
    # -- runs -----------------------------------------------------------------------------
    count: int = option(None, "Show at most N.", aliases=("-n",), min=1)
    yes: bool = option(False, "Do not ask for confirmation.", aliases=("-y",), negatable=False)
    force: bool = option(
        False, "Remove a run marked running whose process cannot be checked (no lock file: "
        "made by an older toygpt, or on another host). A locked run is never removed.",
        negatable=False,
    )  # fmt: skip


SOURCES = (CommandOptions, SampleConfig, ModelConfig, TrainConfig)


def declaration(name: str) -> dataclasses.Field:
    for cls in SOURCES:
        for f in fields(cls):
            if f.name == name:
                return f
    raise KeyError(name)


def flag_of(name: str) -> str:
    """The flag a user types for an option (its name when it has none)."""
    try:
        opt = declaration(name).metadata["opt"]
    except KeyError:
        return name
    return opt.flag or "--" + name.replace("_", "-")


def parameter(f: dataclasses.Field, default: Any = ..., layered: bool = False, panel=None):
    """The Typer parameter of a declared field. `layered`: its default is None ("not
    given"), so presets and config files can supply it; --help shows the field's own."""
    opt = f.metadata["opt"]
    kind = str if opt.parse else field_type(f)
    default = f.default if default is ... else default
    shown = f.default if layered else default
    text = opt.help
    plain_flag = kind is bool and not opt.negatable  # --json, --quiet: off unless given
    if shown not in (None, "") and not opt.argument and not plain_flag and "[default:" not in text:
        text = f"{text} \\[default: {format_default(shown)}]"
    metavar = opt.metavar
    if opt.argument and metavar is None:  # RUN, not run_arg; RUNS... where it takes several
        metavar = opt.flag + ("..." if opt.many else "")
    common = dict(help=text, show_default=False, metavar=metavar,
                  autocompletion=opt.complete, rich_help_panel=opt.panel or panel)  # fmt: skip
    if opt.argument:
        info = typer.Argument(**common)
        name = f.name
    else:
        flag = opt.flag or "--" + f.name.replace("_", "-")
        negatable = kind is bool and opt.negatable
        decls = [f"{flag}/--no-{flag[2:]}" if negatable else flag, *opt.aliases]
        info = typer.Option(*decls, envvar=opt.envvar, **common)
        name = f.name
    annotation = Annotated[kind | None, info]
    if opt.many:
        annotation = Annotated[list[kind], info]
    elif kind is bool and not layered:
        annotation = Annotated[bool, info]
    if layered:
        default = None
    elif opt.required and default is None:  # no default here: the command line must give it
        default = inspect.Parameter.empty
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def uses(
    *sources: str | type, layered: tuple[type, ...] = (), panel: str | None = None, **defaults
):
    """Give a command the declared options `sources` (names, or dataclasses for all of
    their command-line fields), in that order; `layered` classes default to None; `panel`
    groups the options declared without one; keyword arguments change a default for this
    command. The command receives one namespace of checked values."""
    chosen: list[tuple[dataclasses.Field, bool]] = []
    for source in sources:
        if isinstance(source, str):
            chosen.append((declaration(source), False))
        else:
            lay = source in layered
            chosen += [(f, lay) for f in fields(source) if f.metadata["opt"].cli]
    params = [parameter(f, defaults.get(f.name, ...), lay, panel) for f, lay in chosen]
    arguments = [p for p in params if _is_argument(p)]
    params = arguments + [p for p in params if not _is_argument(p)]
    checked = {f.name: f for f, lay in chosen}

    def decorate(func):
        from toygpt_cli.cli.common import handle_errors

        @functools.wraps(func)
        def command(**values: Any) -> Any:
            for key, value in values.items():
                f = checked[key]
                if isinstance(value, list):
                    values[key] = [check(f, v) for v in value]
                elif value is not None:
                    values[key] = check(f, value)
            return func(SimpleNamespace(**values))

        command.__signature__ = inspect.Signature(
            [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
        )
        command.__doc__ = summary_in_one_line(func.__doc__)
        return handle_errors(command)

    return decorate


def summary_in_one_line(doc: str | None) -> str | None:
    """A docstring whose first paragraph (the line a command list shows) is one line: the
    help keeps a docstring's line breaks, which would cut that line mid-sentence."""
    if not doc:
        return doc
    first, _, rest = inspect.cleandoc(doc).partition("\n\n")
    return " ".join(first.split()) + ("\n\n" + rest if rest else "")


def _is_argument(p: inspect.Parameter) -> bool:
    return any(isinstance(m, typer.models.ArgumentInfo) for m in p.annotation.__metadata__)
