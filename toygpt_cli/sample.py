"""Text generation from a trained model."""

from __future__ import annotations

import torch

from toygpt_cli.device import autocast


def _pick(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
    """One token id per row from the last position's logits (B, vocab) -> (B, 1)."""
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
    """Extend idx (B, T) by max_new_tokens sampled tokens; rows are independent samples.

    While the context fits in block_size, a key/value cache feeds one new position per
    step. Past that the window slides, and learned absolute positions mean every cached
    key would need its position changed, so the whole window is recomputed each step.
    `use_cache=False` is the straightforward method; both give the same text.
    """
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    was_training = model.training
    model.eval()
    block = model.config.block_size
    device = idx.device
    cache = None
    with autocast(device, dtype):
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and idx.size(1) <= block:
                logits, _, cache = model(idx[:, -1:], cache=cache)
            else:
                context = idx[:, -block:]
                logits, _, cache = model(context)
                if not use_cache or idx.size(1) >= block:
                    cache = None  # the next step's window no longer starts at position 0
            nxt = _pick(logits[:, -1, :], temperature, top_k, generator)
            idx = torch.cat((idx, nxt.to(device)), dim=1)
    model.train(was_training)
    return idx


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
    device = next(model.parameters()).device
    start = prompt or ("\n" if "\n" in tokenizer.stoi else tokenizer.chars[0])
    ids = tokenizer.encode(start)
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    out = generate(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        dtype=dtype,
    )
    skip = 0 if prompt else len(ids)
    return [tokenizer.decode(row[skip:].tolist()) for row in out]
