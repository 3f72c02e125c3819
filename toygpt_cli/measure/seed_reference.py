"""A plain, seed-style implementation used as a reference by tests and the benchmark.

It mirrors the project toygpt grew from: one module per attention head looped in Python,
an explicit masked softmax, and generation that re-runs the whole cropped context.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        wei = self.dropout(F.softmax(wei, dim=-1))
        return wei @ self.value(x)


class MultiHead(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        hs = n_embd // n_head
        self.heads = nn.ModuleList(Head(n_embd, hs, block_size, dropout) for _ in range(n_head))
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(torch.cat([h(x) for h in self.heads], dim=-1)))


class SeedBlock(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        self.sa = MultiHead(n_embd, n_head, block_size, dropout)
        self.ffwd = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class SeedGPT(nn.Module):
    def __init__(self, vocab_size, block_size=16, n_embd=384, n_layer=4, n_head=6, dropout=0.2):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(
            *[SeedBlock(n_embd, n_head, block_size, dropout) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.token_embedding_table(idx) + self.position_embedding_table(
            torch.arange(T, device=idx.device)
        )
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, generator=None):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size :])
            probs = F.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        return idx


def copy_into_seed(model, seed: SeedGPT) -> None:
    """Load a toygpt GPT's weights into the seed-style model (split the fused q/k/v)."""
    sd = model.state_dict()
    C = model.config.n_embd
    hs = C // model.config.n_head
    seed.token_embedding_table.weight.data.copy_(sd["tok_emb.weight"])
    seed.position_embedding_table.weight.data.copy_(sd["pos_emb.weight"])
    for i, block in enumerate(seed.blocks):
        q, k, v = sd[f"blocks.{i}.attn.qkv.weight"].split(C, dim=0)
        for h, head in enumerate(block.sa.heads):
            head.query.weight.data.copy_(q[h * hs : (h + 1) * hs])
            head.key.weight.data.copy_(k[h * hs : (h + 1) * hs])
            head.value.weight.data.copy_(v[h * hs : (h + 1) * hs])
        block.sa.proj.load_state_dict(_sub(sd, f"blocks.{i}.attn.proj."))
        block.ffwd[0].load_state_dict(_sub(sd, f"blocks.{i}.ffwd.fc."))
        block.ffwd[2].load_state_dict(_sub(sd, f"blocks.{i}.ffwd.proj."))
        for name in ("ln1", "ln2"):
            getattr(block, name).load_state_dict(_sub(sd, f"blocks.{i}.{name}."))
    seed.ln_f.load_state_dict(_sub(sd, "ln_f."))
    seed.lm_head.load_state_dict(_sub(sd, "lm_head."))


def _sub(sd, prefix):
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
