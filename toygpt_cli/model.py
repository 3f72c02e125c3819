"""The character-level GPT: token + position embeddings, pre-norm transformer blocks.

All heads of a layer share one fused query/key/value projection and PyTorch's fused
`scaled_dot_product_attention`. `forward` optionally takes a key/value cache so that
generation processes one new position per step instead of the whole context.

The configuration picks the variant: learned or rotary positions (`pos`), the seed's GPT-2
block or the "modern" one (`arch`: RMSNorm, ReLU-squared MLP, RMS-normalised queries and
keys, no biases, zero-initialised output projections and head), and logit soft-capping.
With rotary positions a sequence may be longer than block_size: each position then attends
to itself and the block_size - 1 before it (a sliding window), which is what a rolling
key/value cache computes one position at a time.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from toygpt_cli.config import ModelConfig
from toygpt_cli.layers import (
    Rotary,
    apply_rotary,
    make_norm,
    relu_squared,
    rms_norm,
    softcap,
    window_mask,
)

# One (key, value) pair per layer, each (B, n_head, T_cached, head_size).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout if cfg.attn_dropout else 0.0  # on the attention weights
        self.window = cfg.block_size  # keys a query sees, itself included
        self.qk_norm = cfg.arch == "modern"
        # No bias on q/k/v, as in the seed's per-head Linear(n_embd, head_size, bias=False).
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.arch != "modern")
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]
        # Queries and keys are normalised and rotated together: fewer, larger operations.
        if self.qk_norm:
            qk = rms_norm(qk)
        if rope is not None:  # keys are cached rotated: their angles stay relative to the queries'
            cos, sin = rope  # (T, hs/2) -> broadcast over (B, T, 2, nh, hs/2)
            qk = apply_rotary(qk, cos[:, None, None], sin[:, None, None])
        # (B, T, nh, hs) -> (B, nh, T, hs)
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), v.transpose(1, 2)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat((past[1], v), dim=2)
        n_keys, keep = k.size(2), self.window + T - 1  # keep: what the first query sees
        if past is not None and n_keys > keep:  # a rolling cache: drop the oldest keys
            k, v, n_keys = k[:, :, -keep:], v[:, :, -keep:], keep
        if n_keys <= self.window and (past is None or T == 1):
            # Plain causal attention (or one new query, which sees every key).
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0,
                is_causal=past is None and T > 1,
            )  # fmt: skip
        else:
            # New queries after cached keys (the mask aligned bottom-right, which is_causal
            # only does for equal lengths), or a sequence longer than the window.
            mask = window_mask(T, n_keys, self.window, x.device)  # (T, n_keys)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        cache = (k[:, :, -self.window :], v[:, :, -self.window :])  # at most block_size keys
        return self.resid_drop(self.proj(y)), cache


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        bias = cfg.arch != "modern"
        self.squared = cfg.arch == "modern"  # ReLU-squared (Primer; modded-nanogpt)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, 4C)
        h = relu_squared(h) if self.squared else F.relu(h)
        return self.drop(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.ffwd = FeedForward(cfg)

    def forward(self, x, past=None, rope=None):
        a, kv = self.attn(self.ln1(x), past, rope)
        x = x + a
        x = x + self.ffwd(self.ln2(x))
        return x, kv


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        if cfg.pos == "rope":
            self.rotary = Rotary(cfg)
        else:
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.arch != "modern")
        if cfg.tie_weights:
            # The shared matrix keeps the output layer's small initialisation: the
            # embedding's N(0, 1) would make the initial logits, and loss, huge.
            self.tok_emb.weight = self.lm_head.weight
        if cfg.init == "normal":
            self.apply(_init_normal)
            # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer).
            for name, p in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.arch == "modern":
            # Each block starts as the identity and the model as the uniform distribution
            # (a tied head keeps its init: it is the input embedding too).
            for block in self.blocks:
                nn.init.zeros_(block.attn.proj.weight)
                nn.init.zeros_(block.ffwd.proj.weight)
            if not cfg.tie_weights:
                nn.init.zeros_(self.lm_head.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, KVCache]:
        """idx (B, T) of token ids -> logits (B, T, vocab), mean loss if targets, new cache.

        `position` is that of idx[:, 0] (default: the number of cached positions). With
        rotary positions, the cache rolls: it keeps the last block_size positions.
        """
        B, T = idx.shape
        start = position if position is not None else (cache[0][0].size(2) if cache else 0)
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "rope":
            rope = self.rotary(start, T)  # cos, sin: (T, head_size / 2)
        else:
            if start + T > self.config.block_size:
                raise ValueError(
                    f"sequence of {start + T} exceeds block_size {self.config.block_size}"
                )
            x = x + self.pos_emb(torch.arange(start, start + T, device=idx.device))
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache[i] if cache else None, rope)
            new_cache.append(kv)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        if self.config.logit_softcap:
            logits = softcap(logits, self.config.logit_softcap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1).float(), targets.reshape(B * T))
        return logits, loss, new_cache


def _init_normal(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
