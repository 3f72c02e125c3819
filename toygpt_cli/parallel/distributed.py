"""Multi-process training through torchrun: DistributedDataParallel, NCCL on CUDA, gloo on CPU.

`Distributed.single()` is the ordinary one-process case, where every method is a no-op,
so the trainer has one code path. Under torchrun (RANK/WORLD_SIZE set) `from_env` joins
the process group; rank 0 alone writes files and draws progress.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from toygpt_cli.device import resolve_device
from toygpt_cli.errors import UsageError


def _gather(folder: Path, rank: int, world: int) -> None:
    """Wait, in Python, until every process has come this far. PyTorch's own meeting waits
    in C++, where a Ctrl-C is not heard, for peers that may have stopped while starting."""
    folder.joinpath(f"here.{rank}").touch()
    while not all(folder.joinpath(f"here.{r}").exists() for r in range(world)):
        time.sleep(0.02)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # fixed per rank under torchrun; else the config's

    @classmethod
    def single(cls) -> Distributed:
        return cls()

    @classmethod
    def from_env(cls, device_name: str = "auto") -> Distributed:
        """Join the torchrun process group when launched by torchrun, else single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1 or "RANK" not in os.environ:
            return cls.single()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", local)  # one GPU per process
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise UsageError(f"multi-process training runs on cuda or cpu, not {device.type}")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            # `--nproc` (launch.py): a folder; taken out, so that no child inherits it
            meeting = os.environ.pop("TOYGPT_RENDEZVOUS", None)
            if meeting and "TORCHELASTIC_RUN_ID" not in os.environ:  # not under torchrun
                _gather(Path(meeting), rank, world)
                store = Path(meeting, "store").as_uri()
                dist.init_process_group(backend, init_method=store, rank=rank, world_size=world)
                Path(meeting, f"joined.{rank}").touch()  # the launcher's sign: in the group
            else:  # torchrun: MASTER_ADDR and MASTER_PORT
                dist.init_process_group(backend)
        return cls(rank, world, local, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        ids = (
            [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        )
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of a list of work items (eval windows)."""
        return items[self.rank :: self.world_size] if self.active else items

    def _reduce(self, value: float, op) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.item()

    def pooled_mean(self, total: float, count: int) -> float:
        """Every rank's `total` over every rank's `count`: the mean of all their items,
        however unevenly they were shared (a window count that does not divide by the
        ranks, say)."""
        if not self.active:
            return total / max(count, 1)
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t[0] / t[1].clamp(min=1)).item()

    def max(self, value: float) -> float:
        """The largest of every rank's `value` (the budget clock all ranks follow)."""
        if not self.active:
            return value
        return self._reduce(value, dist.ReduceOp.MAX)

    def min(self, value: int) -> int:
        """The smallest of every rank's `value` (work sizes all ranks must share)."""
        if not self.active:
            return value
        return int(self._reduce(float(value), dist.ReduceOp.MIN))

    def agree_any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (stop requests, time budgets)."""
        if not self.active:
            return flag
        return self._reduce(float(flag), dist.ReduceOp.MAX) > 0

    def broadcast_path(self, path: Path | None) -> Path:
        """Rank 0's value of `path` on every rank (the run folder only rank 0 creates)."""
        if not self.active:
            assert path is not None
            return path
        # Plain tensors, not broadcast_object_list: object collectives need NumPy.
        data = str(path).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.long, device=self.device)
        dist.broadcast(size, src=0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, src=0)
        return Path(bytes(buf.cpu().tolist()).decode())

    def gather_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's random-generator state (a byte tensor of one fixed size), so a
        resume restores each rank's own stream."""
        if not self.active:
            return [state]
        local = state.to(self.device)
        states = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(states, local)
        return [s.cpu() for s in states]

    def barrier(self) -> None:
        """Wait until every rank gets here (the end of a run: ranks leave together)."""
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group; call it once the wrapper from `wrap` is dropped, so that
        the group's threads end here (left to the interpreter's exit, gloo can abort)."""
        if self.active and dist.is_initialized():
            gc.collect()  # a wrapper kept alive only by a reference cycle goes now
            dist.destroy_process_group()
