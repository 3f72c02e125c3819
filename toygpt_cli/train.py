"""The Trainer: steps, evals, budgets and stop requests, reported as events.

    trainer = Trainer(run, model_cfg, train_cfg, corpus, listeners=[print])
    result = trainer.run()

It writes nothing itself: listeners (the run recorder, the CLI's display) receive every
event. Resuming is exact: the checkpoint state carries the model, optimizer, step, best val
loss, the batch-sampling generators and the dropout RNG, so N steps + resume M steps gives
the same weights as N + M steps in one go (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import replace
from typing import Any

import torch

from toygpt_cli.budget import Budget
from toygpt_cli.config import ModelConfig, TrainConfig
from toygpt_cli.data import Corpus, sample_batch
from toygpt_cli.device import autocast, resolve_device, resolve_dtype, set_threads
from toygpt_cli.errors import ToygptError
from toygpt_cli.events import (
    CheckpointDue,
    EstimateReady,
    EvalDone,
    PhaseStarted,
    StepDone,
    TrainEnded,
    TrainResult,
    TrainStarted,
)
from toygpt_cli.model import GPT
from toygpt_cli.optim import (
    learning_rate,
    lr_factor,
    make_optimizer,
)
from toygpt_cli.optim import set_lr as _set_lr
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.periodic import PeriodicEval
from toygpt_cli.snapshot import State, capture, restore


class Diverged(ToygptError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Trainer:
    def __init__(
        self,
        run,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        corpus: Corpus,
        *,
        checkpoint: dict[str, Any] | None = None,
        listeners: list | None = None,
        dist: Distributed | None = None,
        last_eval: dict[str, Any] | None = None,
    ):
        self.run_dir, self.model_cfg, self.cfg, self.corpus = run, model_cfg, train_cfg, corpus
        self.listeners = [x for x in (listeners or []) if x is not None]
        self.dist = dist or Distributed.single()
        self.device = self.dist.device or resolve_device(train_cfg.device)
        self.dtype = resolve_dtype(train_cfg.dtype, self.device)
        set_threads(train_cfg.threads)
        self._stop_signal: int | None = None
        self.last_eval = last_eval
        train, val = corpus.splits()
        self.data = {"train": train.to(self.device), "val": val.to(self.device)}
        torch.manual_seed(train_cfg.seed)  # model init and dropout draw from the global RNG
        self.model = GPT(model_cfg).to(self.device)
        self.optimizer = make_optimizer(self.model, train_cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "float16")
        # Each rank draws its own batches; rank 0 keeps the plain seed, so one process
        # samples exactly what a non-distributed run does.
        self.batch_gen = torch.Generator().manual_seed(train_cfg.seed + 1000 * self.dist.rank)
        self.state = State()
        self.evals = PeriodicEval(self, self.data, self.emit, self.dist)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.step_model = self.dist.wrap(self.model)
        if train_cfg.compile:
            # reduce-overhead captures the compiled forward and backward in CUDA graphs
            # (inputs copied into static buffers): at the default size a GPU step is
            # otherwise launch-bound. On CPU the modes only change how it compiles.
            mode = None if train_cfg.compile_mode == "default" else train_cfg.compile_mode
            self.step_model = torch.compile(self.step_model, mode=mode)
        self.critical = False  # True while a checkpoint is being handed out to be written
        self.after_critical = None  # called when that ends (a deferred second Ctrl-C)
        self.run_lock = None  # the run's exclusive lock, held while this trainer exists

    def emit(self, event) -> None:
        for listener in self.listeners:
            listener(event)

    # -- state ------------------------------------------------------------------------
    def _restore(self, ckpt: dict[str, Any]) -> None:
        restore(self, ckpt)

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to resume exactly. Every rank must call it (collective)."""
        return capture(self)

    def save(self, best: bool = False) -> None:
        state = self.checkpoint_state()
        if self.dist.is_main:
            self.emit(PhaseStarted("checkpoint", self.state.step))
            with self._critical_section():
                self.emit(CheckpointDue(state, self.state.step, best))

    @contextlib.contextmanager
    def _critical_section(self):
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
            if self.after_critical is not None:
                self.after_critical()

    def request_stop(self, signum: int) -> None:
        """Stop after the current step, saving a checkpoint (safe from a signal handler)."""
        self._stop_signal = signum

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:  # the run may be resumed as soon as this returns
            if self.run_lock is not None:
                self.run_lock.release()
                self.run_lock = None

    def _run(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        start_step = st.step
        budget = Budget(cfg.max_time, st.wall_seconds, st.budget_start)
        self.emit(
            TrainStarted(
                self.run_dir, st.step, cfg.iters, self.model.num_params(), str(self.device),
                self.dtype, st.step > 0, cfg.max_time, st.wall_seconds, self.last_eval,
                budget.used(),
            )
        )  # fmt: skip
        try:
            at_end = self._loop(budget, start_step)
            st.wall_seconds = budget.wall()
            stopped = self._stop_signal is not None and not at_end
            if stopped:
                self.save()
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            message = str(exc) if isinstance(exc, ToygptError) else f"{type(exc).__name__}: {exc}"
            self.emit(TrainEnded(status, st.step, cfg.iters, budget.wall(), message))
            raise
        status = "interrupted" if stopped else "completed"
        if not stopped and not cfg.iters:  # a budget-only run is complete when it ends
            self.cfg = replace(cfg, iters=st.step)
        self.emit(TrainEnded(status, st.step, self.cfg.iters, st.wall_seconds))
        signal = self._stop_signal if stopped else None
        return TrainResult(
            status, st.step, self.cfg.iters, self.last_eval, st.best_val, self.run_dir, signal,
            st.step - start_step,
        )  # fmt: skip

    def _loop(self, budget: Budget, start_step: int) -> bool:
        """Steps and evals until the plan, the budget or a stop request ends the session;
        True when the plan or the budget ended it (a stop request then changes nothing)."""
        cfg, st = self.cfg, self.state
        tokens_per_step = cfg.batch_size * self.model_cfg.block_size * self.dist.world_size
        window = [0, 0.0]  # steps and seconds since the last eval
        if budget.max_time:  # a resumed session may not eval before its budget runs out
            self.evals.probe(budget)
        while True:
            st.wall_seconds = budget.wall()
            at_end = bool(cfg.iters and st.step >= cfg.iters)
            at_end = self.dist.agree_any(at_end or budget.must_stop())
            if (st.step % cfg.eval_interval == 0 or at_end) and st.last_eval_step != st.step:
                tps = tokens_per_step * window[0] / window[1] if window[1] else None
                self._evaluate(tps, budget, final=at_end)
                window = [0, 0.0]
            if at_end or self.dist.agree_any(self._stop_signal is not None):
                return at_end
            t0 = time.perf_counter()
            # Under a budget every rank follows the slowest clock, so all ranks apply the
            # same learning rate (their own clocks would drift apart by milliseconds).
            timed = cfg.max_time and cfg.lr_schedule != "constant"
            used = self.dist.max(budget.used()) if timed else None
            loss, lr = self.train_step(budget.progress(st.step, cfg, used))
            took = time.perf_counter() - t0
            window[0] += 1
            window[1] += took
            budget.step_took(took)
            if cfg.save_every and st.step % cfg.save_every == 0:
                self._check_finite(loss.item(), "train")
                self.save()
            rate = window[0] / window[1]
            self.emit(
                StepDone(
                    st.step, cfg.iters, loss, lr, budget.wall(), rate,
                    tokens_per_step * rate, budget.used(),
                )
            )  # fmt: skip
            if budget.estimate_due(st.step - start_step):
                self.emit(EstimateReady(*budget.estimate(st.step, cfg)))

    def train_step(self, progress: float = 0.0) -> tuple[torch.Tensor, float]:
        """One optimizer step on a fresh batch; returns the loss (on the device) and the lr."""
        cfg, st = self.cfg, self.state
        factor = lr_factor(cfg, st.step, progress)
        _set_lr(self.optimizer, factor)  # each group's own peak rate times the schedule
        lr = cfg.learning_rate * factor
        x, y = sample_batch(
            self.data["train"], cfg.batch_size, self.model_cfg.block_size, self.batch_gen,
            self.device,
        )  # fmt: skip
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

    def _evaluate(self, tokens_per_sec: float | None, budget: Budget, final: bool) -> None:
        st, cfg = self.state, self.cfg
        losses = self.evals.losses(st.step, budget)
        for split, value in losses.items():
            self._check_finite(value, split)
        record = {
            "step": st.step,
            "train_loss": round(losses["train"], 5),
            "val_loss": round(losses["val"], 5),
            "lr": learning_rate(cfg, st.step, budget.progress(st.step, cfg)),
            "tokens_per_sec": round(tokens_per_sec, 1) if tokens_per_sec else None,
            "elapsed": round(budget.wall(), 2),
        }
        improved = st.best_val is None or losses["val"] < st.best_val
        if improved:
            st.best_val = losses["val"]
        st.last_eval_step = st.step
        self.last_eval = record
        if self.dist.is_main:
            self.emit(EvalDone(record, improved))
            if cfg.sample_chars and budget.sample_allowed(final):
                self.evals.sample(st.step, budget)
        self.save(best=improved)
        self.model.train()

    def _check_finite(self, loss: float, split: str) -> None:
        if not math.isfinite(loss):
            raise Diverged(
                f"training diverged: the {split} loss is {loss} at step {self.state.step}; "
                f"the last good checkpoint (step {self.state.last_eval_step}) is kept. "
                "Try a lower learning rate or gradient clipping"
            )
