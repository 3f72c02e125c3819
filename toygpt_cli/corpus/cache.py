"""The token cache: a text file encoded once into a compact file of character ids, which
every later command memory-maps instead of reading the text again.

Where it lives. Beside the text, in a hidden folder `.toygpt-cache/`:

    NAME.<sha16>.json               facts: sha256, bytes, characters, vocabulary
    NAME.<sha16>.<vocab8>.tokens    the ids under one vocabulary, 1, 2 or 4 bytes each

(`sha16` starts the text's sha256, `vocab8` the vocabulary's). When that folder cannot be
written, `${XDG_CACHE_HOME:-~/.cache}/toygpt/` holds the same files (NAME gets a hash of
the file's path appended); when neither can, the ids are kept in memory. Writing a new
version of a file's cache deletes the entries of its older versions.

How it is used. The first command to read a file checks it and finds its vocabulary and
sha256 in one streaming pass, then writes its ids in a second (their width depends on the
vocabulary's size, known only at the end of the first; see encoding.py). Later commands
only hash the file to find its cache, and memory-map the ids: the train/val split is a
view, and batches widen only the windows they gather to int64.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

import toygpt_cli.corpus.encoding as encoding
from toygpt_cli.corpus.encoding import Progress, TextFacts, id_dtype
from toygpt_cli.errors import ToygptError
from toygpt_cli.storage.files import atomic_open, crc32_file, read_regular, sha256_file
from toygpt_cli.storage.mapped import map_tokens

FORMAT = "toygpt-tokens/1"
CACHE_DIR = ".toygpt-cache"


# ---------------------------------------------------------------------- the cache


def _locations(path: Path) -> list[tuple[Path, str]]:
    """(folder, name prefix) where `path`'s cache may live, in the order they are tried."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "toygpt"
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return [(path.parent / CACHE_DIR, path.name), (home, f"{path.name}-{where}")]


def _try_write(dest: Path, writer: Callable[[object], object]) -> bool:
    """Write `dest` through a temporary file and a rename; False (leaving nothing behind)
    when its folder cannot be written. Errors about the text itself pass through."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(dest) as f:
            writer(f)
    except OSError:
        return False
    except ToygptError as exc:
        if isinstance(exc.__cause__, OSError):  # atomic_open's "could not write"
            return False
        raise
    return True


def _evict_others(folder: Path, prefix: str, sha16: str) -> None:
    """Delete the cache entries of `prefix` made for other versions of the text."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix + "."):
            continue
        key = name[len(prefix) + 1 :].split(".")[0]
        if len(key) == 16 and key != sha16 and all(c in "0123456789abcdef" for c in key):
            (folder / name).unlink(missing_ok=True)


def _has_cache(path: Path) -> bool:
    """Whether any cache entry for `path` exists (for this or another version of it)."""
    for folder, prefix in _locations(path):
        with contextlib.suppress(OSError):
            if any(p.name.startswith(prefix + ".") for p in folder.iterdir()):
                return True
    return False


def _read_facts(path: Path, sha: str, size: int) -> TextFacts | None:
    """The cached facts of this text, if they are whole and plausible (else None: the
    text is scanned again and the facts rewritten)."""
    for folder, prefix in _locations(path):
        try:
            raw = json.loads(read_regular(folder / f"{prefix}.{sha[:16]}.json", 1 << 24))
            if isinstance(raw, dict) and raw.pop("format") == FORMAT and raw["sha256"] == sha:
                facts = TextFacts(**raw)
                if _plausible(facts, size):
                    return facts
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue
    return None


def _plausible(facts: TextFacts, size: int) -> bool:
    vocab = facts.vocab
    return (
        isinstance(vocab, str) and len(vocab) > 0 and list(vocab) == sorted(set(vocab))
        and not any("\ud800" <= c <= "\udfff" for c in vocab)  # no text decodes to these
        and isinstance(facts.n_bytes, int) and facts.n_bytes == size
        and isinstance(facts.n_chars, int) and len(vocab) <= facts.n_chars <= size
    )  # fmt: skip


