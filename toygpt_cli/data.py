"""Text corpora: the character tokenizer, a corpus as ids with its train/val split, and
batches. The ids of a file come from the token cache in tokens.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toygpt_cli.errors import ToygptError

if TYPE_CHECKING:
    import torch

    from toygpt_cli.corpus.encoding import Progress


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
        return sorted({c for c in text if c not in self.stoi})

    def encode(self, text: str) -> list[int]:
        missing = self.unknown(text)
        if missing:
            raise ToygptError(
                "characters not in the vocabulary: " + " ".join(repr(c) for c in missing)
            )
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def read_text(path: Path) -> str:
    """The file as UTF-8 text, or a one-line error saying what is wrong with it."""
    from toygpt_cli.corpus.encoding import check_file

    path = Path(path)
    check_file(path)
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise ToygptError(f"data file is not text (it contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"data file is not UTF-8 text: {path} (invalid byte at offset {exc.start})"
        ) from None


def train_chars(n_chars: int, val_fraction: float = 0.1) -> int:
    """Where the train split ends: the first (1 - val_fraction) of the text."""
    return int(n_chars * (1 - val_fraction))


@dataclass
class Corpus:
    """A text as ids split into train and val (the first 90% / the rest).

    `tokens` is a 1-D tensor of ids in the narrowest width that holds them (uint8 up to
    256 characters, 2 bytes up to 65,536, int32 beyond), memory-mapped from the token cache
    (see tokens.py); the splits are views into it, and only gathered windows become int64.
    """

    path: Path
    sha256: str
    tokenizer: CharTokenizer
    tokens: torch.Tensor
    val_fraction: float = 0.1

    @classmethod
    def load(
        cls,
        path: Path,
        val_fraction: float = 0.1,
        tokenizer: CharTokenizer | None = None,
        progress: Progress | None = None,
    ) -> Corpus:
        """The file's ids under `tokenizer` (default: its own characters), encoded once and
        cached; `progress(phase, bytes_done, bytes_total)` hears about long passes."""
        from toygpt_cli.corpus.cache import load_tokens, text_facts

        path = Path(path)
        facts = text_facts(path, progress)
        if tokenizer is not None:
            missing = sorted(set(facts.vocab) - set(tokenizer.chars))
            if missing:
                raise ToygptError(
                    f"{path} has characters the run's vocabulary lacks: "
                    + " ".join(repr(c) for c in missing[:10])
                )
        tokenizer = tokenizer or CharTokenizer(facts.vocab)
        tokens = load_tokens(path, facts, tokenizer.chars, progress)
        return cls(path, facts.sha256, tokenizer, tokens, val_fraction)

    @classmethod
    def from_text(
        cls,
        text: str,
        tokenizer: CharTokenizer | None = None,
        val_fraction: float = 0.1,
        path: Path = Path("<text>"),
    ) -> Corpus:
        """A corpus held in memory (no file, no cache), encoded the same way."""
        from toygpt_cli.corpus.encoding import encode_text, facts_of_text

        facts = facts_of_text(text)
        tokenizer = tokenizer or CharTokenizer(facts.vocab)
        missing = sorted(set(facts.vocab) - set(tokenizer.chars))
        if missing:
            raise ToygptError(
                "characters not in the vocabulary: " + " ".join(repr(c) for c in missing[:10])
            )
        tokens = encode_text(text, tokenizer.chars)
        return cls(Path(path), facts.sha256, tokenizer, tokens, val_fraction)

    @property
    def n_chars(self) -> int:
        return len(self.tokens)

    @property
    def n_train(self) -> int:
        return train_chars(self.n_chars, self.val_fraction)

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val): views of the ids, split at n_train (nothing is copied)."""
        return self.tokens[: self.n_train], self.tokens[self.n_train :]


def sample_batch(data, batch_size: int, block_size: int, generator, device):
    """Random windows of `data` as (x, y) int64 ids, y shifted by one; one vectorised gather.

    Offsets come from `generator` on the CPU so the batch sequence is the same on any
    device and can be saved and restored exactly. `data` may hold ids in any width (a
    memory-mapped corpus): only the gathered windows are widened.
    """
    import torch

    from toygpt_cli.corpus.cache import gather_ids

    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(block_size + 1)
    if data.device.type == "cuda":  # pinned host memory lets the copy overlap compute
        idx = idx.pin_memory().to(data.device, non_blocking=True)
    elif data.device.type != "cpu":
        idx = idx.to(data.device)
    window = gather_ids(data, idx)
    return window[:, :-1].to(device, non_blocking=True), window[:, 1:].to(device, non_blocking=True)
