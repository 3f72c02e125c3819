"""The GPT: a character-level transformer language model, in the order it computes.

    ids (B, T) -> token embedding (+ position embedding)                  x: (B, T, C)
               -> n_layer Blocks, each:  x = x + Attention(norm(x))
                                         x = x + MLP(norm(x))
               -> final norm -> lm_head                                   logits: (B, T, V)

B is the batch, T the positions (at most block_size when training), C the width (n_embd),
V the vocabulary; the logits at position t score every character as the one at t + 1.

The configuration (ModelConfig in config.py) picks a variant, resolved once in `Variant`:
- arch gpt2: LayerNorm, ReLU MLP, biases (the original one-file project's model);
  nanogpt: LayerNorm and GELU without biases (nanoGPT's); modern: RMSNorm, ReLU-squared
  MLP, RMS-normalised queries and keys, no biases, output projections starting at zero.
- pos learned: a learned embedding per position, so T <= block_size; rope: rotary
  positions, where a sequence may be longer than block_size: each position then attends
  to itself and the block_size - 1 before it (a sliding window).

Options that add to this picture (each off unless a preset turns it on): `bigram` adds an
embedding of each (previous, current) character pair to x; `x0_skip` lets each block read a
learned mix a_i x + b_i x0 of the stream and the first embedding x0; `attn_scale` replaces
1/sqrt(hs) in the attention.

Two ways in: training and evaluation call `model(ids, targets)` on whole sequences;
generation (sample.py) calls `model(ids, cache=cache, position=p)` with the few new
positions after those the key/value cache already holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from toygpt_cli.config import BIGRAM_MAX_ROWS, ModelConfig, bigram_rows
from toygpt_cli.fused import Dropout, attend, norm_rotary, relu_squared, rms_norm_to

ROPE_BASE = 10_000.0
RMS_EPS = 1e-6


@dataclass(frozen=True)
class Variant:
    """What the configuration's `arch` and `pos` mean for each layer."""

    norm: Callable[[int], nn.Module]  # LayerNorm or RMSNorm over C channels
    activation: Callable[[torch.Tensor], torch.Tensor]  # the MLP's non-linearity
    bias: bool  # biases in the MLP, the attention's output projection and the head
    qk_norm: bool  # RMS-normalise queries and keys (their dot products stay bounded)
    zero_init: bool  # output projections and head start at zero: each block is the identity
    rotary: bool  # rotary positions instead of a learned position embedding
    dropout: Callable[[float], nn.Module]  # nn.Dropout, or the faster fused.Dropout

    @classmethod
    def of(cls, cfg: ModelConfig) -> Variant:
        rotary = cfg.pos == "rope"
        if cfg.arch == "modern":
            return cls(lambda c: RMSNorm(), relu_squared, False, True, True, rotary, Dropout)
        if cfg.arch == "nanogpt":
            norm = lambda c: nn.LayerNorm(c, bias=False)  # noqa: E731
            return cls(norm, F.gelu, False, False, False, rotary, nn.Dropout)
        return cls(nn.LayerNorm, F.relu, True, False, False, rotary, nn.Dropout)


# -- normalisation and positions --------------------------------------------------------------


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x / rms(x) over the last dimension: x / sqrt(mean(x^2) + eps), no learned gain."""
    return F.rms_norm(x, (x.size(-1),), eps=RMS_EPS)


class RMSNorm(nn.Module):
    """RMSNorm without parameters (modded-nanogpt, nanochat): nothing to learn or decay. Its
    output feeds a linear layer: under autocast it comes out in the autocast dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # inductor fuses the plain form itself
            return rms_norm(x)
        return rms_norm_to(x, RMS_EPS)