def text_facts(path: Path, progress: Progress | None = None, trust: bool = True) -> TextFacts:
    """Size, characters and vocabulary of a text file: from the cache when the file's
    sha256 is known there (unless `trust` is False), else from one checking pass over it
    (then cached)."""
    path = Path(path)
    size = encoding.check_file(path)
    sha = None
    if trust and _has_cache(path):  # else the scan finds the sha256 itself: one pass less
        sha = sha256_file(path, progress, encoding.CHUNK)
        facts = _read_facts(path, sha, size)
        if facts is not None:
            return facts
    digest = hashlib.sha256()
    n_chars, vocab = encoding.scan(encoding.read_pieces(path, digest, progress, "scanning"))
    if sha not in (None, digest.hexdigest()):
        raise encoding.changed_error(path)
    sha = digest.hexdigest()
    facts = TextFacts(sha, size, n_chars, vocab)
    record = json.dumps({"format": FORMAT, **asdict(facts)}, ensure_ascii=False).encode()
    for folder, prefix in _locations(path):
        if _try_write(folder / f"{prefix}.{sha[:16]}.json", lambda f: f.write(record)):
            _evict_others(folder, prefix, sha[:16])
            break
    return facts


class WrongFacts(Exception):
    """The cached facts of a text disagree with the text itself: scan it again."""


def load_tokens(
    path: Path, facts: TextFacts, vocab: str, progress: Progress | None = None
) -> torch.Tensor:
    """The text's ids under `vocab` (which must hold every character of it) as a 1-D
    memory-mapped tensor, encoding the file into the cache first if needed.

    A token file is used only when its check file (`.check`: the vocabulary, the count and
    a CRC-32 of the ids) agrees with it; anything else (zeros, random bytes, another
    vocabulary's ids, a file from an older toygpt) is encoded again. Raises WrongFacts
    when the text has another number of characters than `facts` says."""
    path = Path(path)
    dtype = id_dtype(len(vocab))
    key = f"{facts.sha256[:16]}.{hashlib.sha256(vocab.encode()).hexdigest()[:8]}.tokens"
    nbytes = facts.n_chars * dtype.itemsize
    for folder, prefix in _locations(path):
        cached = folder / f"{prefix}.{key}"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, RecursionError):
            if cached.is_file() and cached.stat().st_size == nbytes:
                check = json.loads(read_regular(Path(f"{cached}.check"), 1 << 20))
                if check == _check_record(vocab, facts.n_chars, crc32_file(cached)):
                    tokens = map_tokens(cached, facts.n_chars, dtype)
                    if _spot_check(path, facts, vocab, tokens):
                        return tokens

    def encode(write) -> None:
        digest, crc = hashlib.sha256(), [0]

        def checked(data) -> None:
            crc[0] = zlib.crc32(data, crc[0])
            write(data)

        pieces = encoding.read_pieces(path, digest, progress, "encoding")
        try:
            n = encoding.encode(pieces, vocab, checked)
        except encoding.NotInVocabulary:
            raise WrongFacts(path) from None
        if digest.hexdigest() != facts.sha256:
            raise encoding.changed_error(path)
        if n != facts.n_chars:
            raise WrongFacts(path)
        written.append(_check_record(vocab, n, crc[0]))

    written: list[dict] = []
    for folder, prefix in _locations(path):
        dest = folder / f"{prefix}.{key}"
        if _try_write(dest, lambda f: encode(f.write)):
            record = json.dumps(written[-1]).encode()
            if _try_write(Path(f"{dest}.check"), lambda f, r=record: f.write(r)):
                _evict_others(folder, prefix, facts.sha256[:16])
                return map_tokens(dest, facts.n_chars, dtype)
    out = bytearray()  # no writable cache folder: keep the ids in memory
    encode(out.extend)
    return torch.frombuffer(out, dtype=dtype)


def _spot_check(path: Path, facts: TextFacts, vocab: str, tokens, n: int = 64,
                width: int = 64) -> bool:  # fmt: skip
    """Whether the ids at `n` places chosen at random match the text there. Only for a
    text of one byte per character (then character i is byte i, found by a seek); other
    texts pass. Cheap (n small reads), and a cache rewritten to agree with its own check
    file cannot know where to look."""
    if facts.n_bytes != facts.n_chars or facts.n_chars < width:
        return True
    import random

    index = {c: i for i, c in enumerate(vocab)}
    pick = random.SystemRandom()
    try:
        with open(path, "rb") as f:
            for _ in range(n):
                start = pick.randrange(facts.n_chars - width + 1)
                f.seek(start)
                text = f.read(width).decode("latin-1")
                expected = [index.get(c, -1) for c in text]
                if tokens[start : start + width].tolist() != expected:
                    return False
    except OSError:
        return False
    return True


def _check_record(vocab: str, n_chars: int, crc: int) -> dict:
    return {"format": FORMAT, "vocab": vocab, "n_chars": n_chars, "crc32": crc}
