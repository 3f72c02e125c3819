"""Choosing the device and the compute precision, and the autocast context for it."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from toygpt_cli.errors import ToygptError, UsageError

# Float32 weights up to this size sample faster in float32 than in bf16 on a CPU, or up to
# half the last-level cache where that is larger (last_level_cache_bytes).
GENERATION_CACHE_BYTES = 8 * 2**20

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    base = name.split(":")[0]
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cpu":
        return torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ToygptError(
                "CUDA is not available here (no NVIDIA GPU visible, or a CPU-only torch build); "
                "use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ToygptError(
                f"{name} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    if base == "mps":
        if not _mps_available():
            raise ToygptError("MPS (Apple GPU) is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise UsageError(f"unknown device {name!r}; choose one of auto, cpu, cuda, mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX).

    Without them PyTorch's bf16 matmuls fall back to slow paths (about 1 GFLOP/s on an
    AVX2-only EPYC, against ~170 GFLOP/s in float32), so bf16 must not be chosen there.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


@functools.cache
def last_level_cache_bytes(caches: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of the first CPU's last-level cache as Linux reports it (None where unknown)."""
    sizes: dict[int, int | None] = {}
    for index in caches.glob("index*"):
        try:
            level = int((index / "level").read_text())
        except (OSError, ValueError):
            continue
        try:
            size = (index / "size").read_text().strip()
            unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
            sizes[level] = int(size.rstrip("KMG")) * unit
        except (OSError, ValueError):
            sizes.setdefault(level, None)  # that level is there, its size unknown
    return sizes[max(sizes)] if sizes else None


def resolve_dtype(
    name: str, device: torch.device, generation: bool = False, n_params: int = 0
) -> str:
    """'auto' picks bfloat16 where the hardware runs it fast, float32 elsewhere.

    Generation on a CPU differs: one position at a time is matrix-vector work. For a model
    whose float32 weights sit in cache, bf16 only adds casts (the 1M-parameter presets
    sample 1.5x faster in float32; on a Xeon with 300 MiB of L3, the 7M default model too:
    184 against 102 chars/s on one thread); where they do not, reading the weights is the
    cost and bf16 halves it (the 7M model on a Zen 4: 291 against 204 chars/s).
    """
    if name == "auto" and generation and device.type == "cpu":
        cache = max(GENERATION_CACHE_BYTES, (last_level_cache_bytes() or 0) // 2)
        if n_params * 4 <= cache or not cpu_has_fast_bf16():
            return "float32"
        return "bfloat16"
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bfloat16"
        if device.type == "cpu" and cpu_has_fast_bf16():
            return "bfloat16"
        return "float32"
    if name not in TORCH_DTYPES:
        raise UsageError(f"unknown dtype {name!r}; choose one of auto, {', '.join(TORCH_DTYPES)}")
    if name == "float16" and device.type == "cpu":
        raise UsageError("float16 training needs a GPU; on CPU use --dtype bfloat16 or float32")
    if name == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ToygptError("this GPU does not support bfloat16; use --dtype float16 or float32")
    return name


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; weights and optimizer state stay float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[dtype])


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int, generation: bool = False) -> None:
    """torch's CPU threads: `threads`, or (0) torch's choice, one per core; for generation
    one, since drawing one character at a time from a small model is matrix-vector work
    that a second thread slows down more than it helps (measured in docs/results.md)."""
    if threads > usable_cpus():
        raise UsageError(
            f"--threads {threads} is more than the {usable_cpus()} CPUs this process may use"
        )
    if threads > 0:
        torch.set_num_threads(threads)
    elif generation:
        torch.set_num_threads(1)
