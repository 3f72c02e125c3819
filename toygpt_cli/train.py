"""The training loop: a plain class that reports what happens to a callback.

    trainer = start_training(ModelConfig(), TrainConfig(iters=500), "data/tinyshakespeare.txt")
    result = trainer.run()          # events go to `callback`; the CLI draws them

Resuming is exact: the checkpoint carries the model, optimizer, step, best val loss, the
batch-sampling generator and the dropout RNG, so N steps + resume M steps gives the same
weights as N + M steps in one go (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import math
import platform
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from toygpt_cli import __version__
from toygpt_cli.checkpoint import load_checkpoint, save_checkpoint
from toygpt_cli.config import (
    ARCHITECTURE_FIELDS,
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from toygpt_cli.data import CharTokenizer, Corpus, sample_batch
from toygpt_cli.device import autocast, resolve_device, resolve_dtype, set_threads
from toygpt_cli.distributed import Distributed
from toygpt_cli.errors import ToygptError, UsageError
from toygpt_cli.evaluate import estimate_loss, fixed_windows
from toygpt_cli.fileio import truncate_jsonl
from toygpt_cli.model import GPT
from toygpt_cli.plot import write_loss_png
from toygpt_cli.runs import (
    CKPT_BEST,
    CKPT_LAST,
    LOSS_PNG,
    METRICS,
    SAMPLES,
    Run,
    create_run_dir,
    utc_now,
)
from toygpt_cli.sample import sample_text

# ------------------------------------------------------------------------------ events


@dataclass
class TrainStarted:
    run: Run | None
    step: int
    iters: int
    n_params: int
    device: str
    dtype: str
    resumed: bool
    max_time: float = 0.0  # wall-clock budget in seconds (0: none)


@dataclass
class StepDone:
    step: int
    iters: int
    loss: torch.Tensor  # still on the device: call .item() only when you display it
    lr: float
    elapsed: float  # wall seconds of the whole run so far
    steps_per_sec: float  # over the training steps since the last eval
    tokens_per_sec: float


@dataclass
class EvalDone:
    record: dict[str, Any]  # the metrics.jsonl record


@dataclass
class CheckpointSaved:
    path: Path
    step: int


@dataclass
class SampleWritten:
    step: int
    text: str


@dataclass
class TrainResult:
    status: str  # completed | interrupted
    step: int
    iters: int
    last_eval: dict[str, Any] | None
    best_val: float | None
    run: Run | None
    signal: int | None = None

    @property
    def resume_command(self) -> str | None:
        if self.status != "interrupted" or self.run is None:
            return None
        return f"toygpt train --resume {self.run.path} --steps {self.iters - self.step}"


Event = TrainStarted | StepDone | EvalDone | CheckpointSaved | SampleWritten
Callback = Callable[[Event], None]


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_iters, then constant or cosine decay to min_lr.

    `progress` in [0, 1] is how far through the post-warmup part the run is: by steps, or
    by wall time under --max-time, so the decay fits whichever budget ends first.
    """
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def param_groups(model: GPT, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on all parameters (the seed's AdamW), or on matrices only (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not cfg.decay_matrices_only:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # The fused kernel does the whole update in one pass (measured 9.5 -> 3.4 ms per step on
    # CPU at the defaults); it exists for CPU and CUDA in torch >= 2.4.
    fused = device.type in ("cpu", "cuda") and _supports_fused()
    return torch.optim.AdamW(
        param_groups(model, cfg),
        lr=cfg.learning_rate,
        betas=(0.9, cfg.beta2),
        fused=fused or None,
    )


def _supports_fused() -> bool:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)


# ------------------------------------------------------------------------------ trainer


@dataclass
class _State:
    """What decides the future of a run, beyond the model and optimizer."""

    step: int = 0
    best_val: float | None = None
    last_eval_step: int = -1
    wall_seconds: float = 0.0  # whole-run wall time, carried across resumes


class Trainer:
    def __init__(
        self,
        run: Run | None,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        corpus: Corpus,
        *,
        checkpoint: dict[str, Any] | None = None,
        callback: Callback | None = None,
        dist: Distributed | None = None,
    ):
        self.run_dir = run
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.corpus = corpus
        self.callback = callback or (lambda event: None)
        self.dist = dist or Distributed.single()
        self.device = self.dist.device or resolve_device(train_cfg.device)
        self.dtype = resolve_dtype(train_cfg.dtype, self.device)
        set_threads(train_cfg.threads)
        self._stop_signal: int | None = None

        train, val = corpus.splits()
        self.train_data = train.to(self.device)
        self.val_data = val.to(self.device)
        # Fixed eval windows, drawn from their own generator so evals never disturb the
        # training RNG streams (that is what makes resume exact).
        n_windows = train_cfg.eval_iters * train_cfg.batch_size
        self.eval_windows = {
            "train": fixed_windows(len(train), n_windows, model_cfg.block_size, train_cfg.seed + 1),
            "val": fixed_windows(len(val), n_windows, model_cfg.block_size, train_cfg.seed + 2),
        }

        torch.manual_seed(train_cfg.seed)  # model init and dropout draw from the global RNG
        self.model = GPT(model_cfg).to(self.device)
        self.optimizer = make_optimizer(self.model, train_cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "float16")
        # Each rank draws its own batches; rank 0 keeps the plain seed, so one process
        # samples exactly what a non-distributed run does.
        self.batch_gen = torch.Generator().manual_seed(train_cfg.seed + 1000 * self.dist.rank)
        self.state = _State()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.step_model = self.dist.wrap(self.model)
        if train_cfg.compile:
            self.step_model = torch.compile(self.step_model)

    # -- state ------------------------------------------------------------------------
    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        # AdamW restores group hyper-parameters from the checkpoint; options changed on
        # resume must win.
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.learning_rate
            group["betas"] = (group["betas"][0], self.cfg.beta2)
            if group["weight_decay"]:
                group["weight_decay"] = self.cfg.weight_decay
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        s = ckpt["state"]
        self.state = _State(s["step"], s["best_val"], s["last_eval_step"], s["wall_seconds"])
        rng = ckpt["rng"]
        ranks = rng["batches"]
        if self.dist.rank < len(ranks):
            self.batch_gen.set_state(ranks[self.dist.rank])
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def checkpoint_state(self) -> dict[str, Any]:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "model_config": to_dict(self.model_cfg),
            "train_config": to_dict(self.cfg),
            "vocab": self.corpus.tokenizer.chars,
            "state": {
                "step": s.step,
                "best_val": s.best_val,
                "last_eval_step": s.last_eval_step,
                "wall_seconds": s.wall_seconds,
            },
            "dtype": self.dtype,
            "torch_version": str(torch.__version__),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {
                "batches": self.dist.gather_generator_states(self.batch_gen),
                "cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device)
                if self.device.type == "cuda"
                else None,
            },
        }

    def save(self, best: bool = False) -> None:
        """Write the last checkpoint (and best.pt when the val loss improved). Rank 0 only;
        every rank must call it because the batch generators are gathered from all."""
        state = self.checkpoint_state()
        if self.run_dir is None or not self.dist.is_main:
            return
        path = self.run_dir.file(CKPT_LAST)
        save_checkpoint(path, state)
        self.callback(CheckpointSaved(path, self.state.step))
        if best:
            state = {k: v for k, v in state.items() if k not in ("optimizer", "scaler", "rng")}
            save_checkpoint(self.run_dir.file(CKPT_BEST), state)

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop after the current step, saving a checkpoint (safe from a signal handler)."""
        self._stop_signal = signum

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        resumed = st.step > 0
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.mark_running(st.step, cfg.iters)
        self.callback(
            TrainStarted(
                self.run_dir,
                st.step,
                cfg.iters,
                self.model.num_params(),
                str(self.device),
                self.dtype,
                resumed,
                cfg.max_time,
            )
        )
        session_start = time.perf_counter()
        wall_at_start = st.wall_seconds
        tokens_per_step = cfg.batch_size * self.model_cfg.block_size * self.dist.world_size
        window_steps, window_time = 0, 0.0
        last_eval: dict[str, Any] | None = None
        eval_cost = 0.0
        self.model.train()
        try:
            while True:
                st.wall_seconds = wall_at_start + time.perf_counter() - session_start
                at_end = st.step >= cfg.iters or self._out_of_time(eval_cost)
                if (st.step % cfg.eval_interval == 0 or at_end) and st.last_eval_step != st.step:
                    t0 = time.perf_counter()
                    tps = tokens_per_step * window_steps / window_time if window_time else None
                    last_eval = self._evaluate(tps)
                    window_steps, window_time = 0, 0.0
                    eval_cost = time.perf_counter() - t0
                if at_end or self._stop_requested():
                    break
                t0 = time.perf_counter()
                loss, lr = self.train_step()
                window_time += time.perf_counter() - t0
                window_steps += 1
                if cfg.save_every and st.step % cfg.save_every == 0:
                    self.save()
                elapsed = wall_at_start + time.perf_counter() - session_start
                self.callback(
                    StepDone(
                        st.step,
                        cfg.iters,
                        loss,
                        lr,
                        elapsed,
                        window_steps / window_time,
                        tokens_per_step * window_steps / window_time,
                    )
                )
        except BaseException as exc:
            self._record_end(
                "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                f"{type(exc).__name__}: {exc}",
            )
            raise
        st.wall_seconds = wall_at_start + time.perf_counter() - session_start
        stopped = self._stop_signal is not None and st.step < cfg.iters
        if stopped:
            self.save()
        else:  # --max-time may end a run before its planned steps; it is complete then
            self.cfg = replace(cfg, iters=st.step)
        status = "interrupted" if stopped else "completed"
        self._record_end(status, None)
        return TrainResult(
            status,
            st.step,
            self.cfg.iters,
            last_eval,
            st.best_val,
            self.run_dir,
            self._stop_signal if stopped else None,
        )

    def train_step(self) -> tuple[torch.Tensor, float]:
        """One optimizer step on a fresh batch; returns the loss (on the device) and the lr."""
        cfg, st = self.cfg, self.state
        lr = learning_rate(cfg, st.step, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = sample_batch(
            self.train_data, cfg.batch_size, self.model_cfg.block_size, self.batch_gen, self.device
        )
        with autocast(self.device, self.dtype):
            _, loss, _ = self.step_model(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        st.step += 1
        return loss.detach(), lr

    def _progress(self) -> float:
        cfg, st = self.cfg, self.state
        by_steps = (st.step - cfg.warmup_iters) / max(1, cfg.iters - cfg.warmup_iters)
        if cfg.max_time:
            return max(by_steps, st.wall_seconds / cfg.max_time)
        return by_steps

    def _out_of_time(self, eval_cost: float) -> bool:
        # Stop early enough that the final eval still fits in the budget.
        return bool(self.cfg.max_time) and self.dist.agree_any(
            self.state.wall_seconds + eval_cost >= self.cfg.max_time
        )

    def _stop_requested(self) -> bool:
        return self.dist.agree_any(self._stop_signal is not None)

    def _evaluate(self, tokens_per_sec: float | None) -> dict[str, Any]:
        st, cfg = self.state, self.cfg
        block = self.model_cfg.block_size
        losses = {
            split: self.dist.mean(
                estimate_loss(
                    self.model, data, self.dist.shard(self.eval_windows[split]), block, self.dtype
                )
            )
            for split, data in (("train", self.train_data), ("val", self.val_data))
        }
        record = {
            "step": st.step,
            "train_loss": round(losses["train"], 5),
            "val_loss": round(losses["val"], 5),
            "lr": learning_rate(cfg, st.step, self._progress()),
            "tokens_per_sec": round(tokens_per_sec, 1) if tokens_per_sec else None,
            "elapsed": round(st.wall_seconds, 2),
        }
        improved = st.best_val is None or losses["val"] < st.best_val
        if improved:
            st.best_val = losses["val"]
        st.last_eval_step = st.step
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.append_metric(record)
            self.callback(EvalDone(record))
            if cfg.sample_chars:
                text = sample_text(
                    self.model,
                    self.corpus.tokenizer,
                    max_new_tokens=cfg.sample_chars,
                    seed=cfg.seed,
                    dtype=self.dtype,
                )[0]
                self.run_dir.append_sample({"step": st.step, "seed": cfg.seed, "text": text})
                self.callback(SampleWritten(st.step, text))
            write_loss_png(self.run_dir.file(LOSS_PNG), self.run_dir.metrics(), self.run_dir.name)
            self.run_dir.update_status(
                step=st.step,
                best_val=st.best_val,
                last_val=losses["val"],
                last_train=losses["train"],
                wall_seconds=round(st.wall_seconds, 1),
            )
        elif self.run_dir is None:
            self.callback(EvalDone(record))
        self.save(best=improved)
        self.model.train()
        return record

    def _record_end(self, status: str, message: str | None) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        with contextlib.suppress(ToygptError):
            self.run_dir.update_status(
                peak_rss_mb=_peak_rss_mb(),
                status=status,
                step=self.state.step,
                planned_steps=self.cfg.iters,
                finished=utc_now(),
                message=message,
                wall_seconds=round(self.state.wall_seconds, 1),
            )


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


# ------------------------------------------------------------------------------ setup


def _load_corpus(data: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, tokenizer=None):
    corpus = Corpus.load(data, train_cfg.val_fraction, tokenizer)
    n_val = corpus.n_chars - corpus.n_train
    if model_cfg.block_size >= n_val:
        raise UsageError(
            f"block_size ({model_cfg.block_size}) must be shorter than the val split "
            f"({n_val} characters of {data}); use a smaller --block-size or more text"
        )
    return corpus


def run_config(
    run: Run,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    corpus: Corpus,
    trainer: Trainer,
    command: list[str] | None,
) -> dict[str, Any]:
    return {
        "name": run.name,
        "created": utc_now(),
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "resolved": {
            "device": str(trainer.device),
            "dtype": trainer.dtype,
            "threads": torch.get_num_threads(),
            "world_size": trainer.dist.world_size,
            "effective_batch_size": train_cfg.batch_size * trainer.dist.world_size,
        },
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


def start_training(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data: Path,
    runs_dir: Path | None = Path("runs"),
    *,
    callback: Callback | None = None,
    command: list[str] | None = None,
    dist: Distributed | None = None,
) -> Trainer:
    """Check everything, then create the run folder and a Trainer ready to `run()`.

    Nothing is written before the inputs are known to be good. `runs_dir=None` trains
    without a run folder (nothing on disk), e.g. in a notebook or a benchmark.
    """
    model_cfg.validate()
    train_cfg.validate()
    dist = dist or Distributed.single()
    if dist.device is None:
        resolve_device(train_cfg.device)
    corpus = _load_corpus(Path(data), model_cfg, train_cfg)
    model_cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    run = None
    if runs_dir is not None:
        run = Run(dist.broadcast_path(create_run_dir(runs_dir) if dist.is_main else None))
    trainer = Trainer(run, model_cfg, train_cfg, corpus, callback=callback, dist=dist)
    if run is not None and dist.is_main:
        run.write_config(run_config(run, model_cfg, train_cfg, corpus, trainer, command))
        run.mark_running(0, train_cfg.iters)
    # A checkpoint from the first moment: a run killed at any point can be resumed.
    trainer.save()
    return trainer


def resume_training(
    run: Run,
    steps: int,
    overrides: dict[str, Any] | None = None,
    *,
    callback: Callback | None = None,
    command: list[str] | None = None,
    dist: Distributed | None = None,
) -> Trainer:
    """Continue `run` from its last checkpoint for `steps` more steps.

    Training options in `overrides` may change (and are recorded); architecture options
    must match the run's, or this refuses, naming the difference.
    """
    dist = dist or Distributed.single()
    if steps <= 0:
        raise UsageError(f"--steps must be greater than 0, got {steps}")
    st = run.status()
    if st["status"] == "running":
        raise ToygptError(f"run {run.name} is still training (pid {st.get('pid')})")
    ckpt_path = run.file(CKPT_LAST)
    if not ckpt_path.exists():
        raise ToygptError(f"run {run.name} has no checkpoint to resume from ({ckpt_path})")
    ckpt = load_checkpoint(ckpt_path)
    model_cfg = from_dict(ModelConfig, ckpt["model_config"])
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = Path(overrides.pop("data", None) or run.config()["data"]["path"])
    different = {
        k: (getattr(model_cfg, k), v)
        for k, v in overrides.items()
        if k in ARCHITECTURE_FIELDS and getattr(model_cfg, k) != v
    }
    if different:
        what = ", ".join(
            f"{k} is {old} in the run, {new} asked" for k, (old, new) in different.items()
        )
        raise UsageError(f"cannot resume {run.name} with a different architecture: {what}")
    for k in ARCHITECTURE_FIELDS:
        overrides.pop(k, None)
    old_train = from_dict(TrainConfig, ckpt["train_config"])
    step, last_eval = ckpt["state"]["step"], ckpt["state"]["last_eval_step"]
    train_cfg = replace(old_train, **overrides, iters=step + steps)
    train_cfg.validate()
    corpus = _load_corpus(data, model_cfg, train_cfg, CharTokenizer(ckpt["vocab"]))
    trainer = Trainer(
        run, model_cfg, train_cfg, corpus, checkpoint=ckpt, callback=callback, dist=dist
    )
    if dist.is_main:
        run.remove_stale_temp_files()
        # Evals newer than the checkpoint's (a kill between an eval and its checkpoint)
        # are redone by this session; drop them so nothing appears twice.
        for name in (METRICS, SAMPLES):
            truncate_jsonl(run.file(name), lambda r: r.get("step", 0) <= last_eval)
        config = run.config()
        changed = {
            k: [getattr(old_train, k), getattr(train_cfg, k)]
            for k in to_dict(train_cfg)
            if k != "iters" and getattr(old_train, k) != getattr(train_cfg, k)
        }
        config["train"] = to_dict(train_cfg)
        config.setdefault("resumes", []).append(
            {
                "at_step": step,
                "steps": steps,
                "changed": changed,
                "time": utc_now(),
                "command": shlex.join(command or sys.argv),
                "device": str(trainer.device),
            }
        )
        run.write_config(config)
    return trainer


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM: the first asks the trainer to checkpoint and stop after the current
    step; a second one stops at once (the previous checkpoint is intact on disk)."""

    def handler(signum, frame):
        if trainer._stop_signal is not None:
            raise KeyboardInterrupt
        trainer.request_stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
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
    "learning_rate",
    "resume_training",
    "start_training",
    "stop_on_signals",
]