def rope_angles(start: int, length: int, head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (length, head_size / 2) of positions start .. start + length - 1.

    Channel pair i of a head turns by position * base^(-2i / head_size). The angles are
    computed in double precision by Python and rounded once to float32, so far positions
    keep their precision on any device, and no float64 tensor is made (Apple GPUs have none).
    """
    freqs = [ROPE_BASE ** (-i / head_size) for i in range(0, head_size, 2)]
    angles = [[p * f for f in freqs] for p in range(start, start + length)]
    cos = torch.tensor([[math.cos(a) for a in row] for row in angles], dtype=torch.float32)
    sin = torch.tensor([[math.sin(a) for a in row] for row in angles], dtype=torch.float32)
    return cos.view(length, -1), sin.view(length, -1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + hs/2) of x (..., hs) by angles whose cos and sin
    (..., hs/2) broadcast against x's halves. Queries and keys rotated by their positions
    score by the angle between them: relative position, whatever the absolute one."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (..., hs/2) each
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Rotary(nn.Module):
    """The rotary angles of positions 0 .. block_size - 1 as a table (not saved: they follow
    from the configuration), and the same numbers for any later position."""

    def __init__(self, head_size: int, block_size: int):
        super().__init__()
        self.head_size = head_size
        cos, sin = rope_angles(0, block_size, head_size)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if start + length <= self.cos.size(0):
            return self.cos[start : start + length], self.sin[start : start + length]
        cos, sin = rope_angles(start, length, self.head_size)  # past the table: generation
        return cos.to(self.cos.device), sin.to(self.sin.device)


def bigram_index(prev: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The pair embedding's row of each (previous, current) character; prev -1: none.

    Pairs (a, b) = (prev + 1, current) are numbered shell by shell (all pairs of ids below n
    take rows below n^2), so a pair's row never depends on the vocabulary's size: a larger
    vocabulary only adds rows. Past BIGRAM_MAX_ROWS rows, pairs share them (hashed)."""
    a, b = prev + 1, ids
    return torch.where(a < b, b * b + a, a * a + a + b) % BIGRAM_MAX_ROWS


def window_mask(n_queries: int, n_keys: int, window: int, device) -> torch.Tensor:
    """(n_queries, n_keys) bool, True where a query may look: the queries are the last
    n_queries of the keys' positions, and each sees itself and the window - 1 keys before."""
    rows = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]
    cols = torch.arange(n_keys, device=device)[None, :]
    return (cols <= rows) & (cols > rows - window)


