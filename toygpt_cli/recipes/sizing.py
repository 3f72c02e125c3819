"""Presets sized to the machine and the budget.

A time-budget preset does best with the largest model that still gets enough optimizer
steps in its budget: too small a model stops learning early, too large a one takes too few
steps. How many steps a shape gets depends on the machine (bfloat16 matrix units, float32
only, a GPU) and on the shape itself (on a CPU, small models are bound by per-operation
costs, so halving the width does not double the steps). Regularisation too: dropout pays
only once a run makes enough steps to overfit. So a preset with a Ladder times a few
training steps of each rung on this machine, largest first, and trains the first rung
expected to make the steps its budget wants, or the smallest.

Measured (docs/results.md) on a 2-core AMD EPYC Zen 4, whole val split, in bfloat16 on 2
threads and in float32 on 1 thread (the throughput of a 2-core float32-only Zen 3): the
best shapes of `cpu-1m` made about 500-850 steps in 20 s and 950-1,400 in 60 s; `cpu`'s
dropout 0.1 helped at 2,400-3,000 steps in ten minutes (1.455-1.465 against 1.481 without)
and hurt at 1,200 (1.517 against 1.480). Compiled, on a 2-core Xeon with ~3,500 steps,
dropout 0.05 did better than 0.1 (1.4359 against 1.4429, 5 runs each), and Muon's weight
decay of 0.2 better than 0.05 (1.4187, 3 runs, against 1.4344, 14 runs), where a Zen 4
making 2,300-2,450 uncompiled steps had scored worse with 0.1 than with 0.05 (one run each).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from toygpt_cli.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Ladder:
    rungs: list[dict[str, Any]]  # options, smallest to largest; the last = the preset's own
    wanted: tuple[tuple[float, float], ...]  # (budget seconds, steps a rung should make)
    more: tuple[float, ...] = ()  # per rung, smallest first: a factor on those steps (1)

    def wanted_by(self, rung: int, seconds: float) -> float:
        """The steps rung number `rung` (0: the smallest) should make in `seconds`."""
        factor = self.more[rung] if rung < len(self.more) else 1.0
        return self.steps_wanted(seconds) * factor

    @property
    def fields(self) -> set[str]:
        return {k for rung in self.rungs for k in rung}

    def steps_wanted(self, seconds: float) -> float:
        """Interpolated log-log between the measured points, constant past either end."""
        points = self.wanted
        if seconds <= points[0][0]:
            return points[0][1]
        for (a, sa), (b, sb) in zip(points, points[1:], strict=False):
            if seconds <= b:
                f = math.log(seconds / a) / math.log(b / a)
                return math.exp(math.log(sa) + f * math.log(sb / sa))
        return points[-1][1]


def apply_rung(
    rung: dict[str, Any], model_cfg: ModelConfig, train_cfg: TrainConfig
) -> tuple[ModelConfig, TrainConfig]:
    """The configurations with a rung's options set: model options and training ones."""
    model = {k: v for k, v in rung.items() if k in ModelConfig.__dataclass_fields__}
    train = {k: v for k, v in rung.items() if k not in model}
    return replace(model_cfg, **model), replace(train_cfg, **train)


LADDERS: dict[str, Ladder] = {
    "cpu-1m": Ladder(
        [
            {"n_layer": 2, "n_embd": 64},
            {"n_layer": 2, "n_embd": 96},
            {"n_layer": 2, "n_embd": 128},
            {"n_layer": 3, "n_embd": 128},
            {"n_layer": 4, "n_embd": 128},
        ],
        ((20.0, 500.0), (60.0, 1000.0)),
    ),
    # Dropout from 1,800 steps: between 1,200 (it hurt) and 2,400 (it helped). Muon's weight
    # decay of 0.2 from 2,880: it helped at 3,300-3,700 compiled steps, and 0.1 scored worse
    # than 0.05 at 2,300-2,450 uncompiled ones.
    "cpu": Ladder(
        [
            {"dropout": 0.0, "muon_weight_decay": 0.05},
            {"dropout": 0.05, "muon_weight_decay": 0.05},
            {"dropout": 0.05, "muon_weight_decay": 0.2},
        ],
        ((600.0, 1800.0),),
        more=(1.0, 1.0, 1.6),
    ),
}

# Timed steps per rung, after one warm-up step. The fastest counts: a step slowed by
# something else on the machine (a page fault, another program's burst) would otherwise
# decide the model of the whole run.
PROBE_STEPS = 3

