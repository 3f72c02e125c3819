"""What a periodic eval measures while training: the fixed windows each split is scored on,
cut to fit a time budget, and the per-eval sample. The Trainer decides when an eval is due
and what follows it (best-so-far, checkpoints); this module measures and reports progress
through the Trainer's events."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from toygpt_cli.budget import Budget
from toygpt_cli.device import resolve_dtype
from toygpt_cli.evaluate import estimate_loss, fixed_windows
from toygpt_cli.events import Notice, PhaseProgress, PhaseStarted, SampleWritten
from toygpt_cli.parallel.distributed import Distributed
from toygpt_cli.sample import sample_text

EVAL_CHUNK = 64  # windows per forward pass in periodic evals


class PeriodicEval:
    """Scores the model on the same windows at every eval. The windows come from their own
    generators (seed + 1 for train, seed + 2 for val), so evals never disturb the training
    RNG streams: that is what keeps resume exact."""

    def __init__(
        self,
        trainer,
        data: dict[str, torch.Tensor],
        emit: Callable[[object], None],
        dist: Distributed,
    ):
        self.trainer, self.data, self.emit, self.dist = trainer, data, emit, dist
        cfg, block = trainer.cfg, trainer.model_cfg.block_size
        n = cfg.eval_iters * cfg.batch_size
        self.windows = {
            s: fixed_windows(len(d), n, block, cfg.seed + i + 1)
            for i, (s, d) in enumerate(data.items())
        }

    def losses(self, step: int, budget: Budget) -> dict[str, float]:
        """Mean loss per split; under a time budget (timed by `probe` before the first step)
        every eval scores only as many windows as the budget affords."""
        t0 = time.perf_counter()
        planned = len(self.windows["train"])
        # Every rank scores the same number of windows (the smallest any rank's clock allows).
        count = self.dist.min(budget.eval_windows(planned, EVAL_CHUNK * self.dist.world_size))
        if count < planned and not budget.told_shrunk:
            budget.told_shrunk = True
            self.emit(
                Notice(
                    f"evals cut to {count} of {planned} windows per split to fit the "
                    f"{budget.max_time:g} s budget"
                )
            )
        if self.dist.is_main:
            self.emit(PhaseStarted("eval", step, 2 * count))
        losses = {s: self._split_loss(s, count, done=i * count) for i, s in enumerate(self.data)}
        budget.eval_took(time.perf_counter() - t0, count)
        return losses

    def probe(self, budget: Budget) -> None:
        """Time one chunk of windows, so that a time budget knows what an eval costs before
        the first one: how many windows fit, and when to stop so that the final eval fits."""
        probe = self.windows["train"][:EVAL_CHUNK]
        self._loss("train", probe)  # a cold first pass would overstate the cost: time the second
        t0 = time.perf_counter()
        self._loss("train", probe)
        budget.eval_took(time.perf_counter() - t0, len(probe) / 2)
        count = budget.eval_windows(len(self.windows["train"]), EVAL_CHUNK * self.dist.world_size)
        budget.eval_cost = budget.eval_rate * 2 * count  # the expected cost of a whole eval

    def _split_loss(self, split: str, count: int, done: int) -> float:
        windows = self.dist.shard(self.windows[split][:count])
        total, n = 0.0, 0
        for i in range(0, len(windows), EVAL_CHUNK * 4):
            part = windows[i : i + EVAL_CHUNK * 4]
            total += self._loss(split, part) * len(part)
            n += len(part)
            if self.dist.is_main:
                self.emit(PhaseProgress("eval", done + i + len(part), 2 * count))
        return self.dist.mean(total / max(n, 1))

    def _loss(self, split: str, starts: torch.Tensor) -> float:
        t = self.trainer
        return estimate_loss(t.model, self.data[split], starts, t.model_cfg.block_size, t.dtype)

    def sample(self, step: int, budget: Budget) -> None:
        """The per-eval sample (fixed seed); stops for good once one costs over 5% of the
        time budget."""
        trainer, cfg = self.trainer, self.trainer.cfg
        self.emit(PhaseStarted("sample", step))
        t0 = time.perf_counter()
        n_params = trainer.model.num_params()
        dtype = resolve_dtype(cfg.dtype, trainer.device, generation=True, n_params=n_params)
        text = sample_text(
            trainer.model, trainer.corpus.tokenizer, max_new_tokens=cfg.sample_chars,
            seed=cfg.seed, dtype=dtype,
        )[0]  # fmt: skip
        if budget.sample_took(time.perf_counter() - t0):
            self.emit(Notice("per-eval samples skipped from now on: each costs over 5% of the "
                             "time budget"))  # fmt: skip
        self.emit(SampleWritten(step, cfg.seed, text))
