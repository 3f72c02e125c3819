"""`toygpt train`: its options are the configuration's declarations (config.py) and the
run-level ones (cli/options.py), each declared once.

Every configuration option defaults to None ("not given") so that a preset, a config file
and the command line can be layered: preset < --config/--like < command line. --help
shows the dataclasses' own defaults.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from toygpt_cli.cli.common import command_line, err, fancy_output, interrupted, out, paths
from toygpt_cli.cli.options import RUN_PANEL, uses
from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.errors import ToygptError, UsageError

RUN_LEVEL = ("data", "preset", "name", "resume", "steps", "init_from", "init_checkpoint",
             "config", "like", "quiet", "sample", "tensorboard", "nproc", "runs_dir",
             "data_dir")  # fmt: skip
FIELDS = {f for cls in (ModelConfig, TrainConfig) for f in cls.__dataclass_fields__}


@uses(*RUN_LEVEL, ModelConfig, TrainConfig, layered=(ModelConfig, TrainConfig), panel=RUN_PANEL)
def train(o) -> None:
    """Train a model; each run gets its own folder under runs/."""
    given = {k: v for k, v in vars(o).items() if k in FIELDS and v is not None}
    where = paths(o.data_dir, o.runs_dir)
    if o.steps is not None and o.resume is None:
        raise UsageError("--steps goes with --resume; a new run's length is --iters")
    layers = _layers(o.preset, o.config, o.like, where.runs_dir)
    if o.resume is not None and (layers or o.name or o.init_from):
        raise UsageError(
            "--preset/--config/--like/--name/--init-from make a new run; not with --resume"
        )
    file_data = next((layer.pop("data") for layer in layers if "data" in layer), None)
    nproc = o.nproc or 1
    recorded = _recorded(o.resume, where.runs_dir) if o.resume is not None else {}
    # --device, else the device a resumed run trained on, else a preset's or config file's
    device = str(
        given.get("device")
        or recorded.get("device")
        or next((layer["device"] for layer in reversed(layers) if "device" in layer), "auto")
    )
    if o.resume is not None and "RANK" not in os.environ:
        nproc = _processes_to_resume(recorded, o.nproc, given, device)
    if nproc > 1 and "RANK" not in os.environ:
        _check_nproc(nproc, device)
        _check_before_launch(layers, given, o.resume, o.steps, where)
        if o.resume is None and o.data is None and file_data is None:
            _default_dataset(where.data_dir)  # fetched once, here, not by every worker
        from toygpt_cli.parallel.launch import StoppedWhileStarting, launch_local

        as_before = ", as the run trained" if o.resume is not None and o.nproc is None else ""
        err.print(f"starting {nproc} training processes{as_before}", highlight=False)
        try:
            code = launch_local(nproc, _without_nproc(command_line()[1:]))
        except StoppedWhileStarting as exc:
            err.print("stopped during start-up; no run was created")
            code = 128 + exc.signum
        raise typer.Exit(code)

    from toygpt_cli.cli.meter import Meter
    from toygpt_cli.cli.progress import TrainDisplay
    from toygpt_cli.config import build_configs
    from toygpt_cli.parallel.distributed import Distributed
    from toygpt_cli.runs import session
    from toygpt_cli.stopping import StopSwitch
    from toygpt_cli.train import BudgetTooSmall

    if interrupted():  # Ctrl-C while PyTorch loaded, swallowed by an import
        raise KeyboardInterrupt
    init, extra = None, None
    if o.resume is None:
        if o.init_from is not None:
            init = _init_from(o.init_from, o.init_checkpoint, where.runs_dir, given)
            layers = [_training_only(layer) for layer in layers]  # the run's architecture wins
        model_cfg, train_cfg = build_configs(*layers, given)
        dist = Distributed.from_env(train_cfg.device)
        _say_gpu_note(o.preset, train_cfg.device, dist.is_main)
        train_cfg = _compile_if_it_pays(o.preset, train_cfg, layers, given)  # every rank alike
        if init is None and not dist.active:
            if o.data is None and file_data is None:  # fetched before the machine is timed
                file_data = _default_dataset(where.data_dir)
            model_cfg, train_cfg, extra = _fit_machine(o.preset, model_cfg, train_cfg, layers,
                                                       given)  # fmt: skip
    else:  # the device the run trained on, unless --device changes it
        dist = Distributed.from_env(device)
    display = TrainDisplay(fancy_output(o.quiet) and dist.is_main)
    stop = StopSwitch(on_first=display.stopping if dist.is_main else None)
    callback = display if dist.is_main else None
    meter = Meter(fancy_output(o.quiet) and dist.is_main, "bytes")
    trainer, started = None, False
    try:
        with meter:
            if o.resume is not None:
                from toygpt_cli.runs.folder import open_run

                trainer = session.resume_training(
                    open_run(o.resume, where.runs_dir), o.steps, given, callback=callback,
                    command=command_line(), dist=dist, data=o.data, tensorboard=o.tensorboard,
                    progress=meter, stop=stop,
                )  # fmt: skip
            else:
                data_path = o.data or file_data or _dataset_for_ranks(where.data_dir, dist)
                trainer = session.start_training(
                    model_cfg, train_cfg, data_path, where.runs_dir, callback=callback,
                    command=command_line(), dist=dist, label=o.name, tensorboard=o.tensorboard,
                    progress=meter, stop=stop, init=init, extra=extra,
                )  # fmt: skip
        if interrupted():
            raise KeyboardInterrupt
        started = True
        with display, stop.on_signals():
            result = trainer.run()
            if result.status == "interrupted":
                stop.done()  # a second Ctrl-C during the exit is ignored
    except KeyboardInterrupt:
        _ignore_signals()
        if trainer is not None and not started and o.resume is None and dist.is_main:
            from toygpt_cli.runs.removal import remove_run

            trainer.release()
            remove_run(trainer.run_folder, force=True)  # made a moment ago, by this process
            trainer = None
        if o.resume is None and dist.is_main:
            from toygpt_cli.runs.folder import discard_staging

            discard_staging(where.runs_dir)
        if trainer is None:
            err.print("stopped during start-up; no run was created")
        else:
            err.print("stopped at once; the last checkpoint on disk is intact")
        raise typer.Exit(128 + (stop.second or signal.SIGINT)) from None
    except RuntimeError as exc:  # a collective failed while starting: a process is gone
        if not dist.active or isinstance(exc, ToygptError):
            raise
        from toygpt_cli.train import ProcessLost

        raise ProcessLost(exc) from None
    except BudgetTooSmall as exc:
        if dist.is_main and exc.fresh and trainer.run_folder is not None:
            from toygpt_cli.runs.removal import remove_run

            remove_run(trainer.run_folder)  # made a moment ago, and nothing happened in it
        raise
    finally:
        if trainer is not None:
            trainer.release()
        dist.close()
    if dist.is_main:
        _report(result, o.sample, trainer)


def _layers(preset, config, like, runs_dir) -> list[dict[str, Any]]:
    from toygpt_cli.recipes.presets import load_config_file, preset_options

    layers: list[dict[str, Any]] = []
    if preset is not None:
        layers.append(preset_options(preset))
    if config is not None and like is not None:
        raise UsageError("use --config or --like, not both")
    if config is not None:
        layers.append(load_config_file(Path(config)))
    if like is not None:
        from toygpt_cli.runs.folder import resolve_run

        layers.append(load_config_file(resolve_run(like, runs_dir) / "config.json"))
    return layers


def _say_gpu_note(preset: str | None, device: str, main: bool) -> None:
    from toygpt_cli.recipes.presets import CPU_PRESETS, gpu_note

    if preset in CPU_PRESETS and main:
        from toygpt_cli.device import resolve_device

        note = gpu_note(preset, resolve_device(device).type)
        if note is not None:
            err.print(note, highlight=False)


def _fit_machine(preset, model_cfg, train_cfg, layers, given):
    """A preset sized to the machine, unless what it sizes was chosen (a config file, the
    command line, --no-fit-machine) or it has no budget: the model and training
    configuration it takes, and a record for config.json."""
    from toygpt_cli.recipes.sizing import LADDERS

    chosen = _chosen(preset, layers, given)
    if (preset not in LADDERS or not train_cfg.fit_machine or train_cfg.max_time <= 0
            or chosen.intersection(LADDERS[preset].fields)):  # fmt: skip
        return model_cfg, train_cfg, None
    from toygpt_cli.device import set_threads
    from toygpt_cli.recipes.sizing import fit_to_machine

    set_threads(train_cfg.threads)
    err.print(f"timing --preset {preset} on this machine...", highlight=False)
    model_cfg, sizing = fit_to_machine(preset, model_cfg, train_cfg)
    err.print(sizing.line(train_cfg.max_time, train_cfg.compile), highlight=False)
    return model_cfg, sizing.train, {"fit_machine": sizing.record()}


def _chosen(preset, layers, given) -> set[str]:
    """The options given beyond the preset: in a config file, --like or the command line."""
    return set(given).union(*layers[1 if preset else 0 :])


def _compile_if_it_pays(preset, train_cfg, layers, given):
    """A preset's --compile, dropped under a budget too short to earn the compiling back,
    unless it was chosen (a config file, the command line)."""
    from toygpt_cli.recipes.sizing import compile_pays

    chosen = _chosen(preset, layers, given)
    if train_cfg.compile and "compile" not in chosen and not compile_pays(train_cfg):
        return replace(train_cfg, compile=False)
    return train_cfg


def _init_from(ref: str, which: str, runs_dir: Path, given: dict[str, Any]):
    """The checkpoint `--init-from` names; an architecture option given on the command line
    that differs from the run's is refused."""
    from toygpt_cli.runs.checkpoint import read_checkpoint
    from toygpt_cli.runs.finetune import InitFrom
    from toygpt_cli.runs.folder import open_run

    run = open_run(ref, runs_dir)
    ckpt = read_checkpoint(run.checkpoint_path(which))
    for key, value in given.items():
        if key in ModelConfig.__dataclass_fields__ and getattr(ckpt.model_config, key) != value:
            from toygpt_cli.errors import OptionError

            raise OptionError(
                f"{key} comes from the run --init-from starts from ({run.title}), where it is "
                f"{getattr(ckpt.model_config, key)}; drop {key} {value} or start a new run "
                "without --init-from",
                key,
            )
    return InitFrom(ckpt, run.title)


