"""The evals during training: the fixed windows each split is scored on, and the sample.

Every eval of a run scores the same windows: per split, the first `count` of one fixed
sequence of window offsets (drawn from seed + 1 for train, seed + 2 for val, never from the
training streams, which is what keeps resume exact). `count` is eval_iters x the batch of
every process together (so `--nproc 2 --batch-size 6` scores the windows `--batch-size 12`
does, each process half of them), or what a time budget affords; it is decided at the
run's first full eval and kept in the run's state, so a resume, another batch size or
another budget scores the same windows and "best" always compares like with like. The
first eval of a new run (step 0, where the loss is about ln(vocabulary) anyway) scores at
most FIRST_EVAL_WINDOWS of them, so the first training step comes within seconds; it is
marked as such and never counts as best.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from toygpt_cli.budget import Budget
from toygpt_cli.config import TrainConfig
from toygpt_cli.device import resolve_dtype
from toygpt_cli.evaluate import LossSum, fixed_windows, window_losses
from toygpt_cli.events import Notice, PhaseProgress, PhaseStarted, SampleWritten
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.sample import sample_text

EVAL_CHUNK = 64  # windows per forward pass
FIRST_EVAL_WINDOWS = 512  # per split, at step 0 of a new run


class PeriodicEval:
    def __init__(
        self, model, data: dict[str, torch.Tensor], block_size: int, cfg: TrainConfig,
        dtype: str, tokenizer, emit: Callable[[object], None], dist: Distributed, stop,
    ):  # fmt: skip
        self.model, self.data, self.block, self.cfg = model, data, block_size, cfg
        self.dtype, self.tokenizer, self.emit, self.dist, self.stop = (
            dtype, tokenizer, emit, dist, stop,
        )  # fmt: skip
        self.planned = cfg.eval_iters * cfg.batch_size * dist.world_size

    def windows(self, split: str, count: int) -> torch.Tensor:
        seed = self.cfg.seed + (1 if split == "train" else 2)
        return fixed_windows(len(self.data[split]), count, self.block, seed)

    def size(self, budget: Budget, state) -> int:
        """The windows per split of every full eval of the run (decided once)."""
        budget.eval_windows = state.eval_windows or self.planned
        if state.eval_windows is None:
            fits = budget.affordable_windows(self.planned, EVAL_CHUNK * self.dist.world_size)
            state.eval_windows = self.dist.min(fits)  # every rank scores the same windows
            if state.eval_windows < self.planned:
                self.emit(
                    Notice(
                        f"evals cut to {state.eval_windows} of {self.planned} windows per "
                        f"split to fit the {budget.max_time:g} s budget"
                    )
                )
        budget.eval_windows = state.eval_windows
        return state.eval_windows

    def losses(self, step: int, budget: Budget, state) -> tuple[dict[str, float], int]:
        """Mean loss per split, and the windows per split it scored. Raises EvalStopped
        (from train.py) when a stop is asked for meanwhile."""
        count = self.size(budget, state)
        if step == 0 and state.last_eval_step < 0:  # a new run's first eval: quick
            count = min(count, FIRST_EVAL_WINDOWS)
        t0 = time.perf_counter()
        if self.dist.is_main:
            self.emit(PhaseStarted("eval", step, 2 * count))
        losses = {s: self._split_loss(s, count, i * count) for i, s in enumerate(("train", "val"))}
        budget.eval_took(time.perf_counter() - t0, count)
        return losses, count

    def probe(self, budget: Budget, state) -> None:
        """Time a chunk of windows, so a time budget knows what an eval costs before the
        first one: how many windows fit, and when to stop so that the final eval fits.
        Each process times the chunk alone; an eval shares its windows among them."""
        probe = self.windows("train", EVAL_CHUNK)
        self._loss("train", probe)  # a cold first pass would overstate the cost
        t0 = time.perf_counter()
        self._loss("train", probe)
        budget.eval_took((time.perf_counter() - t0) / self.dist.world_size, len(probe) / 2)
        self.size(budget, state)
        budget.eval_cost = budget.eval_rate * 2 * budget.eval_windows

    def _split_loss(self, split: str, count: int, done: int) -> float:
        from toygpt_cli.train import EvalStopped

        windows = self.dist.shard(self.windows(split, count))
        total = LossSum()
        for i in range(0, len(windows), EVAL_CHUNK):
            if self.dist.agree_any(self.stop.signal is not None):
                raise EvalStopped
            part = windows[i : i + EVAL_CHUNK]
            total.add(*window_losses(self.model, self.data[split], part, self.block, self.dtype))
            if self.dist.is_main:
                self.emit(PhaseProgress("eval", done + i + len(part), 2 * count))
        return self.dist.pooled_mean(total.total(), total.count)

    def _loss(self, split: str, starts: torch.Tensor) -> float:
        total = LossSum()
        total.add(*window_losses(self.model, self.data[split], starts, self.block, self.dtype))
        return total.mean()

    def sample(self, step: int, budget: Budget, device) -> None:
        """The per-eval sample (fixed seed); stops for good once one costs over 5% of the
        time budget."""
        self.emit(PhaseStarted("sample", step))
        t0 = time.perf_counter()
        n = self.model.num_params(tables=False)
        dtype = resolve_dtype(self.cfg.dtype, device, generation=True, n_params=n)
        text = sample_text(
            self.model, self.tokenizer, max_new_tokens=self.cfg.sample_chars,
            seed=self.cfg.seed, dtype=dtype,
        )[0]  # fmt: skip
        if budget.sample_took(time.perf_counter() - t0):
            self.emit(Notice("per-eval samples skipped from now on: each costs over 5% of the "
                             "time budget"))  # fmt: skip
        self.emit(SampleWritten(step, self.cfg.seed, text))
