"""The configurations, every option declared once (declare.py says how):

- `ModelConfig`: the network's shape and variant (fixed for the life of a run);
- `TrainConfig`: how it is trained (each field says whether a resume may change it);
- `SampleConfig`: how characters are drawn.

The command line (`--help`), the CLI reference (docs/cli.md), config files and the resume
check all read these declarations, so adding a hyper-parameter means: the field here, the
code that uses it, a test. The defaults are those of the one-file project toygpt grew from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from toygpt_cli.declare import (
    CHANGE,
    FIXED,
    STEPS,
    Opt,
    check,
    field_type,
    format_default,
    option,
    validate,
)
from toygpt_cli.errors import OptionError, UsageError

__all__ = [  # the declarations' machinery, re-exported for the configurations' users
    "CHANGE", "FIXED", "STEPS", "Opt", "check", "field_type", "format_default", "option",
    "validate",
]  # fmt: skip

RUN, MODEL, TRAINING, OPTIMIZER = "Run", "Model", "Training", "Schedule and optimizer"
MACHINE = "Machine"  # where and how fast: shared by every command that runs the model
MAX_TIME = 365 * 24 * 3600.0  # seconds: a budget past a year is a typo


def parse_duration(value: Any) -> float:
    """'90', '90s', '10m', '1.5h' (or a number of seconds) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600}
    text = str(value).strip().lower()
    scale = units.get(text[-1:])
    try:
        return float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise OptionError(
            f"max_time must look like 90s, 10m or 1h, got {value!r}", "max_time"
        ) from None


MAX_STEPS = 2**53  # step counts stay exact in a JSON (float64) number up to here
MAX_PARAMETERS = 20e9  # about 80 GB of float32 weights: far past any model this tool is for


BIGRAM_MAX_ROWS = 1 << 16  # past 255 characters, pairs share rows (hashed)


def bigram_rows(vocab_size: int) -> int:
    """Rows of the pair embedding: one per (previous or none, current) pair, at most
    BIGRAM_MAX_ROWS (model.bigram_index numbers them)."""
    return min((vocab_size + 1) ** 2, BIGRAM_MAX_ROWS)