# -- the transformer block ------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Each position gathers information from itself and the positions before it.

    For one head, with the queries Q, keys K and values V of the T positions (T, hs):

        scores = Q K^T / sqrt(hs)        (T, T)   how well each query matches each key
        scores[i, j] = -inf for j > i    (and j <= i - block_size): never look ahead
        A = softmax(scores, dim=-1)      (T, T)   each row sums to 1 (dropout on A, training)
        y = A V                          (T, hs)

    F.scaled_dot_product_attention computes exactly this, for every head at once, in one
    fused kernel that never stores the (T, T) scores when it can avoid it (`attend` calls
    it, in float32 when training in bfloat16 on a CPU: faster there).
    """

    def __init__(self, cfg: ModelConfig, variant: Variant):
        super().__init__()
        self.n_head, self.window = cfg.n_head, cfg.block_size
        self.qk_norm = variant.qk_norm
        self.scale = cfg.attn_scale or None  # None: SDPA's 1/sqrt(hs)
        self.dropout = cfg.dropout if cfg.attn_dropout else 0.0  # on A
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # all heads, fused
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=variant.bias)
        self.resid_drop = variant.dropout(cfg.dropout)

    def project(self, x: torch.Tensor, rope=None):
        """The queries, keys and values of every head, (B, nh, T, hs) each."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        # split and unbind, not indexing: backward then joins the gradients in one pass
        qk, v = qkv.split([2, 1], dim=2)
        # Queries and keys are normalised and rotated together: fewer, larger operations.
        fuse = not torch.compiler.is_compiling()  # inductor fuses them itself, unbroken
        if self.qk_norm and rope is not None and fuse:  # both in one step (fused.py)
            cos, sin = rope  # (T, hs/2), broadcast over (B, T, 2, nh, hs/2)
            qk = norm_rotary(qk, cos[:, None, None], sin[:, None, None], RMS_EPS)
        else:
            if self.qk_norm:
                qk = rms_norm(qk)
            if rope is not None:
                cos, sin = rope
                qk = apply_rotary(qk, cos[:, None, None], sin[:, None, None])
        q, k = qk.unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)

    def forward(self, x, rope=None, cache=None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.project(x, rope)  # (B, nh, T, hs)
        if cache is not None:  # generation: keys and values of the earlier positions too
            k, v = cache.extend(layer, k, v)  # (B, nh, T_keys, hs); k is kept rotated
        n_keys, p = k.size(2), self.dropout if self.training else 0.0
        if cache is None and self.window >= T:  # training: the plain causal mask
            y = attend(q, k, v, dropout_p=p, is_causal=True, scale=self.scale)
        elif T == 1 and n_keys <= self.window:  # one new position: it sees every key
            y = attend(q, k, v, dropout_p=p, scale=self.scale)
        else:  # queries after cached keys, or a sequence longer than the window
            mask = window_mask(T, n_keys, self.window, x.device)
            y = attend(q, k, v, attn_mask=mask, dropout_p=p, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.proj(y))

    def weights(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        """The attention weights A (B, nh, T, T) of a sequence, the math above written out
        (what the fused call computes inside, without dropout): to look at them."""
        q, k, _ = self.project(x, rope)
        scale = self.scale or 1.0 / math.sqrt(q.size(-1))
        scores = (q @ k.transpose(-2, -1)).float() * scale  # (B, nh, T, T)
        visible = window_mask(x.size(1), x.size(1), self.window, x.device)
        return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


class MLP(nn.Module):
    """Position by position: widen to 4C, a non-linearity, back to C."""

    def __init__(self, cfg: ModelConfig, variant: Variant):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=variant.bias)
        self.activation = variant.activation
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=variant.bias)
        self.drop = variant.dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.activation(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm: each branch reads a normalised copy of x and adds its result to x."""

    def __init__(self, cfg: ModelConfig, variant: Variant):
        super().__init__()
        self.ln1 = variant.norm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, variant)
        self.ln2 = variant.norm(cfg.n_embd)
        self.ffwd = MLP(cfg, variant)

    def forward(self, x, rope=None, cache=None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope, cache, layer)
        return x + self.ffwd(self.ln2(x))


# -- the model --------------------------------------------------------------------------------


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config, variant = cfg, Variant.of(cfg)
        V, C = cfg.vocab_size, cfg.n_embd
        self.tok_emb = nn.Embedding(V, C)
        if cfg.x0_skip:  # block i reads x0_keep[i] * x + x0_add[i] * x0: at first just x
            self.x0_keep = nn.Parameter(torch.ones(cfg.n_layer))
            self.x0_add = nn.Parameter(torch.zeros(cfg.n_layer))
        if variant.rotary:
            self.rotary = Rotary(cfg.n_embd // cfg.n_head, cfg.block_size)
        else:
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.emb_drop = nn.Dropout(cfg.dropout if cfg.emb_dropout else 0.0)
        self.blocks = nn.ModuleList(Block(cfg, variant) for _ in range(cfg.n_layer))
        self.ln_f = variant.norm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=variant.bias)
        if cfg.tie_weights:
            # The shared matrix keeps the head's small initialisation: the embedding's
            # N(0, 1) would make the first logits, and loss, huge.
            self.tok_emb.weight = self.lm_head.weight
        self._init_weights(cfg, variant)
        if cfg.bigram:  # a row per (previous, current) pair, zero: at first, no change.
            # Made after the init, it draws no random number: every other weight is the
            # one the model without it starts with.
            self.bigram_emb = nn.Embedding.from_pretrained(torch.zeros(bigram_rows(V), C),
                                                           freeze=False)  # fmt: skip

    def _init_weights(self, cfg: ModelConfig, variant: Variant) -> None:
        if cfg.init == "normal":  # GPT-2's: N(0, 0.02), residual projections scaled down
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            for name, p in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if variant.zero_init:  # every block starts as the identity, the model as uniform
            for block in self.blocks:
                nn.init.zeros_(block.attn.proj.weight)
                nn.init.zeros_(block.ffwd.proj.weight)
            if not cfg.tie_weights:  # a tied head is the input embedding too
                nn.init.zeros_(self.lm_head.weight)

    def pair_embedding(self, idx: torch.Tensor, cache) -> torch.Tensor:
        """(B, T, C): the embedding of each (previous, current) character pair of idx. The
        first position of a sequence has no previous character, unless a cache holds the
        one before it (generation)."""
        B, T = idx.shape
        before = cache.last_ids if cache is not None else None  # (B, 1) or None
        if cache is not None:
            cache.last_ids = idx[:, -1:]
        if before is None:
            before = torch.full((B, 1), -1, dtype=idx.dtype, device=idx.device)
        prev = torch.cat((before, idx[:, :-1]), dim=1)  # (B, T), -1: none
        return self.bigram_emb(bigram_index(prev, idx))

    def num_params(self, tables: bool = True) -> int:
        """Every parameter; tables=False leaves out the pair embedding, of which each
        position reads one row (what generation reads per step, roughly)."""
        n = sum(p.numel() for p in self.parameters())
        return n if tables or not self.config.bigram else n - self.bigram_emb.weight.numel()

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache=None,
        position: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, T) -> (logits (B, T, V), mean cross-entropy against targets, or None).

        Generation passes a key/value cache (sample.KVCache) and the position of idx[:, 0],
        which must follow the positions the cache has taken in.
        """
        B, T = idx.shape
        if cache is not None and position is None:
            raise ValueError("a key/value cache needs the position of the new ids")
        start = position or 0
        x = self.tok_emb(idx)  # (B, T, C)
        if self.config.bigram:
            x = x + self.pair_embedding(idx, cache)
        rope = None
        if self.config.pos == "rope":
            rope = self.rotary(start, T)  # cos, sin: (T, hs/2)
        elif start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} exceeds block_size {self.config.block_size}")
        else:
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))
        x = x0 = self.emb_drop(x)
        for i, block in enumerate(self.blocks):
            if self.config.x0_skip:
                x = self.x0_keep[i] * x + self.x0_add[i] * x0
            x = block(x, rope, cache, i)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.config.logit_softcap:  # cap * tanh(logits / cap), in float32
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))
        return logits, loss
