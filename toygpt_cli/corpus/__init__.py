"""Corpora: a text file (or string) as a Corpus of ids, Tiny Shakespeare's download, and
the token cache that encodes a file once.

    corpus = load_corpus("data/tinyshakespeare.txt")   # encoded once, memory-mapped after
    corpus = corpus_from_text("to be or not to be")    # in memory, no file
"""

from __future__ import annotations

from pathlib import Path

from toygpt_cli.corpus.cache import WrongFacts, load_tokens, text_facts
from toygpt_cli.corpus.encoding import Progress, changed_error, encode_text, facts_of_text
from toygpt_cli.data import CharTokenizer, Corpus


def load_corpus(
    path: Path,
    val_fraction: float = 0.1,
    tokenizer: CharTokenizer | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """The file's ids under `tokenizer` (default: its own characters), encoded once and
    cached; `progress(phase, bytes_done, bytes_total)` hears about long passes."""
    path = Path(path)
    for trust in (True, False):  # cached facts that prove wrong are found again, once
        facts = text_facts(path, progress, trust)
        given = tokenizer is not None
        vocab = tokenizer or CharTokenizer(facts.vocab)
        vocab.check(facts.vocab, str(path), whose="the run's" if given else "the")
        try:
            tokens = load_tokens(path, facts, vocab.chars, progress)
        except WrongFacts:
            continue
        if not given and trust and not _every_id_used(tokens, len(vocab.chars)):
            continue  # cached facts name a character the text does not have
        return Corpus(path, facts.sha256, vocab, tokens, val_fraction)
    raise changed_error(path)


def _every_id_used(tokens, vocab_size: int, chunk: int = 1 << 24) -> bool:
    """Whether each of the ids 0 .. vocab_size - 1 occurs (one pass, in chunks)."""
    import torch

    counts = torch.zeros(vocab_size, dtype=torch.long)
    for start in range(0, len(tokens), chunk):
        piece = tokens[start : start + chunk].to(torch.int64)
        counts += torch.bincount(piece, minlength=vocab_size)[:vocab_size]
    return bool((counts > 0).all())


def corpus_from_text(
    text: str,
    tokenizer: CharTokenizer | None = None,
    val_fraction: float = 0.1,
    path: Path = Path("<text>"),
) -> Corpus:
    """A corpus held in memory (no file, no cache), encoded the same way."""
    facts = facts_of_text(text)
    tokenizer = tokenizer or CharTokenizer(facts.vocab)
    tokenizer.check(facts.vocab)
    return Corpus(
        Path(path), facts.sha256, tokenizer, encode_text(text, tokenizer.chars), val_fraction
    )


__all__ = ["corpus_from_text", "load_corpus"]