@dataclass
class ModelConfig:
    """The transformer's shape. Changing any of these makes a different model."""

    vocab_size: int = option(65, "Vocabulary size (from the data).", MODEL, FIXED, cli=False,
                             min=1, max=0x110000)  # fmt: skip
    block_size: int = option(16, "Context length in characters.", MODEL, FIXED, min=1,
                             max=1 << 20)  # fmt: skip
    n_embd: int = option(384, "Model width.", MODEL, FIXED, min=1, max=1 << 16)
    n_layer: int = option(4, "Transformer blocks.", MODEL, FIXED, min=1, max=1024)
    n_head: int = option(6, "Attention heads (must divide n_embd).", MODEL, FIXED, min=1,
                         max=1 << 16)  # fmt: skip
    dropout: float = option(0.2, "Dropout probability.", MODEL, FIXED, min=0.0, below=1.0)
    attn_dropout: bool = option(
        True,
        "Dropout on the attention weights too (off: on the residual branches only; on CPUs "
        "attention dropout takes a slower attention path, 1.8x the step at block 256).",
        MODEL,
        FIXED,
    )
    emb_dropout: bool = option(
        False, "Dropout on the embeddings too, as nanoGPT applies it.", MODEL, FIXED
    )
    # "default": PyTorch's own Linear/Embedding initialisation, which the seed's reported
    # losses depend on; "normal": N(0, 0.02) as in nanoGPT/GPT-2.
    init: str = option(
        "default",
        "Weight init: default (PyTorch's own) or normal (N(0, 0.02), nanoGPT's).",
        MODEL,
        FIXED,
        choices=("default", "normal"),
    )
    tie_weights: bool = option(False, "Share input and output embeddings.", MODEL, FIXED)
    pos: str = option(
        "learned",
        "Positions: learned (an embedding per position) or rope (rotary; past block_size "
        "each position attends to the block_size before it).",
        MODEL,
        FIXED,
        choices=("learned", "rope"),
    )
    # "modern": the small-GPT speedrun recipe (modded-nanogpt, nanochat) in one choice.
    arch: str = option(
        "gpt2",
        "gpt2 (LayerNorm, ReLU MLP, biases), nanogpt (LayerNorm and GELU without "
        "biases) or modern (RMSNorm, ReLU-squared MLP, normalised queries and keys, no "
        "biases, zero-initialised output projections).",
        MODEL,
        FIXED,
        choices=("gpt2", "nanogpt", "modern"),
    )
    logit_softcap: float = option(
        0.0, "Soft-cap the logits: cap * tanh(logits / cap) (0: off).", MODEL, FIXED, min=0.0
    )
    # Small-model tricks from the speedrun literature, each off by default (model.py says
    # what each computes; docs/results.md what each measured).
    attn_scale: float = option(
        0.0,
        "Attention score scale (0: 1/sqrt(head size)); with arch modern the normalised "
        "scores are at most scale x head size.",
        MODEL,
        FIXED,
        min=0.0,
        max=1e3,
    )
    bigram: bool = option(
        False, "Add an embedding of each (previous, current) character pair.", MODEL, FIXED
    )
    x0_skip: bool = option(
        False,
        "Each block reads a learned mix of the residual stream and the first embedding.",
        MODEL,
        FIXED,
    )

    def validate(self) -> None:
        validate(self)
        size = self.size_estimate()
        if size > MAX_PARAMETERS:
            raise OptionError(
                f"a model of about {size / 1e9:,.0f}B parameters is more than toygpt trains "
                f"(at most {MAX_PARAMETERS / 1e9:.0f}B): lower n_embd or n_layer",
                "n_embd",
                "n_layer",
            )
        if self.n_embd % self.n_head:
            raise OptionError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_head {_divisor_near(self.n_embd, self.n_head)}",
                "n_embd",
                "n_head",
            )
        head_size = self.n_embd // self.n_head
        if self.pos == "rope" and head_size % 2:
            raise OptionError(
                f"pos rope needs an even head size (n_embd / n_head), got "
                f"{self.n_embd}/{self.n_head} = {head_size}",
                "pos",
                "n_embd",
                "n_head",
            )

    def size_estimate(self) -> float:
        """Parameters, to within a few percent (12 C^2 per block, the embeddings, the
        head), without building anything."""
        C = self.n_embd
        positions = self.block_size if self.pos == "learned" else 0
        rows = 2 * self.vocab_size + positions
        rows += bigram_rows(self.vocab_size) if self.bigram else 0
        return 12.0 * C * C * self.n_layer + rows * C


