"""torchrun support: who am I, which seeds are mine, and how ranks combine their sums.

Started by ``torchrun --nproc_per_node=K -m bench.run ...`` every process gets RANK/WORLD_SIZE in
its environment; without them the run is a single process and every helper here is a no-op.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# Rank 0 may fit a PAS artifact while the others wait at a barrier; give it time.
_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_world() -> World:
    """The rank layout torchrun put in the environment (a single process if none)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_world(device: torch.device) -> World:
    """Join the process group (gloo on CPU, nccl on CUDA) when launched with several ranks."""
    world = launched_world()
    if world.active and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return world


def close_world(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def seed_range(num_samples: int, world: World) -> range:
    """This rank's contiguous block of seeds 0..num_samples-1 (blocks differ in size by at most 1)."""
    base, extra = divmod(num_samples, world.world_size)
    start = world.rank * base + min(world.rank, extra)
    return range(start, start + base + (world.rank < extra))


def sum_across(world: World, tensors: Sequence[Tensor]) -> None:
    """Add each tensor over all ranks, in place."""
    if world.active:
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def max_across(world: World, value: float, device: torch.device) -> float:
    """The largest ``value`` over all ranks."""
    if not world.active:
        return value
    tensor = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)


def from_main(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()