def _training_only(layer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in layer.items() if k not in ModelConfig.__dataclass_fields__}


def _check_before_launch(layers, given, resume, steps, where) -> None:
    """Every usage error the workers would hit, found once, before anything starts."""
    from toygpt_cli.config import build_configs

    if resume is None:
        build_configs(*layers, given)
        return
    from toygpt_cli.runs.checkpoint import read_checkpoint
    from toygpt_cli.runs.folder import CKPT_LAST, open_run
    from toygpt_cli.runs.resume import plan_resume

    run = open_run(resume, where.runs_dir)
    ckpt = read_checkpoint(run.file(CKPT_LAST), resume=True)
    status = run.raw_status().get("status")
    plan_resume(ckpt.model_config, ckpt.train_config(), ckpt.state, status, given, steps, run.name)


def _recorded(ref: str, runs_dir: Path) -> dict[str, Any]:
    """What a run to resume recorded of how it trained: its processes, batch and device
    (each where config.json holds it); nothing for a run that cannot be read, whose
    resume then says what is wrong with it."""
    from toygpt_cli.runs.folder import open_run

    try:
        config = open_run(ref, runs_dir).config()
    except ToygptError:
        return {}
    train, resolved = config.get("train") or {}, config.get("resolved") or {}
    found = {"processes": resolved.get("world_size"), "batch_size": train.get("batch_size"),
             "device": train.get("device")}  # fmt: skip
    kinds = {"processes": int, "batch_size": int, "device": str}
    return {k: v for k, v in found.items() if isinstance(v, kinds[k]) and not isinstance(v, bool)}


