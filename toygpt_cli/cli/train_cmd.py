"""`toygpt train`: its hyper-parameter options are generated from the configuration
declarations (toygpt_cli/config.py), so each option is declared once.

Every generated option defaults to None ("not given") so that a preset, a config file and
the command line can be layered: preset < --config/--like < command line. The defaults
shown in --help are the dataclasses' own.
"""

from __future__ import annotations

import inspect
import os
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from toygpt_cli.cli.common import (
    DataDir,
    RunsDir,
    command_line,
    err,
    fancy_output,
    handle_errors,
    out,
    paths,
)
from toygpt_cli.config import declared_fields, field_type, flag_of, format_default
from toygpt_cli.recipes.presets import PRESETS

R = "Run"


def _run_options(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Train on this UTF-8 text file instead of Tiny Shakespeare.", rich_help_panel=R
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help=f"Named options: {', '.join(PRESETS)}.", rich_help_panel=R),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Options from a TOML file (or a run's config.json).", rich_help_panel=R),
    ] = None,
    like: Annotated[
        str | None,
        typer.Option(help="Start a new run with another run's configuration.", rich_help_panel=R),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="A label for the run, usable wherever a run is named.", rich_help_panel=R
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="[RUN]",
            help="Continue a run (default: latest) from its last checkpoint.",
            rich_help_panel=R,
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="With --resume: more steps (default: finish the plan, or 5000 more).",
            rich_help_panel=R,
        ),
    ] = None,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write TensorBoard event files to <run>/tb (the tensorboard extra).",
            rich_help_panel=R,
        ),
    ] = False,
    sample: Annotated[
        bool,
        typer.Option("--sample", help="Print a 500-character sample when done.", rich_help_panel=R),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Log lines instead of a progress bar.", rich_help_panel=R
        ),
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="Processes to start on this machine (DDP).", rich_help_panel=R),
    ] = 1,
    runs_dir: RunsDir = None,
    data_dir: DataDir = None,
) -> None:
    """The run-level options of `toygpt train` (the signature is what matters)."""


def _field_parameters() -> list[inspect.Parameter]:
    params = []
    for _, f, opt in declared_fields():
        if not opt.cli:
            continue
        kind = str if opt.parse else field_type(f)
        flag = opt.flag or flag_of(f.name)
        decls = [f"{flag}/--no-{flag[2:]}" if kind is bool else flag, *opt.aliases]
        option = typer.Option(
            *decls,
            help=f"{opt.help} \\[default: {format_default(f.default)}]",
            show_default=False,
            rich_help_panel=opt.panel,
            metavar=opt.metavar,
            envvar=opt.envvar,
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[kind | None, option],
            )
        )  # fmt: skip
    return params


_RUN_PARAMS = [
    p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
    for p in inspect.signature(_run_options, eval_str=True).parameters.values()
]
_FIELD_NAMES = {p.name for p in _field_parameters()}


def train(**options: Any) -> None:
    """Train a model; each run gets its own folder under runs/."""
    _train(**options)


train = handle_errors(train)
train.__signature__ = inspect.Signature([*_field_parameters(), *_RUN_PARAMS])


def _train(
    *,
    data,
    preset,
    config,
    like,
    name,
    tensorboard,
    resume,
    steps,
    sample,
    quiet,
    nproc,
    runs_dir,
    data_dir,
    **fields,
) -> None:
    from toygpt_cli.errors import UsageError

    given = {k: v for k, v in fields.items() if k in _FIELD_NAMES and v is not None}
    where = paths(data_dir, runs_dir)
    if steps is not None and resume is None:
        raise UsageError("--steps goes with --resume; a new run's length is --iters")
    layers = _layers(preset, config, like, where.runs_dir)
    if resume is not None and (layers or name):
        raise UsageError("--preset/--config/--like/--name make a new run; not with --resume")
    file_data = next((layer.pop("data") for layer in layers if "data" in layer), None)
    if nproc > 1 and "RANK" not in os.environ:
        _check_before_launch(layers, given, resume, steps, where)
        if resume is None and data is None and file_data is None:
            _default_dataset(where.data_dir)  # fetched once, here, not by every worker
        from toygpt_cli.parallel.launch import launch_local

        argv = _without_nproc(command_line()[1:])
        err.print(f"starting {nproc} training processes", highlight=False)
        raise typer.Exit(launch_local(nproc, argv))

    from toygpt_cli.cli.progress import TrainDisplay
    from toygpt_cli.config import build_configs
    from toygpt_cli.parallel.distributed import Distributed
    from toygpt_cli.runs import session as core

    if resume is None:
        model_cfg, train_cfg = build_configs(*layers, given)
        dist = Distributed.from_env(train_cfg.device)
    else:
        dist = Distributed.from_env(given.get("device", "auto"))
    display = TrainDisplay(fancy_output(quiet) and dist.is_main)
    callback = display if dist.is_main else None
    from toygpt_cli.cli.meter import Meter

    meter = Meter(fancy_output(quiet) and dist.is_main, "bytes")
    try:
        if resume is not None:
            from toygpt_cli.runs.folder import open_run

            with meter:
                trainer = core.resume_training(
                    open_run(resume, where.runs_dir), steps, given, callback=callback,
                    command=command_line(), dist=dist, data=data, tensorboard=tensorboard,
                    progress=meter,
                )  # fmt: skip
        else:
            data_path = data or file_data or _dataset_for_ranks(where.data_dir, dist)
            with meter:
                trainer = core.start_training(
                    model_cfg, train_cfg, data_path, where.runs_dir, callback=callback,
                    command=command_line(), dist=dist, label=name, tensorboard=tensorboard,
                    progress=meter,
                )  # fmt: skip
        with display, core.stop_on_signals(trainer):
            result = trainer.run()
        if result.status == "interrupted":
            _ignore_signals()  # a second Ctrl-C during the exit must not add a traceback
    except KeyboardInterrupt:
        _ignore_signals()
        err.print("stopped at once; the last checkpoint on disk is intact")
        raise typer.Exit(130) from None
    finally:
        dist.close()
    if dist.is_main:
        _report(result, sample, trainer)


