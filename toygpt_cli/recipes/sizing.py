"""Presets sized to the machine and the budget.

A time-budget preset does best with the largest model that still gets enough optimizer
steps in its budget: too small a model stops learning early, too large a one takes too few
steps. How many steps a shape gets depends on the machine (bfloat16 matrix units, float32
only, a GPU) and on the shape itself (on a CPU, small models are bound by per-operation
costs, so halving the width does not double the steps). So the presets that have a LADDER
time a few training steps of each of its shapes on this machine, largest first, and train
the first (largest) one expected to make STEPS_WANTED steps in the budget, or the smallest.

Measured (docs/results.md) on a 2-core AMD EPYC Zen 4, whole val split, in bfloat16 on 2
threads and in float32 on 1 thread (the throughput of a 2-core float32-only Zen 3):
the best shapes made about 500-850 steps in 20 s and 950-1,400 in 60 s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from toygpt_cli.config import ModelConfig, TrainConfig

# The shapes a preset may take, smallest to largest; the largest is the preset's own.
LADDERS: dict[str, list[dict[str, int]]] = {
    "cpu-1m": [
        {"n_layer": 2, "n_embd": 64},
        {"n_layer": 2, "n_embd": 96},
        {"n_layer": 2, "n_embd": 128},
        {"n_layer": 3, "n_embd": 128},
        {"n_layer": 4, "n_embd": 128},
    ],
}
SHAPE_FIELDS = ("n_layer", "n_embd")

# Steps the chosen shape should make, by budget in seconds (log-log in between, constant
# past either end).
STEPS_WANTED = ((20.0, 500.0), (60.0, 1000.0))

PROBE_STEPS = 2  # timed steps per shape, after one warm-up step


def steps_wanted(seconds: float) -> float:
    (t0, s0), (t1, s1) = STEPS_WANTED[0], STEPS_WANTED[-1]
    if seconds <= t0:
        return s0
    if seconds >= t1:
        return s1
    for (a, sa), (b, sb) in zip(STEPS_WANTED, STEPS_WANTED[1:], strict=False):
        if a <= seconds <= b:
            f = math.log(seconds / a) / math.log(b / a)
            return math.exp(math.log(sa) + f * math.log(sb / sa))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Sizing:
    shape: dict[str, int]  # the chosen n_layer and n_embd
    step_seconds: float  # its probed step time
    wanted: float  # steps wanted in the budget
    probed: list[dict[str, Any]]  # every shape timed: its fields and step seconds

    def line(self, budget: float) -> str:
        """What was chosen and why, in a line that fits 80 columns."""
        return (
            f"sized to this machine: {self.shape['n_layer']} layers x {self.shape['n_embd']}, "
            f"~{budget / self.step_seconds:,.0f} steps of {self.step_seconds * 1000:.0f} ms"
        )

    def record(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "step_ms": round(self.step_seconds * 1000, 2),
            "steps_wanted": round(self.wanted),
            "probed": self.probed,
        }


def fit_to_machine(
    preset: str,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    time_step: Callable[[ModelConfig, TrainConfig], float] | None = None,
) -> tuple[ModelConfig, Sizing]:
    """The preset's ladder shape for this machine and train_cfg.max_time. `time_step`
    gives seconds per optimizer step of a configuration (a probe by default)."""
    time_step = time_step or probe_step
    wanted = steps_wanted(train_cfg.max_time)
    ladder = LADDERS[preset]
    probed = []
    for shape in reversed(ladder):
        cfg = replace(model_cfg, **shape)
        seconds = time_step(cfg, train_cfg)
        probed.append({**shape, "step_ms": round(seconds * 1000, 2)})
        if train_cfg.max_time / seconds >= wanted or shape is ladder[0]:
            return cfg, Sizing(shape, seconds, wanted, probed)
    raise AssertionError("unreachable")


def probe_step(model_cfg: ModelConfig, train_cfg: TrainConfig) -> float:
    """Seconds per optimizer step of this configuration on random text, no run folder."""
    from toygpt_cli.recipes.bench import synthetic_corpus
    from toygpt_cli.train import Trainer

    corpus = synthetic_corpus(chars=50_000)
    cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    trainer = Trainer(cfg, replace(train_cfg, sample_chars=0, compile=False), corpus)
    trainer.train_step()[0].item()
    start = time.perf_counter()
    for _ in range(PROBE_STEPS):
        trainer.train_step()[0].item()
    return (time.perf_counter() - start) / PROBE_STEPS
