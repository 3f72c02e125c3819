"""Text corpora: reading them, the character tokenizer, the train/val split and batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from toygpt_cli.errors import ToygptError


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
    path = Path(path)
    if not path.exists():
        raise ToygptError(f"data file not found: {path}")
    if not path.is_file():
        raise ToygptError(f"data path is not a file: {path}")
    raw = path.read_bytes()
    if not raw:
        raise ToygptError(f"data file is empty: {path}")
    if b"\x00" in raw:
        raise ToygptError(f"data file is not text (it contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"data file is not UTF-8 text: {path} (invalid byte at offset {exc.start})"
        ) from None


@dataclass
class Corpus:
    """A text file encoded to ids and split into train and val (the first 90% / the rest)."""

    path: Path
    text: str
    sha256: str
    tokenizer: CharTokenizer
    val_fraction: float = 0.1

    @classmethod
    def load(
        cls, path: Path, val_fraction: float = 0.1, tokenizer: CharTokenizer | None = None
    ) -> Corpus:
        text = read_text(path)
        if tokenizer is not None:
            missing = tokenizer.unknown(text)
            if missing:
                raise ToygptError(
                    f"{path} has characters the run's vocabulary lacks: "
                    + " ".join(repr(c) for c in missing[:10])
                )
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(
            Path(path), text, digest, tokenizer or CharTokenizer.from_text(text), val_fraction
        )

    @property
    def n_chars(self) -> int:
        return len(self.text)

    @property
    def n_train(self) -> int:
        return int(self.n_chars * (1 - self.val_fraction))

    def splits(self):
        """(train, val) as 1-D int64 tensors of token ids."""
        import torch

        ids = torch.tensor(self.tokenizer.encode(self.text), dtype=torch.long)
        return ids[: self.n_train], ids[self.n_train :]


def sample_batch(data, batch_size: int, block_size: int, generator, device):
    """Random windows of `data` as (x, y), y shifted by one; one vectorised gather.

    Offsets come from `generator` on the CPU so the batch sequence is the same on any
    device and can be saved and restored exactly.
    """
    import torch

    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(block_size + 1)
    if data.device.type == "cuda":  # pinned host memory lets the copy overlap compute
        idx = idx.pin_memory().to(data.device, non_blocking=True)
    elif data.device.type != "cpu":
        idx = idx.to(data.device)
    window = data[idx]
    return window[:, :-1].to(device, non_blocking=True), window[:, 1:].to(device, non_blocking=True)
