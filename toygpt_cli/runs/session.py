"""Starting, resuming and stopping a training run.

    trainer = start_training(ModelConfig(), TrainConfig(iters=500), "data/tinyshakespeare.txt")
    result = trainer.run()          # events go to `callback`; the CLI draws them

`start_training` checks everything first, then builds the run in a hidden staging folder
and renames it into place only once it holds its configuration and a first checkpoint, so
a run that is visible can always be resumed. `resume_training` applies each option's
resume policy (toygpt_cli/config.py). `stop_on_signals` turns SIGINT/SIGTERM into a
checkpoint and a clean stop. The loop itself is in trainer.py; the run files in recorder.py.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from toygpt_cli import __version__
from toygpt_cli.runs.checkpoint import damage, load_checkpoint, save_checkpoint
from toygpt_cli.config import ModelConfig, TrainConfig, from_dict, resume_configs, to_dict
from toygpt_cli.data import CharTokenizer, Corpus
from toygpt_cli.device import resolve_device, set_threads
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.errors import OptionError, ToygptError, UsageError
from toygpt_cli.events import (  # noqa: F401  (re-exported: the library's public events)
    Callback,
    CheckpointSaved,
    EvalDone,
    SampleWritten,
    StepDone,
    TrainEnded,
    TrainResult,
    TrainStarted,
)
from toygpt_cli.storage.files import truncate_jsonl
from toygpt_cli.storage.locks import is_locked
from toygpt_cli.runs.recorder import RunRecorder
from toygpt_cli.runs.folder import CKPT_LAST, LOCK, METRICS, SAMPLES, TENSORBOARD, Run, pid_alive, utc_now
from toygpt_cli.runs.tensorboard import TensorBoardLogger, require_tensorboard
from toygpt_cli.train import Trainer

DEFAULT_RESUME_STEPS = 5000
STAGING_PREFIX = ".staging-"


def _load_corpus(
    data: Path, model_cfg: ModelConfig, val_fraction: float, tokenizer=None, progress=None
):
    corpus = Corpus.load(data, val_fraction, tokenizer, progress=progress)
    n_val, n_train = corpus.n_chars - corpus.n_train, corpus.n_train
    for split, n in (("val", n_val), ("train", n_train)):
        if model_cfg.block_size >= n:
            raise OptionError(
                f"block_size ({model_cfg.block_size}) must be shorter than the {split} split "
                f"({n} characters of {data}); use a smaller block_size or more text",
                "block_size",
            )
    return corpus


def check_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device) -> None:
    """Refuse, before allocating anything, a configuration that cannot fit in memory."""
    C, L, T, B = model_cfg.n_embd, model_cfg.n_layer, model_cfg.block_size, train_cfg.batch_size
    H, V = model_cfg.n_head, model_cfg.vocab_size
    params = 12 * L * C * C + (2 * V + T) * C
    weights = 16 * params  # float32 weights, gradients and AdamW's two moments
    # Activations kept for the backward pass (Korthikanti et al.'s per-layer estimate,
    # float32), plus the logits; the eval windows are int64 offsets.
    activations = 8 * T * B * C * (34 + 5 * H * T / C) * L + 12 * B * T * V
    windows = 2 * 8 * train_cfg.eval_iters * B
    need = weights + activations + windows
    if device.type == "cuda":
        have = torch.cuda.mem_get_info(device)[1]
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > 0.9 * have:
        raise ToygptError(
            f"this configuration needs about {need / 2**30:,.1f} GiB of memory "
            f"({params / 1e6:,.1f}M parameters, batch {B} x block {T}); this {device.type} has "
            f"{have / 2**30:,.1f} GiB. Use a smaller model, batch or eval_iters"
        )


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
) -> Trainer:
    """Check everything, then create the run folder and a Trainer ready to `run()`.

    `progress(phase, done, total)` hears about the first encoding of a large corpus.
    Nothing is written before the inputs are known to be good. `runs_dir=None` trains
    without a run folder (nothing on disk), e.g. in a notebook or a benchmark.
    """
    model_cfg.validate()
    train_cfg.validate()
    if tensorboard:
        require_tensorboard()
    dist = dist or Distributed.single()
    device = dist.device or resolve_device(train_cfg.device)
    set_threads(train_cfg.threads)
    corpus = _load_corpus(Path(data), model_cfg, train_cfg.val_fraction, progress=progress)
    model_cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    check_memory(model_cfg, train_cfg, device)
    trainer = Trainer(None, model_cfg, train_cfg, corpus, listeners=[callback], dist=dist)
    state = trainer.checkpoint_state()  # collective: every rank takes part
    if runs_dir is None:
        return trainer
    path = None
    if dist.is_main:
        staging = _make_staging(Path(runs_dir))
        try:
            run = Run(staging)
            lock = run.lock()
            config = run_config(run, model_cfg, train_cfg, corpus, trainer, command, label)
            run.write_config({**config, "tensorboard": tensorboard})
            run.mark_running(0, train_cfg.iters)
            # A checkpoint from the first moment: a visible run can always be resumed.
            save_checkpoint(run.file(CKPT_LAST), state)
            path = _publish(staging, Path(runs_dir))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        trainer.run_lock = lock
    path = dist.broadcast_path(path)
    _attach_run(trainer, Run(path), callback)
    return trainer


def _attach_run(trainer: Trainer, run: Run, callback) -> None:
    """The listeners of a run with a folder: the display, the recorder, TensorBoard."""
    trainer.run_dir = run
    if trainer.dist.is_main:
        recorder = RunRecorder(run, notify=callback)
        tb = TensorBoardLogger(run.file(TENSORBOARD)) if run.config().get("tensorboard") else None
        trainer.listeners = [x for x in (callback, recorder, tb) if x is not None]


def _make_staging(runs_dir: Path) -> Path:
    """A hidden folder in runs_dir to build a run in; stale ones of dead processes go."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for old in runs_dir.glob(STAGING_PREFIX + "*"):
            # Stale when its builder's lock is free and its pid (in the name) is gone: the lock
            # file exists a moment before it is locked, so the lock alone could be wrong.
            locked = is_locked(old / LOCK)
            pid = old.name[len(STAGING_PREFIX) :].split("-")[0]
            if locked is not True and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        staging = runs_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise ToygptError(f"cannot create a run in {runs_dir}: {exc.strerror or exc}") from None
    return staging