# The probe times a step uncompiled; a compiled one ran 1.3x faster in float32 and 1.5x in
# bfloat16 at the `cpu` preset's shape (2-core Xeon): a compiled run's steps are counted
# with the smaller, where its budget earns the compiling back.
COMPILED_SPEEDUP = 1.3

# A preset's --compile pays from this budget on: compiling took about 45 s on two CPU cores
# (a first run; later ones find it cached), and made the `cpu` preset's step 1.3-1.5x faster.
# Without a budget, from this many steps (about 0.2-0.3 s each uncompiled on such a CPU).
COMPILE_PAYS_FROM = 300.0
COMPILE_PAYS_FROM_STEPS = 1000


def compile_pays(train_cfg: TrainConfig) -> bool:
    """Whether the run is long enough to earn back compiling: a budget of 5 minutes or
    more, or, without one, 1,000 steps or more."""
    if train_cfg.max_time > 0:
        return train_cfg.max_time >= COMPILE_PAYS_FROM
    return train_cfg.iters >= COMPILE_PAYS_FROM_STEPS


@dataclass(frozen=True)
class Sizing:
    chosen: dict[str, Any]  # the rung trained
    model: ModelConfig  # the model it makes
    step_seconds: float  # its probed step time
    wanted: float  # steps wanted in the budget
    probed: list[dict[str, Any]]  # every rung timed: its options and step time
    train: TrainConfig | None = None  # the training configuration, with the rung's options

    def line(self, budget: float, compiled: bool = False) -> str:
        """What was chosen and why, in a line that fits 80 columns. The probe times the
        step uncompiled: a compiled run makes more steps than that."""
        m = self.model
        shape = {"n_layer", "n_embd"} & set(self.chosen)  # the shape is the machine's
        parts = [f"{m.n_layer} layers x {m.n_embd}"] if shape else []
        parts.append(f"dropout {m.dropout:g}")
        if (
            "muon_weight_decay" in self.chosen
            and getattr(self.train, "optimizer", "muon") == "muon"
        ):
            parts.append(f"Muon decay {self.chosen['muon_weight_decay']:g}")
        head = "sized to this machine: " + ", ".join(parts)
        if compiled:
            return f"{head}, {self.step_seconds * 1000:.0f} ms a step uncompiled"
        steps = budget / self.step_seconds
        return f"{head}, ~{steps:,.0f} steps of {self.step_seconds * 1000:.0f} ms"

    def record(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
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
    """The preset's rung for this machine and train_cfg.max_time: its model, and a Sizing
    that holds the training configuration too. `time_step` gives seconds per optimizer
    step of a configuration (a probe by default)."""
    time_step = time_step or probe_step
    ladder = LADDERS[preset]
    speedup = COMPILED_SPEEDUP if train_cfg.compile and compile_pays(train_cfg) else 1.0
    probed = []
    for number in reversed(range(len(ladder.rungs))):
        rung = ladder.rungs[number]
        cfg, train = apply_rung(rung, model_cfg, train_cfg)
        seconds = time_step(cfg, train)
        probed.append({**rung, "step_ms": round(seconds * 1000, 2)})
        wanted = ladder.wanted_by(number, train_cfg.max_time)
        if train_cfg.max_time * speedup / seconds >= wanted or number == 0:
            return cfg, Sizing(rung, cfg, seconds, wanted, probed, train)
    raise AssertionError("unreachable")


def probe_step(model_cfg: ModelConfig, train_cfg: TrainConfig) -> float:
    """Seconds per optimizer step of this configuration on random text, no run folder."""
    from toygpt_cli.recipes.bench import synthetic_corpus
    from toygpt_cli.train import Trainer

    corpus = synthetic_corpus(chars=50_000)
    cfg = replace(model_cfg, vocab_size=corpus.tokenizer.vocab_size)
    trainer = Trainer(cfg, replace(train_cfg, sample_chars=0, compile=False), corpus)
    return min(step_times(trainer, PROBE_STEPS))


def seconds_per_step(trainer, steps: int, warmup: int = 1) -> float:
    """Mean seconds per optimizer step of `trainer`, after `warmup` steps (a compiled step
    compiles then)."""
    return sum(step_times(trainer, steps, warmup)) / steps


def step_times(trainer, steps: int, warmup: int = 1) -> list[float]:
    """Seconds each of `steps` optimizer steps of `trainer` took, after `warmup` steps."""
    for _ in range(warmup):
        trainer.train_step()[0].item()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step()[0].item()
        times.append(time.perf_counter() - start)
    return times