@dataclass
class TrainConfig:
    """How a model is trained."""

    batch_size: int = option(32, "Sequences per step (per process).", TRAINING, min=1)
    iters: int = option(
        5100, "Optimizer steps of a new run (0: no limit, with max_time).", TRAINING, STEPS, min=0,
        max=MAX_STEPS,
    )  # fmt: skip
    eval_interval: int = option(300, "Steps between evals.", TRAINING, min=1)
    eval_iters: int = option(
        200,
        "Batches per split in each periodic eval (with several processes, of their batches "
        "together; every eval of a run scores the same windows).",
        TRAINING,
        FIXED,
        min=1,
        max=100_000,  # 500x the default: past this an eval would take hours even on a GPU
    )
    seed: int = option(1337, "Random seed.", TRAINING, FIXED, min=0)
    data_order: str = option(
        "random",
        "random (each window drawn anywhere in the text) or epochs (each pass over the text "
        "takes every window once, in a new order).",
        TRAINING,
        choices=("random", "epochs"),
    )
    device: str = option(
        "auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.", MACHINE
    )
    dtype: str = option(
        "auto",
        "auto, float32, bfloat16 or float16 (auto: bf16 where the hardware runs it fast).",
        MACHINE,
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    val_fraction: float = option(
        0.1, "Share of the text held out for validation.", TRAINING, FIXED, above=0.0, below=1.0
    )
    max_time: float = option(
        0.0,
        "Wall-clock budget, e.g. 90s, 10m, 1h (0: none); the schedule fits it.",
        RUN,
        min=0.0,
        parse=parse_duration,
        metavar="DURATION",
    )
    save_every: int = option(
        0, "Extra checkpoint every N steps (0: only at evals and the end).", TRAINING, min=0
    )
    keep: str = option(
        "both",
        "Checkpoints kept: both (ckpt.pt to resume, best.pt to sample), last (ckpt.pt only: "
        "about 3x the weights with AdamW, 2x with Muon, one more with --ema) or best "
        "(best.pt only once the run completes: it cannot be resumed then).",
        TRAINING,
        choices=("both", "last", "best"),
    )
    sample_chars: int = option(
        200, "Characters sampled at each eval (0: none).", TRAINING, min=0, max=100_000
    )
    compile: bool = option(
        False,
        "torch.compile the model: faster steps, after a first step that compiles (a minute "
        "on a small CPU).",
        MACHINE,
    )
    compile_mode: str = option(
        "default",
        "With --compile: default, reduce-overhead (CUDA graphs: the step's kernels launched "
        "as one) or max-autotune.",
        MACHINE,
        choices=("default", "reduce-overhead", "max-autotune"),
    )
    threads: int = option(
        0, "CPU threads (0: torch's choice).", MACHINE, min=0, envvar="TOYGPT_THREADS"
    )
    fit_machine: bool = option(
        True,
        "With a preset sized to the machine (cpu: its dropout and Muon weight decay; cpu-1m: "
        "its depth and width): time a few steps of each choice here and train the largest "
        "that makes enough steps in the budget. --no-fit-machine keeps the preset's own values; an "
        "option you give is kept as given.",
        TRAINING,
    )
    learning_rate: float = option(
        1e-3, "Peak learning rate.", OPTIMIZER, flag="--learning-rate", aliases=("--lr",), above=0.0
    )
    lr_schedule: str = option(
        "constant",
        "constant; cosine decay to min_lr; or wsd: constant, then a straight fall to min_lr "
        "over the last --cooldown of the run.",
        OPTIMIZER,
        choices=("constant", "cosine", "wsd"),
    )
    cooldown: float = option(
        0.4, "With --lr-schedule wsd: the fraction of the run the fall takes.", OPTIMIZER,
        above=0.0, max=1.0,
    )  # fmt: skip
    warmup_iters: int = option(0, "Linear warmup steps.", OPTIMIZER, min=0)
    min_lr: float = option(0.0, "Floor of the decay (cosine or wsd).", OPTIMIZER, min=0.0)
    weight_decay: float = option(0.01, "AdamW weight decay (torch's default).", OPTIMIZER, min=0.0)
    beta2: float = option(
        0.999,
        "AdamW second-moment decay (torch's default); 0.99 suits small batches.",
        OPTIMIZER,
        min=0.0,
        below=1.0,
    )
    decay_matrices_only: bool = option(
        False,
        "Decay only 2-D weights (matrices and embeddings), not biases or norm gains.",
        OPTIMIZER,
    )
    grad_clip: float = option(0.0, "Clip the gradient norm (0: off).", OPTIMIZER, min=0.0)
    # Fixed: AdamW's moments and Muon's momentum cannot stand in for each other, so a run
    # that switched would continue neither run exactly.
    optimizer: str = option(
        "adamw",
        "adamw, or muon: Muon for the weight matrices inside the blocks, AdamW (at "
        "learning_rate) for embeddings, head and vectors.",
        OPTIMIZER,
        FIXED,
        choices=("adamw", "muon"),
    )
    muon_lr: float = option(
        0.02, "Muon's peak learning rate (the schedule scales it like lr).", OPTIMIZER, above=0.0
    )
    muon_momentum: float = option(0.95, "Muon's Nesterov momentum.", OPTIMIZER, min=0.0, below=1.0)
    muon_weight_decay: float = option(
        0.0, "Muon's decoupled weight decay (weight_decay is AdamW's).", OPTIMIZER, min=0.0
    )
    ema: float = option(
        0.0,
        "Keep an exponential moving average of the weights, with this decay per step "
        "(0.99 weighs about the last 100 steps; 0: off). Evals, best.pt, sampling and "
        "export use the average.",
        OPTIMIZER,
        min=0.0,
        below=1.0,
    )

    def validate(self) -> None:
        validate(self)
        if self.max_time > MAX_TIME:
            raise OptionError(
                f"max_time is too long: at most 365 days ({MAX_TIME:,.0f} s), got "
                f"{self.max_time:.3g} s",
                "max_time",
            )
        if self.iters == 0 and not self.max_time:
            raise OptionError(
                "iters must be greater than 0 (or give max_time)", "iters", "max_time"
            )
        if self.min_lr > self.learning_rate:
            raise OptionError(
                f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})",
                "min_lr",
                "learning_rate",
            )
        base = self.device.split(":")[0]
        if base not in ("auto", "cpu", "cuda", "mps"):
            raise OptionError(
                f"device must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}", "device"
            )


