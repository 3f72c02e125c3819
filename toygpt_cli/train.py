"""Training: the optimizer step, and the loop of steps and evals around it.

    trainer = Trainer(model_cfg, train_cfg, corpus, listeners=[print])
    result = trainer.run()

The loop reports what happens as events (events.py) to its listeners, and hands each
checkpoint to `checkpoints(state, step, best)`, a callable given at construction (the run
folder's, when there is one). `state_dict()` / `load_state_dict()` carry everything that
decides the future of a run: weights, optimizer, loop state, and every random stream of
every process, so N steps + resume + M steps gives the weights of N + M steps in one go
(bit for bit on a CPU).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch

from toygpt_cli.budget import Budget
from toygpt_cli.config import ModelConfig, TrainConfig, to_dict
from toygpt_cli.data import Corpus, epoch_starts, sample_batch, windows
from toygpt_cli.device import autocast, resolve_device, resolve_dtype, set_threads
from toygpt_cli.errors import ToygptError, first_line
from toygpt_cli.events import (
    CheckpointSaved,
    EstimateReady,
    EvalDone,
    Notice,
    PhaseStarted,
    StepDone,
    TrainEnded,
    TrainResult,
    TrainStarted,
)
from toygpt_cli.model import GPT
from toygpt_cli.optim import (
    apply_hparams,
    learning_rate,
    load_optimizer_state,
    lr_factor,
    make_optimizer,
    set_lr,
)
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.periodic import PeriodicEval
from toygpt_cli.stopping import StepAbandoned, StopSwitch

Checkpoints = Callable[[dict[str, Any], int, bool], None]  # (state, step, best weights?)


class Diverged(ToygptError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


STEP_FORWARDS = 6  # a training step in forward passes of its batch (measured: 4 to 7 on CPUs)


class ProcessLost(ToygptError):
    """Another process of a multi-process run ended (a collective operation failed)."""

    def __init__(self, cause: BaseException):
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:120]
        super().__init__(
            "another training process of this run ended unexpectedly; the last checkpoint "
            f"is intact and the run resumes with --resume ({first})"
        )


class BudgetTooSmall(ToygptError):
    """--max-time cannot fit even the evals a run needs, on this machine."""

    def __init__(self, message: str, fresh: bool):
        super().__init__(message)
        self.fresh = fresh  # nothing happened in the run yet (a new run at step 0)


class EvalStopped(Exception):
    """A stop was asked for during an eval: the eval is abandoned (it changed nothing)."""


@dataclass
class LoopState:
    """What decides the future of a run besides the weights and the optimizer."""

    step: int = 0
    best_val: float | None = None
    last_eval_step: int = -1
    wall_seconds: float = 0.0  # the run's wall time, carried across resumes
    budget_start: float = 0.0  # wall_seconds when the current max_time budget began
    eval_windows: int | None = None  # windows per split in every periodic eval of the run
    last_record: dict | None = None  # the metrics record of the last eval
    windows_taken: int = 0  # training windows of every rank so far (--data-order epochs)


class Trainer:
    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        corpus: Corpus,
        *,
        dist: Distributed | None = None,
        listeners: list | tuple = (),
        checkpoints: Checkpoints | None = None,
        stop: StopSwitch | None = None,
        run=None,  # the run folder, reported in events (None: no folder)
        lock=None,  # released when run() returns: the run may be resumed from then on
        last_eval: dict[str, Any] | None = None,
    ):
        self.model_cfg, self.cfg, self.corpus = model_cfg, train_cfg, corpus
        self.dist = dist or Distributed.single()
        # What puts the run folder back as it was when --max-time is refused (a resume)
        self.on_refused: Callable[[], None] | None = None
        self.listeners = [x for x in listeners if x is not None]
        self.checkpoints, self.stop = checkpoints, stop or StopSwitch()
        self.run_folder, self.lock, self.last_eval = run, lock, last_eval
        self.resumed = False  # set by load_state_dict: this training continues a checkpoint
        self.device = self.dist.device or resolve_device(train_cfg.device)
        self.dtype = resolve_dtype(train_cfg.dtype, self.device)
        set_threads(train_cfg.threads)
        train, val = corpus.splits()
        self.data = {"train": train.to(self.device), "val": val.to(self.device)}
        torch.manual_seed(train_cfg.seed)  # the weights: the same on every rank
        self.model = GPT(model_cfg).to(self.device)
        if self.dist.rank:  # dropout: a stream of each rank's own (rank 0 keeps the seed's)
            torch.manual_seed(train_cfg.seed + 7919 * self.dist.rank)
        self.optimizer = make_optimizer(self.model, train_cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == "float16")
        # Batches: each rank its own stream; rank 0's is what a one-process run draws.
        self.batch_gen = torch.Generator().manual_seed(train_cfg.seed + 1000 * self.dist.rank)
        self.state = LoopState()
        # --ema: the averaged weights (made at the first step, from the weights after it:
        # those of a fresh model, of --init-from, or of a resumed run without an average)
        self.average: dict[str, torch.Tensor] | None = None
        self.evals = PeriodicEval(
            self.model, self.data, model_cfg.block_size, train_cfg, self.dtype, corpus.tokenizer,
            self.emit, self.dist, self.stop,
        )  # fmt: skip
        self.step_model = self.eager_step_model = self.dist.wrap(self.model)
        self._compiling = train_cfg.compile  # until the first step has compiled the model
        self._compile_error: Exception | None = None
        if train_cfg.compile:
            # reduce-overhead captures the compiled step in CUDA graphs; on a CPU the modes
            # only change how it compiles.
            mode = None if train_cfg.compile_mode == "default" else train_cfg.compile_mode
            try:
                self.step_model = torch.compile(self.step_model, mode=mode)
            except Exception as exc:  # noqa: BLE001 - unsupported here (a Python too new)
                self._compile_error = exc  # said at the first step

    def emit(self, event) -> None:
        for listener in self.listeners:
            listener(event)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly. Every rank must call it (it gathers)."""
        cuda = self.device.type == "cuda"
        weights = self.model.state_dict()
        return {
            # what evals score and every reader uses; the training weights under "live"
            "model": self.average if self.average is not None else weights,
            **({"live": weights} if self.average is not None else {}),
            "model_config": to_dict(self.model_cfg),
            "train_config": to_dict(self.cfg),
            "vocab": self.corpus.tokenizer.chars,
            "state": vars(self.state).copy(),
            "dtype": self.dtype,
            "torch_version": str(torch.__version__),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {  # one entry per rank
                "batches": self.dist.gather_states(self.batch_gen.get_state()),
                "cpu": self.dist.gather_states(torch.get_rng_state()),
                "cuda": self.dist.gather_states(torch.cuda.get_rng_state(self.device))
                if cuda
                else None,
            },
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Put a state_dict back (options changed on resume take effect). A part that does
        not fit raises ValueError naming it."""
        self.resumed = True

        def part(what: str, load) -> None:
            try:
                load()
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
                why = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
                raise ValueError(f"its {what} does not fit this model ({why[:120]})") from None

        live = ckpt.get("live", ckpt["model"])  # "live": the run kept an average too
        part("weights", lambda: self.model.load_state_dict(live))
        if self.cfg.ema and "live" in ckpt:
            self.average = {k: v.to(self.device, copy=True) for k, v in ckpt["model"].items()}
            part("averaged weights", lambda: self.model.load_state_dict(self.average))
            self.model.load_state_dict(live)
        optimizer = ckpt["optimizer"]
        part("optimizer state", lambda: load_optimizer_state(self.optimizer, optimizer, self.model))
        apply_hparams(self.optimizer, self.cfg)
        if ckpt.get("scaler"):
            part("gradient scaler", lambda: self.scaler.load_state_dict(ckpt["scaler"]))
        part("random streams", lambda: self._load_rng(ckpt["rng"]))
        known = LoopState.__annotations__
        self.state = LoopState(**{k: v for k, v in ckpt["state"].items() if k in known})

    def _load_rng(self, rng: dict[str, Any]) -> None:
        rank = self.dist.rank

        def mine(states):  # this rank's state; a checkpoint of fewer ranks gives rank 0's
            if isinstance(states, torch.Tensor):  # made before every rank's was saved
                return states
            return states[rank] if rank < len(states) else None

        if (batches := mine(rng["batches"])) is not None:
            self.batch_gen.set_state(batches)
        if (cpu := mine(rng["cpu"])) is not None:
            torch.set_rng_state(cpu)
        cuda = mine(rng["cuda"]) if rng.get("cuda") is not None else None
        if self.device.type == "cuda" and cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)

    def save_checkpoint(self, best: bool = False) -> None:
        """Hand the state to `checkpoints` (every rank gathers; rank 0 writes)."""
        state = self.state_dict()
        if self.dist.is_main and self.checkpoints is not None:
            self.emit(PhaseStarted("checkpoint", self.state.step))
            with self.stop.protect():
                self.checkpoints(state, self.state.step, best)
            self.emit(CheckpointSaved(self.state.step, best))

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop at the next safe point with a checkpoint (safe from a signal handler)."""
        self.stop.request(signum)

    # -- the step ---------------------------------------------------------------------------
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's training windows: drawn at random, or this rank's share of the
        epoch-wise sequence (--data-order)."""
        train, B, T = self.data["train"], self.cfg.batch_size, self.model_cfg.block_size
        if self.cfg.data_order == "random":
            return sample_batch(train, B, T, self.batch_gen, self.device)
        first = self.state.windows_taken + self.dist.rank * B
        starts = epoch_starts(len(train), T, first, B, self.cfg.seed)
        return windows(train, starts, T, self.device)

    def train_step(self, progress: float = 0.0) -> tuple[torch.Tensor, float]:
        """One optimizer step on a fresh batch; returns the loss (on the device) and the lr."""
        cfg, st = self.cfg, self.state
        factor = lr_factor(cfg, st.step, progress)
        set_lr(self.optimizer, factor)  # each group's own peak rate times the schedule
        loss = self._first_compiled() if self._compiling else self._forward_backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        st.step += 1
        st.windows_taken += self.dist.world_size * cfg.batch_size
        if cfg.ema:
            self._average()
        return loss.detach(), cfg.learning_rate * factor

    def _forward_backward(self) -> torch.Tensor:
        x, y = self.batch()
        with autocast(self.device, self.dtype):
            _, loss = self.step_model(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        return loss

    def _first_compiled(self) -> torch.Tensor:
        """The first step of a compiled model compiles it: about 45 s on two CPU cores. A
        stop request meanwhile abandons the step (StepAbandoned; one process only: several
        wait for each other inside it); where compiling fails (no C++ compiler, say), a
        note, and the model trains uncompiled. Either way the step's batch and dropout are
        drawn again from where they were."""
        if self._compile_error is not None:
            return self._uncompiled(self._compile_error)
        cuda = self.device.type == "cuda"
        rng = (self.batch_gen.get_state(), torch.get_rng_state(),
               torch.cuda.get_rng_state(self.device) if cuda else None)  # fmt: skip
        abandonable = contextlib.nullcontext() if self.dist.active else self.stop.abandonable()
        try:
            with abandonable, warnings.catch_warnings():
                # torch traces the backward in anomaly mode while compiling: an interruption
                # there would print the forward's traceback as a warning
                warnings.filterwarnings("ignore", "Error detected in", UserWarning)
                loss = self._forward_backward()
        except StepAbandoned:
            self._rewind(rng)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever broke, the eager model trains
            self._rewind(rng)
            return self._uncompiled(exc)
        self._compiling = False
        return loss

    def _uncompiled(self, exc: Exception) -> torch.Tensor:
        """The step again, uncompiled; the note only once that works (an error the model
        makes uncompiled too is that error, not the compiler's)."""
        self.step_model, self._compiling = self.eager_step_model, False
        loss = self._forward_backward()
        self.emit(Notice(f"--compile failed here, training without it: {first_line(exc)}"))
        return loss

    def _rewind(self, rng) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.batch_gen.set_state(rng[0])
        torch.set_rng_state(rng[1])
        if rng[2] is not None:
            torch.cuda.set_rng_state(rng[2], self.device)

    @torch.no_grad()
    def _average(self) -> None:
        """--ema: move the average (1 - decay) of the way to the weights. Early in a run
        the decay is smaller, (1 + step) / (10 + step), so that a short run's average is
        not held back by the first, untrained weights."""
        weights = self.model.state_dict()
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in weights.items()}
            return
        step = self.state.step
        decay = min(self.cfg.ema, (1 + step) / (10 + step))
        names = [k for k, v in weights.items() if v.is_floating_point()]
        torch._foreach_lerp_(
            [self.average[k] for k in names], [weights[k] for k in names], 1.0 - decay
        )

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The model holds the averaged weights (--ema) while the block runs: an eval, a
        sample. A stop at any moment leaves nothing on disk from the swap: a first request
        is answered after the block, a second one saves nothing."""
        if self.average is None:
            yield
            return
        live = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            self.model.load_state_dict(self.average)
            yield
        finally:
            self.model.load_state_dict(live)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the run (it may be resumed as soon as this returns) and of the
        DistributedDataParallel wrapper: that holds the process group, whose threads must
        end in `Distributed.close`, not at the interpreter's exit (gloo aborts there now
        and then)."""
        self.step_model = self.eager_step_model = self.model
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _run(self) -> TrainResult:
        cfg, st = self.cfg, self.state
        start_step, self._estimated = st.step, False
        budget = Budget(cfg.max_time, st.wall_seconds, st.budget_start, self.dist.world_size)
        self.emit(
            TrainStarted(
                self.run_folder, st.step, cfg.iters, self.model.num_params(), str(self.device),
                self.dtype, self.resumed, cfg.max_time, st.wall_seconds, self.last_eval,
                budget.used(),
            )
        )  # fmt: skip
        try:
            at_end = self._loop(budget, start_step)
            st.wall_seconds = budget.wall()
            # Agreed by every process (a signal may have reached only one): checkpointing
            # is collective, so all of them must take this branch or none.
            stopped = not at_end
            if stopped:
                self.save_checkpoint()
                # the signal that stopped the run, the same on every process (one may
                # have heard it alone)
                signum = int(self.dist.max(float(self.stop.signal or 0))) or None
            self.dist.barrier()  # rank 0 may still be sampling: leave together
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            if (
                self.dist.active
                and isinstance(exc, RuntimeError)
                and not isinstance(exc, ToygptError)
            ):  # a collective failed: another process of the run is gone
                exc = ProcessLost(exc)
            message = str(exc) if isinstance(exc, ToygptError) else f"{type(exc).__name__}: {exc}"
            self.emit(TrainEnded(status, st.step, cfg.iters, budget.wall(), message))
            if isinstance(exc, BudgetTooSmall) and self.on_refused is not None:
                self.on_refused()  # refused before its first step: the run as it was
            if isinstance(exc, ProcessLost):
                raise exc from None
            raise
        status = "interrupted" if stopped else "completed"
        if not stopped and not cfg.iters:  # a budget-only run is complete when it ends
            self.cfg = replace(cfg, iters=st.step)
        self.emit(TrainEnded(status, st.step, self.cfg.iters, st.wall_seconds))
        return TrainResult(
            status, st.step, self.cfg.iters, self.last_eval, st.best_val, self.run_folder,
            signum if stopped else None, st.step - start_step,
        )  # fmt: skip

    def _stopping(self) -> bool:
        return self.dist.agree_any(self.stop.signal is not None)

    def _loop(self, budget: Budget, start_step: int) -> bool:
        """Steps and evals until the plan, the budget or a stop request ends the session;
        True when the plan or the budget ended it (a stop request then changes nothing)."""
        cfg, st = self.cfg, self.state
        tokens_per_step = cfg.batch_size * self.model_cfg.block_size * self.dist.world_size
        window = [0, 0.0]  # steps and seconds since the last eval
        if budget.max_time:  # what an eval costs, before the first one is due
            self.evals.probe(budget, st)
            self._check_budget(budget, start_step)
        self.evals.size(budget, st)  # the run's eval size, for the budget and estimates
        while True:
            st.wall_seconds = budget.wall()
            at_end = bool(cfg.iters and st.step >= cfg.iters)
            at_end = self.dist.agree_any(at_end or budget.must_stop())
            due = st.step % cfg.eval_interval == 0 and st.last_eval_step != st.step
            if due and not at_end and budget.max_time:  # the last eval that fits: the final
                at_end = self.dist.agree_any(budget.last_eval_is_now())
            if (due or at_end) and st.last_eval_step != st.step:
                tps = tokens_per_step * window[0] / window[1] if window[1] else None
                try:
                    self._evaluate(tps, budget, final=at_end)
                except EvalStopped:
                    self.emit(Notice(f"eval at step {st.step} abandoned: stopping"))
                    return False
                window = [0, 0.0]
            if at_end or self._stopping():
                return at_end
            t0 = time.perf_counter()
            # Under a budget every rank follows the slowest clock, so all ranks apply the
            # same learning rate (their own clocks would drift apart by milliseconds).
            timed = cfg.max_time and cfg.lr_schedule != "constant"
            used = self.dist.max(budget.used()) if timed else None
            compiling = self._compiling
            try:
                loss, lr = self.train_step(budget.progress(st.step, cfg, used))
            except StepAbandoned:
                self.emit(Notice(f"step {st.step + 1} abandoned while compiling: stopping"))
                return False
            took = time.perf_counter() - t0
            window[0] += 1
            window[1] += took
            if not compiling:  # the step that compiled tells nothing of the others' time
                budget.step_took(took)
            if cfg.save_every and st.step % cfg.save_every == 0:
                self._check_finite(loss.item(), "train")
                self.save_checkpoint()
            rate = window[0] / window[1]
            self.emit(
                StepDone(
                    st.step, cfg.iters, loss, lr, budget.wall(), rate, tokens_per_step * rate,
                    budget.used(),
                )
            )  # fmt: skip
            if compiling:  # nor of the throughput: measured from the next step on
                window = [0, 0.0]
            if budget.estimate_due(st.step - start_step):
                self._estimated = True
                self.emit(EstimateReady(*budget.estimate(st.step, cfg)))

    def _check_budget(self, budget: Budget, start_step: int) -> None:
        """Refuse a budget that cannot hold this session's evals and a step or two."""
        cost = budget.eval_cost  # one eval at the run's fixed size
        evals = 2 if self.state.last_eval_step != self.state.step else 1
        # A training step (forward, backward, update; the first one also warms up) costs
        # about six forward passes of its batch, which the probe timed per window (and
        # divided among the processes, which share an eval's windows but not a step's).
        rate = (budget.eval_rate or 0.0) * self.dist.world_size
        step = STEP_FORWARDS * rate * self.cfg.batch_size
        if budget.used() + evals * cost * 1.2 + step < budget.max_time:
            return
        need = max(2, math.ceil(budget.used() + evals * cost * 1.5 + 2 * step + 5))
        raise BudgetTooSmall(
            f"--max-time {budget.max_time:g}s is too small here: an eval of this model takes "
            f"about {cost:.1f} s, a step about {step:.1f} s, and this training needs {evals} "
            f"evals and a step; give --max-time {need}s or more",
            fresh=start_step == 0 and self.state.last_eval_step < 0,
        )

    def _evaluate(self, tokens_per_sec: float | None, budget: Budget, final: bool) -> None:
        st, cfg = self.state, self.cfg
        with self.averaged():
            losses, windows = self.evals.losses(st.step, budget, st)
        if self._estimated and not final:  # a better estimate, now that an eval was timed
            self.emit(EstimateReady(*budget.estimate(st.step, cfg), quiet=True))
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
        partial = windows < st.eval_windows  # the quick first eval: not comparable
        if partial:
            record["eval_windows"] = windows
        improved = not partial and (st.best_val is None or losses["val"] < st.best_val)
        if improved:
            st.best_val = losses["val"]
        st.last_eval_step, st.last_record = st.step, record
        self.last_eval = record
        self.save_checkpoint(best=improved)  # first: what is listed is on disk
        if self.dist.is_main:
            self.emit(EvalDone(record, improved))
            if cfg.sample_chars and budget.sample_allowed(final):
                with self.averaged():
                    self.evals.sample(st.step, budget, self.device)
        self.model.train()

    def _check_finite(self, loss: float, split: str) -> None:
        if not math.isfinite(loss):
            raise Diverged(
                f"training diverged: the {split} loss is {loss} at step {self.state.step}; "
                f"the last good checkpoint (step {self.state.last_eval_step}) is kept. "
                "Try a lower learning rate or gradient clipping"
            )
