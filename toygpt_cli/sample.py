"""Text generation from a trained model: token by token (for streaming) or all at once.

`stream_samples` yields the new characters of every sample as they are drawn;
`sample_text` collects them. Both draw from the same generator in the same order, so the
same seed gives the same text whichever is used.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator

import torch

from toygpt_cli.device import autocast
from toygpt_cli.errors import UsageError

# Below this a temperature is greedy decoding in all but name, and dividing logits by it
# overflows float32 (1e-38 made NaN probabilities): ask for 0, which means greedy.
MIN_TEMPERATURE = 1e-4


def check_sampling(temperature: float, top_k: int | None = None) -> None:
    """One-line errors for settings that would crash or silently misbehave."""
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(
            f"--temperature must be 0 (greedy) or a positive number, got {temperature}"
        )
    if 0 < temperature < MIN_TEMPERATURE:
        raise UsageError(
            f"--temperature {temperature} is too small to sample with; "
            f"use 0 for greedy decoding or at least {MIN_TEMPERATURE:g}"
        )
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")


def new_seed() -> int:
    """A fresh seed to report, so that any sample can be drawn again."""
    return secrets.randbelow(2**31)


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
    """One token id per row from the last position's logits (B, vocab) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # greedy
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):  # top-k larger than the vocab is a no-op
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:
        # A CPU generator gives the same draws on every device; the copy is a few KB.
        probs = probs.cpu()
    return torch.multinomial(probs, 1, generator=generator)


@torch.inference_mode()
def generate_tokens(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    dtype: str = "float32",
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens new token columns (B, 1) that extend idx (B, T), one per step.

    While the context fits in block_size, a key/value cache feeds one new position per
    step. Past that the window slides:
    - learned absolute positions mean every cached key would need its position changed,
      so the whole window is recomputed each step (`use_cache=False` does that from the
      start: the straightforward method, giving the same tokens);
    - rotary positions keep a rolling cache: the oldest position drops out and the new one
      comes in, its keys rotated at its own position, so the angles between queries and
      cached keys stay what they were. Each cached key keeps the context it was computed
      in, so this is sliding-window attention (what the model computes for a sequence
      longer than block_size); with one layer it equals recomputing the window, with more
      the text differs from `use_cache=False`, which recomputes every window from scratch.
    Only the last block_size tokens are kept, so memory does not grow with the length.
    """
    check_sampling(temperature, top_k)
    was_training = model.training
    model.eval()
    block = model.config.block_size
    rolling = use_cache and getattr(model.config, "pos", "learned") == "rope"
    device = idx.device
    ctx = idx[:, -block:]  # (B, <= block)
    cache, seen = None, 0  # seen: the positions the cache has taken in
    try:
        for _ in range(max_new_tokens):
            # Autocast per step: a `with` held across `yield` would leak into the caller.
            with autocast(device, dtype):
                if cache is not None:
                    logits, _, cache = model(ctx[:, -1:], cache=cache, position=seen)
                    seen += 1
                else:
                    logits, _, cache = model(ctx)  # the window, from position 0
                    seen = ctx.size(1)
                if not use_cache or (seen >= block and not rolling):
                    cache = None  # the next step's window no longer starts at position 0
            nxt = _pick(logits[:, -1, :], temperature, top_k, generator).to(device)  # (B, 1)
            yield nxt
            ctx = torch.cat((ctx, nxt), dim=1)[:, -block:]
    finally:
        model.train(was_training)


def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    dtype: str = "float32",
    use_cache: bool = True,
) -> torch.Tensor:
    """idx (B, T) extended by max_new_tokens sampled tokens; rows are independent samples."""
    new = list(
        generate_tokens(
            model,
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
            dtype=dtype,
            use_cache=use_cache,
        )
    )
    return torch.cat([idx, *new], dim=1)


def stream_samples(
    model,
    tokenizer,
    *,
    prompt: str = "",
    max_new_tokens: int = 500,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    dtype: str = "float32",
) -> Iterator[list[str]]:
    """Yield, per generated position, the new character of each of `num_samples` samples.

    The samples are generated as one batch. An empty prompt starts from a newline (or the
    first character of the vocabulary), which is not part of the text.
    """
    check_sampling(temperature, top_k)
    device = next(model.parameters()).device
    start = prompt or ("\n" if "\n" in tokenizer.stoi else tokenizer.chars[0])
    ids = tokenizer.encode(start)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for column in generate_tokens(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        dtype=dtype,
    ):
        yield [tokenizer.chars[i] for i in column[:, 0].tolist()]


def sample_text(
    model,
    tokenizer,
    *,
    prompt: str = "",
    max_new_tokens: int = 500,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    dtype: str = "float32",
) -> list[str]:
    """`num_samples` continuations of `prompt`, generated as one batch; each includes the prompt.

    An empty prompt starts from a newline (or the first character of the vocabulary).
    """
    parts: list[list[str]] = [[] for _ in range(num_samples)]
    for chars in stream_samples(
        model,
        tokenizer,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        dtype=dtype,
    ):
        for part, c in zip(parts, chars, strict=True):
            part.append(c)
    return [prompt + "".join(part) for part in parts]