def _processes_to_resume(
    recorded: dict[str, Any], asked: int | None, given: dict, device: str
) -> int:
    """A resumed run continues with as many processes as it last trained with (each keeps
    its batch, so the run keeps its effective batch) unless --nproc says otherwise; a
    different count is said, with the effective batch it gives."""
    trained = max(1, recorded.get("processes", 1))
    batch = recorded.get("batch_size")
    if asked is None:
        if trained > 1:
            keep = f" (an effective batch of {trained * batch})" if batch else ""
            one = f", and --batch-size {trained * batch} to keep it in one" if batch else ""
            why = f"the run trained with {trained} processes{keep}"
            _check_nproc(trained, device, f"{why}; to continue it in fewer, give --nproc{one}")
        return trained
    if asked != trained:
        was = f" (an effective batch of {trained * batch})" if batch else ""
        size = given.get("batch_size", batch)
        now = f" (an effective batch of {asked * size})" if size else ""
        err.print(
            f"note: the run trained with {trained} process{'es' if trained > 1 else ''}{was}; "
            f"it continues with {asked}{now}",
            highlight=False,
        )
    return asked


def _check_nproc(nproc: int, device: str = "auto", remedy: str | None = None) -> None:
    """One process per GPU on a GPU (rank r takes cuda:r), or per CPU core on the CPU."""
    import torch

    from toygpt_cli.device import usable_cpus

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_gpus = device.startswith("cuda") or (device == "auto" and gpus > 0)
    have = gpus if on_gpus else usable_cpus()
    if nproc > have:
        what = f"{gpus} GPUs" if on_gpus else f"{have} CPUs"
        if remedy:
            raise UsageError(f"this machine has {what}: {remedy}")
        raise UsageError(f"--nproc {nproc} is more processes than this machine's {what}")


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
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _report(result, sample: bool, trainer) -> None:
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
            f"no steps were taken: run {run.title} is at step {result.step}, which its plan "
            "does not go past; resume it with --steps N"
        )
    last = result.last_eval or {}
    # rounded as the eval records are, so that "best" and "val" of one eval read the same
    best = round(result.best_val, 5) if result.best_val is not None else float("nan")
    err.print(
        f"done: step {result.step}, train loss {last.get('train_loss', float('nan')):.4f}, "
        f"val loss {last.get('val_loss', float('nan')):.4f} (best {best:.4f})\n"
        f"run folder: {run.path}",
        highlight=False,
    )
    if sample:
        from toygpt_cli.sample import sample_text

        with trainer.averaged():  # the weights the run reported and saved
            text = sample_text(
                trainer.model, trainer.corpus.tokenizer, max_new_tokens=500, dtype=trainer.dtype
            )[0]
        out.print(text, markup=False, highlight=False)


def _dataset_for_ranks(data_dir: Path, dist) -> Path:
    """Tiny Shakespeare in the data folder; under torchrun one process per node fetches it
    while the others wait, and a failure ends every rank with one line (from rank 0)."""
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
