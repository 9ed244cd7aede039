"""Data-parallel training with PyTorch's own engine, launched by `torchrun`.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous variables); `from_env` reads
them, `setup` joins the process group (NCCL on CUDA, gloo on CPU) and picks this rank's device.
Gradient averaging is DistributedDataParallel's; nothing here reduces anything by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank among world_size, and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, summaries, images and the progress bar."""
        return self.rank == 0


def from_env() -> Dist:
    """The torchrun environment, or a single process when it is not set."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    return Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )


def setup(d: Dist, device: torch.device) -> torch.device:
    """Join the process group; on CUDA each rank takes GPU `local_rank`."""
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=d.rank,
            world_size=d.world_size,
            device_id=device if device.type == "cuda" else None,
        )
    return device


def wrap(module: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """`module` inside DistributedDataParallel when distributed, else itself. Every parameter
    gets a gradient in each backward through the wrapper, so no unused-parameter search."""
    if not d.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what checkpoints save: no `module.` prefixes)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def gather(obj: Any, d: Dist) -> list[Any]:
    """`obj` of every rank, in rank order (on every rank)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def max_over_ranks(value: int, d: Dist, device: torch.device) -> int:
    """The largest `value` of all ranks (one small all-reduce; `device`: this rank's)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
