"""The data the model learns from: characters as ids, a train/val split, random batches.

    tokenizer = CharTokenizer.from_text(text)          # every distinct character, sorted
    ids = tokenizer.encode("ROMEO:")                   # [int, ...]
    x, y = sample_batch(train, 32, 16, generator, "cpu")   # (32, 16) ids; y is x shifted by one

A Corpus is a text's ids in one 1-D tensor, split by position: the first 90% to train on,
the rest to validate. corpus/ builds one from a file (encoded once, then memory-mapped)
or from a string; ids are stored in the narrowest width that holds them (1, 2 or 4 bytes)
and widened to int64 only for the windows a batch gathers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from toygpt_cli.errors import ToygptError
from toygpt_cli.storage.mapped import note_reads


class CharTokenizer:
    """Maps each distinct character of a corpus to an integer id (sorted by code point)."""

    def __init__(self, chars: str | list[str]):
        self.chars = "".join(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` this vocabulary lacks, sorted."""
        return sorted({c for c in text if c not in self.stoi})

    def check(
        self, text: str, what: str = "the text", error=ToygptError, whose: str = "the"
    ) -> None:
        """A one-line error naming the characters of `text` outside the vocabulary
        ("{what} has characters outside {whose} vocabulary: 'x' 'z'")."""
        missing = self.unknown(text)
        if missing:
            shown = " ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise error(f"{what} has characters outside {whose} vocabulary: {shown}")

    def encode(self, text: str) -> list[int]:
        self.check(text)
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def train_chars(n_chars: int, val_fraction: float = 0.1) -> int:
    """Where the train split ends: the first (1 - val_fraction) of the text."""
    return int(n_chars * (1 - val_fraction))


@dataclass
class Corpus:
    """A text as ids (`tokens`, 1-D, in the narrowest width), split at n_train."""

    path: Path
    sha256: str
    tokenizer: CharTokenizer
    tokens: torch.Tensor
    val_fraction: float = 0.1

    @property
    def n_chars(self) -> int:
        return len(self.tokens)

    @property
    def n_train(self) -> int:
        return train_chars(self.n_chars, self.val_fraction)

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val): views of the ids, split at n_train (nothing is copied)."""
        return self.tokens[: self.n_train], self.tokens[self.n_train :]


def to_ids(tokens: torch.Tensor) -> torch.Tensor:
    """Ids in any storage width as int64, the only width the model takes."""
    if tokens.element_size() == 2:  # 2-byte ids are stored through int16 (see corpus/)
        return tokens.view(torch.int16).long() & 0xFFFF
    return tokens.long()


def gather_ids(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens[index] as int64, `index` holding one window per row: only the gathered ids
    are widened, never the whole corpus."""
    ids = to_ids(tokens.view(torch.int16)[index] if tokens.element_size() == 2 else tokens[index])
    note_reads(tokens, len(index))
    return ids


def sample_batch(data, batch_size: int, block_size: int, generator, device):
    """Random windows of `data` as (x, y) int64 ids (B, T), y shifted by one position.

    Offsets come from `generator` on the CPU, so the batches are the same on any device
    and can be saved and restored exactly.
    """
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    return windows(data, starts, block_size, device)


def epoch_starts(n_tokens: int, block_size: int, first: int, count: int, seed: int):
    """Where windows first .. first + count - 1 of an epoch-wise order start (`--data-order
    epochs`): epoch e cuts the text into block_size windows from an offset in [0, block_size)
    and takes them in an order of its own; both come from (seed, e), so any window of the
    sequence follows from its index alone (a resumed run needs no saved state)."""
    per_epoch = _windows_per_epoch(n_tokens, block_size)
    parts, index = [], first
    while index < first + count:
        epoch, at = divmod(index, per_epoch)
        offset, order = _epoch_plan(n_tokens, block_size, seed, epoch)
        take = min(first + count - index, per_epoch - at)
        parts.append(offset + order[at : at + take] * block_size)
        index += take
    return torch.cat(parts)


def _windows_per_epoch(n_tokens: int, block_size: int) -> int:
    return max(1, (n_tokens - block_size) // block_size)  # those that fit whatever the offset


@functools.lru_cache(maxsize=2)  # an epoch's plan is drawn once, not at every step
def _epoch_plan(n_tokens: int, block_size: int, seed: int, epoch: int):
    gen = torch.Generator().manual_seed((seed + 7919 * epoch) % 2**63)
    offset = int(torch.randint(min(block_size, n_tokens - block_size), (1,), generator=gen))
    return offset, torch.randperm(_windows_per_epoch(n_tokens, block_size), generator=gen)


def windows(data, starts: torch.Tensor, block_size: int, device):
    """The windows of `data` at `starts` as (x, y) int64 ids (B, T), y shifted by one."""
    idx = starts[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
    if data.device.type == "cuda":  # pinned host memory lets the copy overlap compute
        idx = idx.pin_memory().to(data.device, non_blocking=True)
    elif data.device.type != "cpu":
        idx = idx.to(data.device)
    window = gather_ids(data, idx)
    return window[:, :-1].to(device, non_blocking=True), window[:, 1:].to(device, non_blocking=True)
