"""Starting and resuming a training run in its folder.

    trainer = start_training(ModelConfig(), TrainConfig(iters=500), "data/tinyshakespeare.txt")
    result = trainer.run()          # events go to `callback`; the CLI draws them

`start_training` checks everything first, then builds the run in a hidden staging folder
and renames it into place only once it holds its configuration and a first checkpoint, so
a run that is visible can always be resumed. `resume_training` reads the run's checkpoint,
lets `plan_resume` decide what this session does, and puts the trainer back exactly where
the checkpoint left it. Both hand the trainer its collaborators: the run recorder (the
files), the checkpoint writer, the run's lock and the stop switch.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from toygpt_cli import __version__
from toygpt_cli.config import ModelConfig, TrainConfig, to_dict
from toygpt_cli.corpus import load_corpus
from toygpt_cli.corpus.cache import text_facts
from toygpt_cli.data import Corpus
from toygpt_cli.device import resolve_device, set_threads
from toygpt_cli.errors import OptionError, ToygptError
from toygpt_cli.events import Callback
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.runs.checkpoint import DamagedCheckpoint, read_checkpoint
from toygpt_cli.runs.finetune import InitFrom
from toygpt_cli.runs.folder import (
    CKPT_LAST,
    CONFIG,
    METRICS,
    SAMPLES,
    STATUS,
    Run,
    make_staging,
    publish,
    utc_now,
)
from toygpt_cli.runs.recorder import RunRecorder
from toygpt_cli.runs.resume import plan_resume
from toygpt_cli.runs.tensorboard import TensorBoardLogger, require_tensorboard
from toygpt_cli.stopping import StopSwitch, signals_held
from toygpt_cli.storage.files import truncate_jsonl, write_atomic
from toygpt_cli.train import Trainer


def start_training(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: Path,
    runs_dir: Path | None = Path("runs"),
    *,
    callback: Callback | None = None,
    command: list[str] | None = None,
    dist: Distributed | None = None,
    label: str | None = None,
    tensorboard: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    stop: StopSwitch | None = None,
    init: InitFrom | None = None,
    extra: dict[str, Any] | None = None,
) -> Trainer:
    """Check everything, then create the run folder and a Trainer ready to `run()`.

    `progress(phase, done, total)` hears about the first encoding of a large corpus.
    Nothing is written before the inputs are known to be good. `runs_dir=None` trains
    without a run folder (nothing on disk), e.g. in a notebook or a benchmark. `init`
    starts from another run's weights (its architecture replaces `model_cfg`'s); `extra`
    is recorded in config.json (a sweep's trial, say).
    """
    train_cfg.validate()
    if tensorboard:
        require_tensorboard()
    dist = dist or Distributed.single()
    device = dist.device or resolve_device(train_cfg.device)
    set_threads(train_cfg.threads)
    tokenizer, added = None, ""
    if init is not None:
        tokenizer, added = init.vocabulary(text_facts(Path(data), progress).vocab)
        model_cfg = init.model_config(tokenizer.vocab_size)
    model_cfg.validate()
    corpus = _load_corpus(Path(data), model_cfg, train_cfg.val_fraction, tokenizer, progress)
    model_cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    check_memory(model_cfg, train_cfg, device, dist)
    if runs_dir is None:
        trainer = Trainer(model_cfg, train_cfg, corpus, dist=dist, listeners=[callback], stop=stop)
        if init is not None:
            trainer.model.load_state_dict(init.weights(model_cfg.vocab_size, train_cfg.seed))
        return trainer
    run = Run(Path(runs_dir))  # its path is set below, on every rank
    lock, staging, trainer = None, None, None
    try:  # from the staging folder's first moment: a failure or Ctrl-C leaves nothing
        if dist.is_main:
            staging = make_staging(Path(runs_dir))
            run.path = staging
            lock = run.lock()
        trainer = _trainer(run, model_cfg, train_cfg, corpus, dist, callback, stop, lock,
                           tensorboard)  # fmt: skip
        if init is not None:  # every rank: the same weights
            trainer.model.load_state_dict(init.weights(model_cfg.vocab_size, train_cfg.seed))
        if dist.is_main:
            config = run_config(run, model_cfg, train_cfg, corpus, trainer, command, label)
            if init is not None:
                config["init_from"] = init.record(added)
            run.write_config({**config, **(extra or {}), "tensorboard": tensorboard})
            run.mark_running(0, train_cfg.iters)
        trainer.save_checkpoint()  # from the first moment a visible run can be resumed
        if dist.is_main:
            with signals_held():  # renamed and known by its new name as one step
                run.path = publish(staging, Path(runs_dir))
        run.path = dist.broadcast_path(run.path if dist.is_main else None)
    except BaseException:
        if trainer is not None:
            trainer.release()  # its process-group wrapper too, before the group is left
        if dist.is_main and staging is not None:
            if lock is not None:
                lock.release()
            shutil.rmtree(run.path, ignore_errors=True)  # the staging folder or the new run
        raise
    return trainer


def _raw(path: Path) -> bytes | None:
    """A small file's bytes as they are (None when it is missing)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def resume_training(
    run: Run,
    steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    callback: Callback | None = None,
    command: list[str] | None = None,
    dist: Distributed | None = None,
    data: Path | None = None,
    tensorboard: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    stop: StopSwitch | None = None,
) -> Trainer:
    """Continue `run` from its last checkpoint, as `plan_resume` decides."""
    dist = dist or Distributed.single()
    if tensorboard:
        require_tensorboard()
    lock = run.lock() if dist.is_main else None
    # The recorded status, the same on every rank (status() says "running" to a process
    # that sees the lock held, which under --nproc is every rank but 0).
    status = run.raw_status().get("status")
    ckpt_path = run.file(CKPT_LAST)
    if not ckpt_path.exists():
        kept = " (it kept only best.pt: --keep best)" if run.file("best.pt").exists() else ""
        raise ToygptError(f"run {run.title} has no checkpoint to resume from{kept}")
    ckpt = read_checkpoint(ckpt_path, resume=True)
    plan = plan_resume(
        ckpt.model_config, ckpt.train_config(), ckpt.state, status, overrides or {}, steps,
        run.name,
    )  # fmt: skip
    train_cfg = plan.train
    config = run.config()
    recorded = config.get("data", {})
    data_path = Path(data or recorded.get("path") or "")
    set_threads(train_cfg.threads)
    corpus = _load_corpus(
        data_path, ckpt.model_config, train_cfg.val_fraction, ckpt.tokenizer, progress
    )
    if recorded.get("sha256") and corpus.sha256 != recorded["sha256"]:
        raise ToygptError(
            f"{data_path} has changed since {run.title} was trained on it (sha256 "
            f"{corpus.sha256[:12]}..., the run recorded {recorded['sha256'][:12]}...); "
            "resume on the original text, or start a new run"
        )
    check_memory(ckpt.model_config, train_cfg, dist.device or resolve_device(train_cfg.device),
                 dist)  # fmt: skip
    last_eval_step = ckpt.state.get("last_eval_step", -1)
    last = [r for r in run.metrics() if r.get("step", 0) <= last_eval_step]
    trainer = _trainer(
        run, ckpt.model_config, train_cfg, corpus, dist, callback, stop, lock,
        tensorboard or bool(config.get("tensorboard")), last[-1] if last else None,
    )  # fmt: skip
    try:
        trainer.load_state_dict(
            {**ckpt.data, "state": {**ckpt.state, "budget_start": plan.budget_start}}
        )
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        trainer.release()
        raise DamagedCheckpoint(f"{ckpt_path} does not fit its own run: {exc}") from None
    if dist.is_main:
        run.remove_stale_temp_files()
        # Evals newer than the checkpoint's (a kill between an eval and its checkpoint)
        # are redone by this session; drop them so nothing appears twice.
        for name in (METRICS, SAMPLES):
            truncate_jsonl(run.file(name), lambda r: r.get("step", 0) <= last_eval_step)
        record = ckpt.state.get("last_record")  # killed between its checkpoint and metrics?
        if isinstance(record, dict) and not any(r["step"] == last_eval_step for r in last):
            run.append_metric(record)
        before = {name: _raw(run.file(name)) for name in (CONFIG, STATUS)}

        def put_back() -> None:  # a --max-time too small refuses the session: no trace
            for name, data in before.items():
                if data is None:
                    run.file(name).unlink(missing_ok=True)
                else:
                    write_atomic(run.file(name), lambda f, data=data: f.write(data))

        trainer.on_refused = put_back
        config["train"] = to_dict(train_cfg)
        config["tensorboard"] = bool(config.get("tensorboard") or tensorboard)
        config["resolved"] = _resolved(trainer, train_cfg)
        config.setdefault("resumes", []).append(
            {
                "at_step": ckpt.step,
                "steps": train_cfg.iters - ckpt.step if train_cfg.iters else None,
                "changed": plan.changed,
                "time": utc_now(),
                "command": shlex.join(command or sys.argv),
                "device": str(trainer.device),
                "world_size": dist.world_size,
            }
        )
        run.write_config(config)
    return trainer


