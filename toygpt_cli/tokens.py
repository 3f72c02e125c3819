"""The token cache: a text file encoded once into a compact file of character ids, which
every later command memory-maps instead of reading the text again.

Where it lives. Beside the text, in a hidden folder `.toygpt-cache/`:

    NAME.<sha16>.json               facts: sha256, bytes, characters, vocabulary
    NAME.<sha16>.<vocab8>.tokens    the ids under one vocabulary, 1, 2 or 4 bytes each

(`sha16` starts the text's sha256, `vocab8` the vocabulary's). When that folder cannot be
written, `${XDG_CACHE_HOME:-~/.cache}/toygpt/` holds the same files (NAME gets a hash of
the file's path appended); when neither can, the ids are kept in memory. Writing a new
version of a file's cache deletes the entries of its older versions.

How it is built. Everything streams the file in chunks cut between characters, so memory
does not grow with the file, and every step is vectorised: ASCII chunks (most of most
corpora) never become Python strings; other chunks are decoded and turned into code points
with the codec's C loops, then into ids with one table lookup. One pass finds the sha256,
checks the text (UTF-8, no NUL bytes) and collects the vocabulary; a second writes the ids
(their width depends on the vocabulary's size, known only at the end of the first). Later
commands only hash the file to find its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from toygpt_cli.errors import ToygptError
from toygpt_cli.fileio import atomic_open

FORMAT = "toygpt-tokens/1"
CACHE_DIR = ".toygpt-cache"
CHUNK = 16 << 20  # bytes read at a time
N_CODE_POINTS = 0x110000

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)

# 2-byte ids: few kernels take torch.uint16 (and torch < 2.3 lacks it), so they are
# gathered through an int16 view and widened with a mask (see `to_ids`).
_UINT16 = getattr(torch, "uint16", torch.int16)


@dataclass(frozen=True)
class TextFacts:
    """What one pass over a text file found."""

    sha256: str
    n_bytes: int
    n_chars: int
    vocab: str  # every distinct character, sorted by code point


def id_dtype(vocab_size: int) -> torch.dtype:
    """The narrowest dtype that holds ids below vocab_size: 1, 2 or 4 bytes."""
    if vocab_size <= 1 << 8:
        return torch.uint8
    return _UINT16 if vocab_size <= 1 << 16 else torch.int32


def to_ids(tokens: torch.Tensor) -> torch.Tensor:
    """Ids in any storage width as int64, the only width the model takes."""
    if tokens.element_size() == 2:
        return tokens.view(torch.int16).long() & 0xFFFF
    return tokens.long()


def gather_ids(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens[index] as int64: only the gathered ids are widened, never the whole corpus."""
    if tokens.element_size() == 2:
        return tokens.view(torch.int16)[index].long() & 0xFFFF
    return tokens[index].long()


# ---------------------------------------------------------------------- reading text


def check_file(path: Path) -> int:
    """The file's size, or a one-line error when it is missing, not a file or empty."""
    if not path.exists():
        raise ToygptError(f"data file not found: {path}")
    if not path.is_file():
        raise ToygptError(f"data path is not a file: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise ToygptError(f"data file is empty: {path}")
    return size


def _view(buffer, dtype: torch.dtype) -> torch.Tensor:
    # A tensor over a bytes object without a copy; torch warns that bytes are read-only,
    # which is fine: these views are only read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(buffer, dtype=dtype)


def _code_points(text: str) -> torch.Tensor:
    return _view(text.encode("utf-32-le"), torch.int32)


def _char_boundary(buf: bytes) -> int:
    """Length of the longest prefix of buf that does not end inside a UTF-8 character."""
    n = len(buf)
    for back in range(1, min(4, n) + 1):
        byte = buf[n - back]
        if byte < 0x80:  # ASCII: everything up to here is complete
            return n
        if byte >= 0xC0:  # the lead byte of the last character
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if back >= needed else n - back
    return n  # no lead byte: invalid, and the decoder will say where


def _pieces(path: Path, digest, progress: Progress | None, phase: str) -> Iterator[bytes | str]:
    """The checked text in chunks cut between characters: ASCII chunks as bytes, others
    decoded to str. Every byte read also goes into `digest`."""
    total, done, offset, carry = path.stat().st_size, 0, 0, b""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; open errors become one line)
    except OSError as exc:
        raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        while True:
            try:
                block = f.read(CHUNK)
            except OSError as exc:
                raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
            if not block:
                break
            digest.update(block)
            done += len(block)
            buf = carry + block if carry else block
            cut = _char_boundary(buf)
            body, carry = (buf, b"") if cut == len(buf) else (buf[:cut], buf[cut:])
            if body:
                yield _checked(body, path, offset)
                offset += len(body)
            if progress is not None:
                progress(phase, done, total)
    if carry:  # the file ends inside a character
        _checked(carry, path, offset)


def _checked(body: bytes, path: Path, offset: int) -> bytes | str:
    if b"\x00" in body:
        raise ToygptError(f"data file is not text (it contains NUL bytes): {path}")
    if body.isascii():
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"data file is not UTF-8 text: {path} (invalid byte at offset {offset + exc.start})"
        ) from None


def _text_pieces(text: str) -> Iterator[bytes | str]:
    for i in range(0, len(text), CHUNK):
        piece = text[i : i + CHUNK]
        yield piece.encode("ascii") if piece.isascii() else piece


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """The sha256 of the file's bytes, read in chunks."""
    digest, total, done = hashlib.sha256(), path.stat().st_size, 0
    try:
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress("hashing", done, total)
    except OSError as exc:
        raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


