"""Generating text: the key/value cache, picking each next character, and streaming.

Each step turns the last position's logits into a distribution over the vocabulary and
draws one character from it. The filters apply in this order, each only when asked:

    1. temperature   logits / t (t = 0 is greedy: always the likeliest character)
    2. top_k         keep the k likeliest characters
    3. top_p         keep the likeliest characters whose probabilities add up to p (nucleus)
    4. min_p         keep the characters at least min_p times as likely as the likeliest

The likeliest character always survives, so there is always something to draw.
`stream_samples` yields each step's characters as they are drawn; `sample_text` collects
them. Both draw from the same generator in the same order: the same seed gives the same
text whichever is used.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import torch

from toygpt_cli.config import SampleConfig
from toygpt_cli.device import autocast
from toygpt_cli.errors import ToygptError


def new_seed() -> int:
    """A fresh seed to report, so that any sample can be drawn again."""
    return secrets.randbelow(2**31)


class KVCache:
    """The keys and values of the positions generated so far, for every layer: what lets
    generation feed the model one new position per step instead of the whole context.

    A layer keeps at most `window` (block_size) positions. When a new one comes in, the
    oldest goes: a rolling cache. Keys are stored rotated by their own positions, so with
    rotary positions the angle between a new query and a cached key stays right, and a
    rolling cache computes exactly what the model computes for a sequence longer than
    block_size (sliding-window attention). Memory does not grow with the text's length.
    """

    def __init__(self, n_layer: int, window: int):
        self.window = window
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.last_ids: torch.Tensor | None = None  # (B, 1): the character before the new ones

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Add the new positions' k, v (B, nh, T, hs); returns every key and value the new
        queries can see: the cached ones (at most window - 1 back) and the new ones."""
        if self.keys[layer] is not None:
            k = torch.cat((self.keys[layer], k), dim=2)
            v = torch.cat((self.values[layer], v), dim=2)
        self.keys[layer], self.values[layer] = k[:, :, -self.window :], v[:, :, -self.window :]
        visible = self.window + k.size(2) - 1  # what the first new query can still see
        return k[:, :, -visible:], v[:, :, -visible:]


def pick(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    min_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One character id per row from the last position's logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the likelier ones
        drop = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before >= top_p)
        probs = probs.masked_fill(drop, 0.0)
    if min_p > 0.0:
        probs = probs.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), 0.0)
    if not torch.isfinite(probs).all():
        raise ToygptError("the model's output is not a number (its weights hold NaN or inf)")
    if generator is not None and generator.device != probs.device:
        probs = probs.cpu()  # a CPU generator gives the same draws on every device
    return torch.multinomial(probs, 1, generator=generator)


@torch.inference_mode()
def generate_tokens(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    generator: torch.Generator | None = None,
    dtype: str = "float32",
    use_cache: bool = True,
    **filters,
) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens new id columns (B, 1) that extend idx (B, T), one per step.

    With the cache (the default), each step feeds one new position:
    - rotary positions: the whole prompt is read first (block_size positions at a time),
      then the cache rolls; the text is exactly that of the model reading everything
      generated so far with its sliding attention window;
    - learned positions cannot go past block_size: once the context is full, every step
      reads the last block_size characters afresh, at positions 0 .. block_size - 1.
    `use_cache=False` reads the last block_size characters afresh at every step (the
    straightforward method): the same text for learned positions, and past block_size a
    nearly equal but different computation for rotary ones with more than one layer or a
    pair embedding (a cached key keeps the context it was computed in; a recomputed one
    does not, and a recomputed window's first character loses the one before it).
    """
    was_training = model.training
    model.eval()
    block = model.config.block_size
    rolling = use_cache and model.config.pos == "rope"

    def last_logits(ids, cache=None, position=None):
        # Autocast per step: a `with` held across `yield` would leak into the caller.
        with autocast(ids.device, dtype):
            return model(ids, cache=cache, position=position)[0][:, -1, :]

    try:
        cache = KVCache(model.config.n_layer, block) if use_cache else None
        if rolling:
            for start in range(0, idx.size(1), block):  # the whole prompt, a block at a time
                logits = last_logits(idx[:, start : start + block], cache, start)
            position, ctx = idx.size(1), None
        else:
            ctx = idx[:, -block:]
            logits = last_logits(ctx, cache, 0 if cache is not None else None)
            position = ctx.size(1)
        for i in range(max_new_tokens):
            nxt = pick(logits, generator=generator, **filters).to(idx.device)  # (B, 1)
            yield nxt
            if i + 1 == max_new_tokens:
                break
            if ctx is not None:
                ctx = torch.cat((ctx, nxt), dim=1)[:, -block:]
            if cache is not None and (rolling or position < block):
                logits = last_logits(nxt, cache, position)  # one new position
                position += 1
            else:  # the window slides: read it afresh from position 0
                logits = last_logits(ctx)
    finally:
        model.train(was_training)


def generate(model, idx: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
    """idx (B, T) extended by max_new_tokens sampled ids; rows are independent samples."""
    return torch.cat([idx, *generate_tokens(model, idx, max_new_tokens, **kw)], dim=1)


def start_ids(tokenizer, prompt: str) -> list[int]:
    """The ids generation starts from: the prompt, or a newline (or the vocabulary's first
    character) for an empty one, which is not part of the text."""
    start = prompt or ("\n" if "\n" in tokenizer.stoi else tokenizer.chars[0])
    return tokenizer.encode(start)


def stream_samples(
    model,
    tokenizer,
    *,
    prompt: str = "",
    config: SampleConfig | None = None,
    dtype: str = "float32",
    **settings,
) -> Iterator[list[str]]:
    """Yield, per generated position, the new character of each sample (drawn as one batch).

    `config` (or its fields as keywords: temperature=0.8, seed=1, ...) says how; a seed of
    -1 or None draws a fresh one.
    """
    cfg = config or SampleConfig(**{k: -1 if k == "seed" and v is None else v
                                     for k, v in settings.items()})  # fmt: skip
    cfg.validate()
    device = next(model.parameters()).device
    idx = torch.tensor([start_ids(tokenizer, prompt)] * cfg.num_samples, device=device)
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.seed >= 0 else None
    for column in generate_tokens(
        model, idx, cfg.max_new_tokens, generator=generator, dtype=dtype, **cfg.filters()
    ):
        yield [tokenizer.chars[i] for i in column[:, 0].tolist()]


def sample_text(model, tokenizer, *, prompt: str = "", **kw) -> list[str]:
    """The finished samples (each including the prompt), as `stream_samples` draws them."""
    parts: list[list[str]] = []
    for chars in stream_samples(model, tokenizer, prompt=prompt, **kw):
        parts = parts or [[] for _ in chars]
        for part, c in zip(parts, chars, strict=True):
            part.append(c)
    return [prompt + "".join(part) for part in parts]


def effective_top_k(top_k: int, vocab_size: int) -> str | None:
    """A note when top_k changes nothing (at or above the vocabulary size)."""
    if top_k and top_k >= vocab_size:
        return f"--top-k {top_k} has no effect: the vocabulary has {vocab_size} characters"
    return None
