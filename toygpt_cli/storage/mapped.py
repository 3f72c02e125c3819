"""Token files read through memory maps, with the process's resident memory kept flat.

Reading a memory-mapped file at random places makes its pages part of the process's
resident memory (recent Linux kernels map up to 2 MB around each read), so over a long run
every page of the file ends up counted. Those pages are the kernel's page cache, not the
process's own memory, but to keep resident memory honest and flat, the pages of a token
file are unmapped (MADV_DONTNEED: they stay in the page cache, and the next read maps them
again cheaply) after every TRIM_EVERY windows read from it: the reason nanoGPT re-creates
its np.memmap for every batch.
"""

from __future__ import annotations

import contextlib
import mmap
import weakref
from pathlib import Path

import torch

TRIM_EVERY = 256
_maps: weakref.WeakValueDictionary[int, mmap.mmap] = weakref.WeakValueDictionary()
_reads: dict[int, int] = {}


def map_tokens(path: Path, count: int, dtype: torch.dtype) -> torch.Tensor:
    """The ids in a token file as a 1-D tensor backed by a private, read-only-in-practice
    memory map (copy-on-write: writing to the tensor never changes the file)."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tokens = torch.frombuffer(mapped, dtype=dtype, count=count)  # keeps `mapped` alive
    key = tokens.untyped_storage().data_ptr()
    _maps[key], _reads[key] = mapped, 0
    return tokens


def note_reads(tokens: torch.Tensor, windows: int) -> None:
    """Count `windows` reads from `tokens`; unmap its pages every TRIM_EVERY of them when
    it is a token file's memory map (see above). Anything else is left alone."""
    if tokens.device.type != "cpu":
        return
    key = tokens.untyped_storage().data_ptr()
    mapped = _maps.get(key)
    if mapped is None:
        return
    _reads[key] += windows
    if _reads[key] >= TRIM_EVERY and hasattr(mapped, "madvise"):
        _reads[key] = 0
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mapped.madvise(mmap.MADV_DONTNEED)
