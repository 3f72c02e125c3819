"""`toygpt train`: options map one-to-one onto ModelConfig/TrainConfig fields.

Every hyper-parameter option defaults to None ("not given") so that a preset, a config
file and the command line can be layered: preset < --config/--like < command line. The
defaults shown in --help are read from the dataclasses, the one place they are defined.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import fields
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
from toygpt_cli.config import ModelConfig, TrainConfig

_DEFAULTS = {f.name: f.default for f in (*fields(ModelConfig), *fields(TrainConfig))}


def _o(name: str, help: str, panel: str, *flags: str, **kw: Any):
    flag = "--" + name.replace("_", "-")
    return typer.Option(
        flag, *flags, help=help, show_default=str(_DEFAULTS[name]), rich_help_panel=panel, **kw
    )


M, T, S, R = "Model", "Training", "Schedule and optimizer", "Run"


@handle_errors
def train(
    # -- model
    block_size: Annotated[int | None, _o("block_size", "Context length in characters.", M)] = None,
    n_embd: Annotated[int | None, _o("n_embd", "Embedding width.", M)] = None,
    n_layer: Annotated[int | None, _o("n_layer", "Transformer blocks.", M)] = None,
    n_head: Annotated[int | None, _o("n_head", "Attention heads (must divide n_embd).", M)] = None,
    dropout: Annotated[float | None, _o("dropout", "Dropout probability in [0, 1).", M)] = None,
    init: Annotated[
        str | None, _o("init", "Weight init: default (PyTorch's) or normal (N(0, 0.02)).", M)
    ] = None,
    tie_weights: Annotated[
        bool | None, _o("tie_weights", "Share input and output embeddings.", M)
    ] = None,
    # -- training
    iters: Annotated[int | None, _o("iters", "Optimizer steps for a new run.", T)] = None,
    batch_size: Annotated[
        int | None, _o("batch_size", "Sequences per step (per process).", T)
    ] = None,
    device: Annotated[
        str | None, _o("device", "auto (cuda > mps > cpu), cpu, cuda[:N], mps.", T)
    ] = None,
    dtype: Annotated[
        str | None, _o("dtype", "auto, float32, bfloat16 or float16 (auto: bf16 where fast).", T)
    ] = None,
    eval_interval: Annotated[int | None, _o("eval_interval", "Steps between evals.", T)] = None,
    eval_iters: Annotated[
        int | None, _o("eval_iters", "Batches per split in each eval.", T)
    ] = None,
    seed: Annotated[int | None, _o("seed", "Random seed.", T)] = None,
    val_fraction: Annotated[
        float | None, _o("val_fraction", "Share of the text held out.", T)
    ] = None,
    max_time: Annotated[
        str | None,
        typer.Option(
            "--max-time",
            help="Wall-clock budget, e.g. 90s, 10m, 1h; the schedule fits it.",
            show_default="none",
            rich_help_panel=T,
        ),
    ] = None,
    save_every: Annotated[
        int | None, _o("save_every", "Extra checkpoint every N steps (0: off).", T)
    ] = None,
    sample_chars: Annotated[
        int | None, _o("sample_chars", "Characters sampled at each eval (0: none).", T)
    ] = None,
    compile: Annotated[bool | None, _o("compile", "torch.compile the model.", T)] = None,
    threads: Annotated[int | None, _o("threads", "CPU threads (0: torch's choice).", T)] = None,
    # -- schedule and optimizer
    learning_rate: Annotated[
        float | None, _o("learning_rate", "Peak learning rate.", S, "--lr")
    ] = None,
    lr_schedule: Annotated[str | None, _o("lr_schedule", "constant or cosine.", S)] = None,
    warmup_iters: Annotated[int | None, _o("warmup_iters", "Linear warmup steps.", S)] = None,
    min_lr: Annotated[float | None, _o("min_lr", "Floor of the cosine decay.", S)] = None,
    weight_decay: Annotated[float | None, _o("weight_decay", "AdamW weight decay.", S)] = None,
    beta2: Annotated[
        float | None, _o("beta2", "AdamW second-moment decay (0.99 suits small batches).", S)
    ] = None,
    decay_matrices_only: Annotated[
        bool | None, _o("decay_matrices_only", "Decay only weight matrices, not biases/norms.", S)
    ] = None,
    grad_clip: Annotated[float | None, _o("grad_clip", "Clip gradient norm (0: off).", S)] = None,
    # -- run
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Train on this UTF-8 text file instead of Tiny Shakespeare.",
            rich_help_panel=R,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="seed, nanogpt-char or cpu.", rich_help_panel=R),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="Options from a TOML file (or a run's config.json).", rich_help_panel=R
        ),
    ] = None,
    like: Annotated[
        str | None,
        typer.Option(
            "--like", help="Start a new run with another run's configuration.", rich_help_panel=R
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="[RUN]",
            help="Continue a run (default: latest) from its last checkpoint.",
            rich_help_panel=R,
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", help="With --resume: how many more steps.", rich_help_panel=R)
    ] = 5000,
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
        typer.Option(
            "--nproc", min=1, help="Processes to launch with torchrun (DDP).", rich_help_panel=R
        ),
    ] = 1,
    runs_dir: RunsDir = None,
    data_dir: DataDir = None,
) -> None:
    """Train a model; each run gets its own folder under runs/."""
    if nproc > 1:
        raise typer.Exit(_launch_torchrun(nproc))
    given = {k: v for k, v in locals().items() if k in _DEFAULTS and v is not None}
    if max_time is not None:
        given["max_time"] = parse_duration(max_time)
    where = paths(data_dir, runs_dir)

    from toygpt_cli.config import build_configs, load_config_file, preset_options
    from toygpt_cli.errors import UsageError

    layers: list[dict[str, Any]] = []
    if preset is not None:
        layers.append(preset_options(preset))
    if config is not None and like is not None:
        raise UsageError("use --config or --like, not both")
    if config is not None:
        layers.append(load_config_file(config))
    if like is not None:
        from toygpt_cli.runs import resolve_run

        layers.append(load_config_file(resolve_run(like, where.runs_dir) / "config.json"))
    file_data = next((layer.pop("data") for layer in layers if "data" in layer), None)

    from toygpt_cli.cli.progress import TrainDisplay
    from toygpt_cli.distributed import Distributed

    dist = Distributed.from_env(given.get("device", "auto"))
    display = TrainDisplay(fancy_output(quiet) and dist.is_main)
    callback = display if dist.is_main else None
    from toygpt_cli import train as core

    try:
        if resume is not None:
            if layers:
                raise UsageError("--preset/--config/--like make a new run; not with --resume")
            from toygpt_cli.runs import open_run

            run = open_run(resume, where.runs_dir)
            overrides = dict(given, data=data)
            trainer = core.resume_training(
                run, steps, overrides, callback=callback, command=command_line(), dist=dist
            )
        else:
            model_cfg, train_cfg = build_configs(*layers, given)
            data_path = data or file_data or _default_dataset(where.data_dir)
            trainer = core.start_training(
                model_cfg,
                train_cfg,
                data_path,
                where.runs_dir,
                callback=callback,
                command=command_line(),
                dist=dist,
            )
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
    if not dist.is_main:
        return
    _report(result, sample, trainer)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _report(result, sample: bool, trainer) -> None:
    run = result.run
    if result.status == "interrupted":
        err.print(
            f"interrupted at step {result.step}/{result.iters}; checkpoint saved in {run.path}\n"
            f"resume with: {result.resume_command}",
            highlight=False,
        )
        raise typer.Exit(128 + (result.signal or signal.SIGINT))
    last = result.last_eval or {}
    err.print(
        f"done: step {result.step}, train loss {last.get('train_loss', float('nan')):.4f}, "
        f"val loss {last.get('val_loss', float('nan')):.4f} (best {result.best_val:.4f})\n"
        f"run folder: {run.path}",
        highlight=False,
    )
    if sample:
        from toygpt_cli.sample import sample_text

        text = sample_text(
            trainer.model, trainer.corpus.tokenizer, max_new_tokens=500, dtype=trainer.dtype
        )[0]
        out.print(text, markup=False, highlight=False)


def _default_dataset(data_dir: Path) -> Path:
    """Tiny Shakespeare in the data folder, fetched first if it is missing."""
    from toygpt_cli.download import TINY_SHAKESPEARE_FILE, fetch
    from toygpt_cli.errors import ToygptError

    path = data_dir / TINY_SHAKESPEARE_FILE
    if path.exists():
        return path
    err.print(f"{path} is missing; fetching Tiny Shakespeare first")
    try:
        return fetch(data_dir=data_dir).path
    except ToygptError as exc:
        raise ToygptError(
            f"{exc}. Run `toygpt data fetch --data-dir {data_dir}` when online, or train on "
            "any text file with --data FILE"
        ) from None


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    from toygpt_cli.errors import UsageError

    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    scale = units.get(t[-1:])
    number = t[:-1] if scale else t
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise UsageError(f"--max-time must look like 90s, 10m or 1h, got {text!r}") from None
    if seconds <= 0:
        raise UsageError(f"--max-time must be greater than 0, got {text!r}")
    return seconds


def _launch_torchrun(nproc: int) -> int:
    """Re-run this command under torchrun with `nproc` processes; returns its exit code."""
    cleaned, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        cleaned.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "toygpt_cli",
        *cleaned,
    ]
    err.print("launching: " + " ".join(cmd[2:]), highlight=False)
    return subprocess.call(cmd)