def _trainer(run, model_cfg, train_cfg, corpus, dist, callback, stop, lock, tensorboard,
             last_eval=None) -> Trainer:  # fmt: skip
    """A trainer whose collaborators are the run's: its recorder (rank 0 only), lock and
    TensorBoard logger."""
    recorder = RunRecorder(run, train_cfg.keep) if dist.is_main else None
    tb = TensorBoardLogger(run) if dist.is_main and tensorboard else None
    return Trainer(
        model_cfg, train_cfg, corpus, dist=dist, listeners=[callback, recorder, tb],
        checkpoints=recorder.save_checkpoint if recorder else None, stop=stop, run=run,
        lock=lock, last_eval=last_eval,
    )  # fmt: skip


def _load_corpus(data: Path, model_cfg: ModelConfig, val_fraction: float, tokenizer=None,
                 progress=None) -> Corpus:  # fmt: skip
    corpus = load_corpus(data, val_fraction, tokenizer, progress=progress)
    n_val, n_train = corpus.n_chars - corpus.n_train, corpus.n_train
    for split, n in (("val", n_val), ("train", n_train)):
        if model_cfg.block_size >= n:
            raise OptionError(
                f"block_size ({model_cfg.block_size}) must be shorter than the {split} split "
                f"({n} characters of {data}); use a smaller block_size or more text",
                "block_size",
            )
    return corpus


