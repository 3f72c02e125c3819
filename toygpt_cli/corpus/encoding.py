"""Reading a UTF-8 text file as checked pieces, and turning pieces into a vocabulary and
character ids: streamed in chunks (memory does not grow with the file) and vectorised.

A chunk is cut between characters. ASCII stretches (most of most corpora) stay bytes and
take byte-wise fast paths (a byte histogram, `bytes.translate`); the stretches around other
characters are decoded and turned into code points by the codecs' C loops, then into ids
by one table lookup. No step makes a Python object per character.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from toygpt_cli.errors import ToygptError

CHUNK = 16 << 20  # bytes read at a time
SUB_BLOCK = 64 << 10  # the unit in which a chunk is checked for non-ASCII (at least 4)
N_CODE_POINTS = 0x110000

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)

# 2-byte ids: few kernels take torch.uint16 (and torch < 2.3 lacks it), so ids are written
# through int16 and read back through an int16 view with a mask (tokens.to_ids).
UINT16 = getattr(torch, "uint16", torch.int16)


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
    return UINT16 if vocab_size <= 1 << 16 else torch.int32


def check_file(path: Path) -> int:
    """The file's size, or a one-line error when it is missing, not a file or empty."""
    if not path.exists():
        raise ToygptError(f"data file not found: {path}")
    if not path.is_file():
        raise ToygptError(f"data path is not a regular file: {path}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ToygptError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        if str(path.resolve()).startswith(("/proc/", "/sys/")):
            raise ToygptError(
                f"data file {path} reports no size (a /proc or /sys file); copy it to a "
                "regular file to train on it"
            )
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


def read_pieces(path: Path, digest, progress: Progress | None, phase: str) -> Iterator[bytes | str]:
    """The checked text in pieces cut between characters (see `_checked`). Every byte read
    also goes into `digest`."""
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
            yield from _checked(body, path, offset)
            offset += len(body)
            if progress is not None:
                progress(phase, done, total)
    if carry:  # the file ends inside a character
        _decoded(carry, path, offset)


def _checked(body: bytes, path: Path, offset: int) -> Iterator[bytes | str]:
    """`body` (which starts at byte `offset` of the file) checked and cut into pieces: runs
    of ASCII as bytes, the stretches around other characters decoded to str.

    Most text is mostly ASCII: only the SUB_BLOCK-sized stretches that hold something else
    are decoded, the rest stays bytes for the byte-wise fast paths.
    """
    if b"\x00" in body:
        raise ToygptError(f"data file is not text (it contains NUL bytes): {path}")
    if body.isascii():
        if body:
            yield body
        return
    n, pos, ascii_from, other_from = len(body), 0, 0, -1
    while pos < n:
        end = n if pos + SUB_BLOCK >= n else pos + _char_boundary(body[pos : pos + SUB_BLOCK])
        if body[pos:end].isascii():
            if other_from >= 0:  # a stretch of other characters ends here
                yield _decoded(body[other_from:pos], path, offset + other_from)
                other_from, ascii_from = -1, pos
        elif other_from < 0:  # one starts here
            if pos > ascii_from:
                yield body[ascii_from:pos]
            other_from = pos
        pos = end
    if other_from >= 0:
        yield _decoded(body[other_from:], path, offset + other_from)
    elif ascii_from < n:
        yield body[ascii_from:]


def _decoded(raw: bytes, path: Path, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ToygptError(
            f"data file is not UTF-8 text: {path} (invalid byte at offset {offset + exc.start})"
        ) from None


def _text_pieces(text: str) -> Iterator[bytes | str]:
    for i in range(0, len(text), CHUNK):
        piece = text[i : i + CHUNK]
        yield piece.encode("ascii") if piece.isascii() else piece


def _latin1(text: str) -> bytes | None:
    """The text as one byte per character when every code point is below 256, else None."""
    try:
        return text.encode("latin-1")  # a plain copy for such strings
    except UnicodeEncodeError:
        return None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # These passes are memory-bound ops on chunks: a second thread gains little, and on a
    # busy machine every multi-threaded op waits for a second core to be free.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def scan(pieces: Iterable[bytes | str]) -> tuple[int, str]:
    """(characters, sorted vocabulary) of the pieces."""
    seen = torch.zeros(N_CODE_POINTS, dtype=torch.bool)
    narrow: list[bytes] = []  # pieces with one byte per character
    wide: list[torch.Tensor] = []  # code points of the others
    n_chars = pending = 0

    def count() -> None:  # one histogram per CHUNK characters, not one per piece
        if narrow:
            seen[:256] |= torch.bincount(_view(b"".join(narrow), torch.uint8), minlength=256) > 0
        if wide:
            points = torch.cat(wide)
            top = int(points.max()) + 1
            seen[:top] |= torch.bincount(points, minlength=top) > 0
        narrow.clear()
        wide.clear()

    with _one_thread():
        for piece in pieces:
            n_chars += len(piece)
            pending += len(piece)
            raw = piece if isinstance(piece, bytes) else _latin1(piece)
            if raw is not None:
                narrow.append(raw)
            else:
                wide.append(_code_points(piece))
            if pending >= CHUNK:
                count()
                pending = 0
        count()
    vocab = "".join(map(chr, seen.nonzero().flatten().tolist()))
    return n_chars, vocab


class NotInVocabulary(ToygptError):
    """The text holds a character the vocabulary lacks."""


def encode(pieces: Iterable[bytes | str], vocab: str, write: Callable[[bytes], object]) -> int:
    """Write the ids of the pieces' characters under `vocab`; returns how many were
    written. A character outside `vocab` raises NotInVocabulary (it is never written as
    some other character's id)."""
    dtype = id_dtype(len(vocab))
    store = torch.int16 if dtype == UINT16 else dtype  # a bit pattern index_select can write
    codes = torch.tensor([ord(c) for c in vocab], dtype=torch.long)
    lut = torch.zeros(N_CODE_POINTS, dtype=store)
    lut[codes] = torch.arange(len(vocab), dtype=torch.int32).to(store)
    known = torch.zeros(N_CODE_POINTS, dtype=torch.bool)
    known[codes] = True
    known_bytes = bytes(c for c in range(256) if known[c])
    byte_table = bytes(lut[:256].tolist()) if store == torch.uint8 else None
    n = 0
    with _one_thread():
        for piece in pieces:
            n += len(piece)
            raw = piece if isinstance(piece, bytes) else _latin1(piece)
            if raw is not None and raw.translate(None, known_bytes):  # what is left: unknown
                raise NotInVocabulary("the text has characters outside the vocabulary")
            if raw is not None and byte_table is not None:
                write(raw.translate(byte_table))  # one C loop over bytes, no tensors
                continue
            points = _view(raw, torch.uint8).int() if raw is not None else _code_points(piece)
            if raw is None and not bool(known[points].all()):
                raise NotInVocabulary("the text has characters outside the vocabulary")
            out = bytearray(len(points) * lut.element_size())
            torch.index_select(lut, 0, points, out=torch.frombuffer(out, dtype=store))
            write(out)
    return n


def facts_of_text(text: str) -> TextFacts:
    raw = text.encode("utf-8")
    n_chars, vocab = scan(_text_pieces(text))
    return TextFacts(hashlib.sha256(raw).hexdigest(), len(raw), n_chars, vocab)


def encode_text(text: str, vocab: str) -> torch.Tensor:
    """The ids of an in-memory text, in the cache's storage width."""
    out = bytearray()
    encode(_text_pieces(text), vocab, out.extend)
    if not out:
        return torch.zeros(0, dtype=id_dtype(len(vocab)))
    return torch.frombuffer(out, dtype=id_dtype(len(vocab)))


def changed_error(path: Path) -> ToygptError:
    return ToygptError(f"{path} changed while it was being read; try again")