def _publish(staging: Path, runs_dir: Path) -> Path:
    """Rename the staging folder to the run's name: its UTC start time, unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for n in range(1, 10_000):
        target = runs_dir / (stamp if n == 1 else f"{stamp}-{n}")
        if target.exists():
            continue
        try:
            os.rename(staging, target)  # atomic; fails if another run took the name
        except OSError:
            if target.exists():
                continue
            raise
        if target.name != staging.name:
            run = Run(target)
            config = run.config()
            config["name"] = target.name
            run.write_config(config)
        return target
    raise ToygptError(f"too many runs started at {stamp} in {runs_dir}")


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
) -> Trainer:
    """Continue `run` from its last checkpoint.

    `steps` more steps, or (None) the rest of an unfinished run's plan, or
    DEFAULT_RESUME_STEPS more for a completed one. A max_time in `overrides` is a new budget
    for this session; without one, an interrupted run keeps what was left of its budget and
    a completed run has none. Each override follows its field's resume policy.
    """
    dist = dist or Distributed.single()
    if steps is not None and steps <= 0:
        raise UsageError(f"--steps must be greater than 0, got {steps}")
    if tensorboard:
        require_tensorboard()
    lock = run.lock() if dist.is_main else None
    # The recorded status, the same on every rank (status() says "running" to a process
    # that sees the lock held, which under --nproc is every rank but 0).
    status = run.raw_status().get("status")
    ckpt_path = run.file(CKPT_LAST)
    if not ckpt_path.exists():
        raise ToygptError(f"run {run.name} has no checkpoint to resume from ({ckpt_path})")
    ckpt = load_checkpoint(ckpt_path)
    try:
        model_cfg = from_dict(ModelConfig, ckpt["model_config"])
        old_train = from_dict(TrainConfig, ckpt["train_config"])
        st = ckpt["state"]
        step, last_eval_step = int(st["step"]), int(st["last_eval_step"])
        vocab = ckpt["vocab"]
        ckpt["model"], ckpt["optimizer"], ckpt["rng"]  # noqa: B018  (present?)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToygptError(f"{ckpt_path} is damaged or made by hand: {damage(exc)}") from None
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    new_budget = "max_time" in overrides
    train_cfg, changed = resume_configs(model_cfg, old_train, overrides, run.name)
    config = run.config()
    recorded = config.get("data", {}) if isinstance(config, dict) else {}
    data_path = Path(data or recorded.get("path") or "")
    set_threads(train_cfg.threads)
    vocab_tok = CharTokenizer(vocab)
    corpus = _load_corpus(data_path, model_cfg, train_cfg.val_fraction, vocab_tok, progress)
    if recorded.get("sha256") and corpus.sha256 != recorded["sha256"]:
        raise ToygptError(
            f"{data_path} has changed since {run.name} was trained on it (sha256 "
            f"{corpus.sha256[:12]}..., the run recorded {recorded['sha256'][:12]}...); "
            "resume on the original text, or start a new run"
        )
    finished = status == "completed" or bool(old_train.iters and step >= old_train.iters)
    budget_start = st.get("budget_start", 0.0)
    spent = st.get("wall_seconds", 0.0) - budget_start >= train_cfg.max_time
    if new_budget:  # a budget of this session's own: the schedule fits it, no step limit
        budget_start = st.get("wall_seconds", 0.0)
    elif finished or (steps is not None and spent):
        train_cfg = replace(train_cfg, max_time=0.0)
    elif train_cfg.max_time and spent:
        raise ToygptError(
            f"run {run.name} has used up its {train_cfg.max_time:g} s budget; give "
            "--max-time for a new one, or --steps N"
        )
    if steps is not None:
        iters = step + steps
    elif new_budget and train_cfg.max_time:
        iters = 0
    elif finished or not (old_train.iters or train_cfg.max_time):
        iters = step + DEFAULT_RESUME_STEPS
    else:
        iters = old_train.iters
    train_cfg = replace(train_cfg, iters=iters)
    if not train_cfg.max_time and not iters:
        train_cfg = replace(train_cfg, iters=step + DEFAULT_RESUME_STEPS)
    ckpt["state"] = {**st, "budget_start": budget_start}
    check_memory(model_cfg, train_cfg, dist.device or resolve_device(train_cfg.device))
    last = [r for r in run.metrics() if r.get("step", 0) <= last_eval_step]
    trainer = Trainer(
        run, model_cfg, train_cfg, corpus, checkpoint=ckpt, dist=dist,
        last_eval=last[-1] if last else None,
    )  # fmt: skip
    trainer.run_lock = lock
    if dist.is_main and tensorboard and not config.get("tensorboard"):
        config["tensorboard"] = True
        run.write_config(config)
    _attach_run(trainer, run, callback)
    if dist.is_main:
        run.remove_stale_temp_files()
        # Evals newer than the checkpoint's (a kill between an eval and its checkpoint)
        # are redone by this session; drop them so nothing appears twice.
        for name in (METRICS, SAMPLES):
            truncate_jsonl(run.file(name), lambda r: r.get("step", 0) <= last_eval_step)
        config["train"] = to_dict(train_cfg)
        config["resolved"] = _resolved(trainer, train_cfg)
        config.setdefault("resumes", []).append(
            {
                "at_step": step,
                "steps": iters - step if iters else None,
                "changed": changed,
                "time": utc_now(),
                "command": shlex.join(command or sys.argv),
                "device": str(trainer.device),
                "world_size": dist.world_size,
            }
        )
        run.write_config(config)
    return trainer


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks the trainer to checkpoint and stop after the current
    step; a second one stops at once, except while a checkpoint is being written, which
    finishes first (the previous checkpoint stays intact either way)."""
    pending = []

    def handler(signum, frame):
        if trainer._stop_signal is None:
            trainer.request_stop(signum)
        elif trainer.critical:
            pending.append(signum)
        else:
            raise KeyboardInterrupt

    def after_critical():
        if pending:
            pending.clear()
            raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    trainer.after_critical = after_critical
    try:
        yield
    finally:
        trainer.after_critical = None
        for s, h in old.items():
            signal.signal(s, h)


__all__ = [
    "CheckpointSaved",
    "EvalDone",
    "SampleWritten",
    "StepDone",
    "TrainResult",
    "TrainStarted",
    "Trainer",
    "resume_training",
    "start_training",
    "stop_on_signals",
]