def _parameters(model_cfg: ModelConfig) -> int:
    """About how many weights the model has (the block matrices, embeddings and head)."""
    C, L = model_cfg.n_embd, model_cfg.n_layer
    return 12 * L * C * C + (2 * model_cfg.vocab_size + model_cfg.block_size) * C


def memory_needed(model_cfg: ModelConfig, train_cfg: TrainConfig, world_size: int = 1) -> int:
    """About how many bytes one training process of this configuration takes."""
    C, L, T, B = model_cfg.n_embd, model_cfg.n_layer, model_cfg.block_size, train_cfg.batch_size
    H, V = model_cfg.n_head, model_cfg.vocab_size
    params = _parameters(model_cfg)
    # float32 weights, gradients and AdamW's two moments, and a serialised checkpoint;
    # --ema: the average, a copy of the weights while an eval runs, one more in the checkpoint
    weights = 16 * params + 8 * params + (12 * params if train_cfg.ema else 0)
    # Activations kept for the backward pass (Korthikanti et al.'s per-layer estimate,
    # float32), plus the logits; the eval windows are int64 offsets, every process's.
    activations = 8 * T * B * C * (34 + 5 * H * T / C) * L + 12 * B * T * V
    windows = 2 * 8 * train_cfg.eval_iters * B * world_size
    return int(weights + activations + windows)


def check_memory(
    model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device,
    dist: Distributed | None = None,
) -> None:  # fmt: skip
    """Refuse, before allocating anything, a configuration that cannot fit in memory: on a
    CPU, for every process on this machine together (they share its memory); on a GPU,
    for this process's own."""
    dist = dist or Distributed.single()
    need = memory_needed(model_cfg, train_cfg, dist.world_size)
    processes = 1
    if device.type == "cuda":
        have = torch.cuda.mem_get_info(device)[0]
    else:
        have = available_memory()  # this process's share: the machine's, or its own limit
        if dist.active:  # the others are starting too: what the machine has is for all
            processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
            if processes * need <= 0.9 * system_memory():
                processes = 1  # they fit together: each is held to its own limit alone
    if processes * need > 0.9 * have:
        each = f" in each of {processes} processes" if processes > 1 else ""
        raise ToygptError(
            f"this configuration needs about {need / 2**30:,.1f} GiB of memory{each} "
            f"({_parameters(model_cfg) / 1e6:,.1f}M parameters, batch {train_cfg.batch_size} "
            f"x block {model_cfg.block_size}); this {device.type} has "
            f"{have / 2**30:,.1f} GiB available. Use a smaller model, batch or eval_iters"
            + (", or fewer processes" if processes > 1 else "")
        )


def system_memory() -> int:
    """Bytes the machine has available (MemAvailable), or its physical memory."""
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    have = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return have


def available_memory() -> int:
    """Bytes this process can still allocate: the system's available memory, capped by
    its address-space limit (`ulimit -v`) less what the process already maps."""
    have = system_memory()
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            have = min(have, soft - mapped)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return max(have, 0)


def run_config(run: Run, model_cfg, train_cfg, corpus: Corpus, trainer: Trainer, command, label):
    return {
        "name": run.name,
        "label": label,
        "created": utc_now(),
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "resolved": _resolved(trainer, train_cfg),
        "data": {
            "path": str(Path(corpus.path).resolve()),
            "sha256": corpus.sha256,
            "chars": corpus.n_chars,
            "train_chars": corpus.n_train,
            "val_chars": corpus.n_chars - corpus.n_train,
        },
        "vocab": corpus.tokenizer.chars,
        "n_params": trainer.model.num_params(),
        "versions": {
            "toygpt": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": shlex.join(command or sys.argv),
        "resumes": [],
    }


def _resolved(trainer: Trainer, train_cfg: TrainConfig) -> dict[str, Any]:
    return {
        "device": str(trainer.device),
        "dtype": trainer.dtype,
        "threads": torch.get_num_threads(),
        "world_size": trainer.dist.world_size,
        "effective_batch_size": train_cfg.batch_size * trainer.dist.world_size,
    }


__all__ = ["resume_training", "start_training"]