# Below this a temperature is greedy decoding in all but name, and dividing logits by it
# overflows float32 (1e-38 made NaN probabilities): ask for 0, which means greedy.
MIN_TEMPERATURE = 1e-4
MAX_NEW_TOKENS = 10_000_000  # one sample's length, and all samples' together (memory)
SAMPLING = "Sampling"


@dataclass
class SampleConfig:
    """How characters are drawn (options of `toygpt sample`)."""

    max_new_tokens: int = option(
        500, "Characters to generate.", SAMPLING, flag="--max-new-tokens", aliases=("-n",),
        min=1, max=MAX_NEW_TOKENS,
    )  # fmt: skip
    temperature: float = option(
        1.0, "Above 1 is wilder, below 1 is safer, 0 is greedy.", SAMPLING, aliases=("-t",),
        min=0.0,
    )  # fmt: skip
    top_k: int = option(0, "Draw only among the k likeliest characters (0: all).", SAMPLING, min=0)
    top_p: float = option(
        1.0,
        "Nucleus: draw among the likeliest characters whose probabilities add up to p (1: all).",
        SAMPLING,
        above=0.0,
        max=1.0,
    )
    min_p: float = option(
        0.0,
        "Drop characters less than min_p times as likely as the likeliest (0: none).",
        SAMPLING,
        min=0.0,
        max=1.0,
    )
    num_samples: int = option(
        1, "Independent samples, drawn as one batch.", SAMPLING, min=1, max=10_000
    )
    seed: int = option(
        -1, "Same seed, same text (-1: a fresh one, printed).", SAMPLING, min=-1, max=2**63 - 1
    )

    def validate(self) -> None:
        validate(self)
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise UsageError(
                f"--temperature {self.temperature} is too small to sample with; "
                f"use 0 for greedy decoding or at least {MIN_TEMPERATURE:g}"
            )
        if self.max_new_tokens * self.num_samples > MAX_NEW_TOKENS:
            raise UsageError(
                f"--max-new-tokens x --num-samples is {self.max_new_tokens * self.num_samples:,}"
                f" characters; at most {MAX_NEW_TOKENS:,} are drawn in one command"
            )

    def filters(self) -> dict[str, Any]:
        """The keyword arguments of `sample.pick`."""
        return {k: getattr(self, k) for k in ("temperature", "top_k", "top_p", "min_p")}


CONFIG_CLASSES = (ModelConfig, TrainConfig)


def declared_fields() -> list[tuple[type, dataclasses.Field, Opt]]:
    """Every configuration field with its declaration, in declaration order."""
    return [(cls, f, f.metadata["opt"]) for cls in CONFIG_CLASSES for f in fields(cls)]


def _divisor_near(n: int, k: int) -> int:
    """The divisor of n nearest to k (looking at most 1000 either side; else 1)."""
    for delta in range(1001):
        for d in (k - delta, k + delta):
            if 1 <= d <= n and n % d == 0:
                return d
    return 1


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a flat {option: value} mapping into ModelConfig and TrainConfig fields."""
    model_names = {f.name for f in fields(ModelConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    model, train = {}, {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key in model_names:
            model[key] = value
        elif key in train_names:
            train[key] = value
        else:
            raise UsageError(f"unknown option {key!r} in configuration")
    return model, train


def build_configs(*layers: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Apply flat option layers left to right (later wins) onto the defaults and validate."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    model_opts, train_opts = split_options(merged)
    model, train = ModelConfig(**model_opts), TrainConfig(**train_opts)
    model.validate()
    train.validate()
    return model, train


def declared(name: str) -> dataclasses.Field:
    """The declaration of a configuration field (ModelConfig or TrainConfig)."""
    for _, f, _ in declared_fields():
        if f.name == name:
            return f
    raise UsageError(f"unknown option {name!r}")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config from a stored dict, ignoring unknown keys from other versions."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})