# ---------------------------------------------------------------------- vocabulary and ids


def _scan(pieces: Iterable[bytes | str]) -> tuple[int, str]:
    """(characters, sorted vocabulary) of the pieces."""
    seen = torch.zeros(N_CODE_POINTS, dtype=torch.bool)
    n_chars = 0
    for piece in pieces:
        n_chars += len(piece)
        if isinstance(piece, bytes):  # ASCII: a byte histogram is the vocabulary
            counts = torch.bincount(_view(piece, torch.uint8), minlength=256)
            seen[:256] |= counts > 0
        else:
            seen |= torch.bincount(_code_points(piece), minlength=N_CODE_POINTS) > 0
    vocab = "".join(map(chr, seen.nonzero().flatten().tolist()))
    return n_chars, vocab


def _encode(pieces: Iterable[bytes | str], vocab: str, write: Callable[[bytes], object]) -> int:
    """Write the ids of the pieces' characters under `vocab` (which must hold them all);
    returns how many were written."""
    dtype = id_dtype(len(vocab))
    store = torch.int16 if dtype == _UINT16 else dtype  # a bit pattern index_select can write
    lut = torch.zeros(N_CODE_POINTS, dtype=store)
    lut[torch.tensor([ord(c) for c in vocab], dtype=torch.long)] = torch.arange(
        len(vocab), dtype=torch.int32
    ).to(store)
    ascii_table = bytes(lut[:256].tolist()) if store == torch.uint8 else None
    n = 0
    for piece in pieces:
        n += len(piece)
        if isinstance(piece, bytes) and ascii_table is not None:
            write(piece.translate(ascii_table))  # one C loop, no tensors
            continue
        if isinstance(piece, bytes):
            points = _view(piece, torch.uint8).int()
        else:
            points = _code_points(piece)
        out = bytearray(len(points) * lut.element_size())
        torch.index_select(lut, 0, points, out=torch.frombuffer(out, dtype=store))
        write(out)
    return n


def facts_of_text(text: str) -> TextFacts:
    raw = text.encode("utf-8")
    n_chars, vocab = _scan(_text_pieces(text))
    return TextFacts(hashlib.sha256(raw).hexdigest(), len(raw), n_chars, vocab)


def encode_text(text: str, vocab: str) -> torch.Tensor:
    """The ids of an in-memory text, in the cache's storage width."""
    out = bytearray()
    _encode(_text_pieces(text), vocab, out.extend)
    if not out:
        return torch.zeros(0, dtype=id_dtype(len(vocab)))
    return torch.frombuffer(out, dtype=id_dtype(len(vocab)))


def _changed(path: Path) -> ToygptError:
    return ToygptError(f"{path} changed while it was being read; try again")


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


def _read_facts(path: Path, sha: str) -> TextFacts | None:
    for folder, prefix in _locations(path):
        try:
            raw = json.loads((folder / f"{prefix}.{sha[:16]}.json").read_text(encoding="utf-8"))
            if raw.pop("format") == FORMAT and raw["sha256"] == sha:
                return TextFacts(**raw)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def text_facts(path: Path, progress: Progress | None = None) -> TextFacts:
    """Size, characters and vocabulary of a text file: from the cache when the file's
    sha256 is known there, else from one checking pass over it (then cached)."""
    path = Path(path)
    size = check_file(path)
    sha = file_sha256(path, progress)
    facts = _read_facts(path, sha)
    if facts is not None:
        return facts
    digest = hashlib.sha256()
    n_chars, vocab = _scan(_pieces(path, digest, progress, "scanning"))
    if digest.hexdigest() != sha:
        raise _changed(path)
    facts = TextFacts(sha, size, n_chars, vocab)
    record = json.dumps({"format": FORMAT, **asdict(facts)}, ensure_ascii=False).encode()
    for folder, prefix in _locations(path):
        if _try_write(folder / f"{prefix}.{sha[:16]}.json", lambda f: f.write(record)):
            _evict_others(folder, prefix, sha[:16])
            break
    return facts


def load_tokens(
    path: Path, facts: TextFacts, vocab: str, progress: Progress | None = None
) -> torch.Tensor:
    """The text's ids under `vocab` (which must hold every character of it) as a 1-D
    memory-mapped tensor, encoding the file into the cache first if needed."""
    path = Path(path)
    dtype = id_dtype(len(vocab))
    key = f"{facts.sha256[:16]}.{hashlib.sha256(vocab.encode()).hexdigest()[:8]}.tokens"
    nbytes = facts.n_chars * dtype.itemsize
    for folder, prefix in _locations(path):
        cached = folder / f"{prefix}.{key}"
        if cached.is_file() and cached.stat().st_size == nbytes:
            return torch.from_file(str(cached), shared=False, size=facts.n_chars, dtype=dtype)

    def encode(write) -> None:
        digest = hashlib.sha256()
        n = _encode(_pieces(path, digest, progress, "encoding"), vocab, write)
        if digest.hexdigest() != facts.sha256 or n != facts.n_chars:
            raise _changed(path)

    for folder, prefix in _locations(path):
        dest = folder / f"{prefix}.{key}"
        if _try_write(dest, lambda f: encode(f.write)):
            _evict_others(folder, prefix, facts.sha256[:16])
            return torch.from_file(str(dest), shared=False, size=facts.n_chars, dtype=dtype)
    out = bytearray()  # no writable cache folder: keep the ids in memory
    encode(out.extend)
    return torch.frombuffer(out, dtype=dtype)