def _layers(preset, config, like, runs_dir) -> list[dict[str, Any]]:
    from toygpt_cli.errors import UsageError
    from toygpt_cli.recipes.presets import load_config_file, preset_options

    layers: list[dict[str, Any]] = []
    if preset is not None:
        layers.append(preset_options(preset))
    if config is not None and like is not None:
        raise UsageError("use --config or --like, not both")
    if config is not None:
        layers.append(load_config_file(config))
    if like is not None:
        from toygpt_cli.runs.folder import resolve_run

        layers.append(load_config_file(resolve_run(like, runs_dir) / "config.json"))
    return layers


def _check_before_launch(layers, given, resume, steps, where) -> None:
    """Every usage error the workers would hit, found once, before anything starts."""
    from toygpt_cli.config import build_configs, resume_configs

    if resume is None:
        build_configs(*layers, given)
        return
    from toygpt_cli.config import ModelConfig, TrainConfig, from_dict
    from toygpt_cli.errors import ToygptError
    from toygpt_cli.runs.checkpoint import damage, load_checkpoint
    from toygpt_cli.runs.folder import CKPT_LAST, open_run

    run = open_run(resume, where.runs_dir)
    ckpt = load_checkpoint(run.file(CKPT_LAST))
    try:
        model = from_dict(ModelConfig, ckpt["model_config"])
        train = from_dict(TrainConfig, ckpt["train_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ToygptError(f"{run.file(CKPT_LAST)} is damaged: {damage(exc)}") from None
    resume_configs(model, train, given, run.name)


def _without_nproc(argv: list[str]) -> list[str]:
    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            cleaned.append(a)
    return cleaned


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _report(result, sample: bool, trainer) -> None:
    from toygpt_cli.errors import ToygptError

    run = result.run
    if result.status == "interrupted":
        err.print(
            f"interrupted at step {result.step}; checkpoint saved in {run.path}\n"
            f"resume with: {result.resume_command}",
            highlight=False,
        )
        raise typer.Exit(128 + (result.signal or signal.SIGINT))
    if result.steps_this_session == 0:
        raise ToygptError(
            f"no steps were taken: run {run.name} is at step {result.step}, which its plan "
            "or budget does not go past; give --steps N or --max-time"
        )
    last = result.last_eval or {}
    best = result.best_val if result.best_val is not None else float("nan")
    err.print(
        f"done: step {result.step}, train loss {last.get('train_loss', float('nan')):.4f}, "
        f"val loss {last.get('val_loss', float('nan')):.4f} (best {best:.4f})\n"
        f"run folder: {run.path}",
        highlight=False,
    )
    if sample:
        from toygpt_cli.sample import sample_text

        text = sample_text(
            trainer.model, trainer.corpus.tokenizer, max_new_tokens=500, dtype=trainer.dtype
        )[0]
        out.print(text, markup=False, highlight=False)


def _dataset_for_ranks(data_dir: Path, dist) -> Path:
    """Tiny Shakespeare in the data folder; under torchrun one process per node fetches it
    while the others wait, and a failure ends every rank with one line (from rank 0)."""
    from toygpt_cli.errors import ToygptError

    if not dist.active:
        return _default_dataset(data_dir)
    error, path = None, None
    if dist.local_rank == 0:
        try:
            path = _default_dataset(data_dir)
        except ToygptError as exc:
            error = exc
    if dist.agree_any(error is not None):  # also the barrier the other ranks wait at
        raise error or ToygptError("the dataset could not be fetched (see rank 0)")
    return path or _default_dataset(data_dir)


def _default_dataset(data_dir: Path) -> Path:
    """Tiny Shakespeare in the data folder (under any name), fetched first if missing."""
    from toygpt_cli.corpus.download import TINY_SHAKESPEARE_FILE, fetch, find_tiny_shakespeare
    from toygpt_cli.errors import ToygptError

    found = find_tiny_shakespeare(data_dir)
    if found is not None:
        return found
    path = data_dir / TINY_SHAKESPEARE_FILE
    err.print(f"{path} is missing; fetching Tiny Shakespeare first")
    try:
        return fetch(data_dir=data_dir).path
    except ToygptError as exc:
        raise ToygptError(
            f"{exc}. Run `toygpt data fetch --data-dir {data_dir}` when online, or train on "
            "any text file with --data FILE"
        ) from None
