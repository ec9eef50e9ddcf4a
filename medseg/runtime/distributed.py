"""torchrun support: rank/world from the environment, a process group on demand, gathering
Python objects on every rank. Without torchrun (no WORLD_SIZE) everything is rank 0 of 1.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def rank_and_world(device: torch.device | None = None) -> tuple[int, int]:
    """(rank, world size); starts the process group (gloo on CPU, nccl on CUDA) under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1

    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def gather(items: list[Any]) -> list[Any]:
    """Concatenate every rank's list on all ranks (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    parts: list[list[Any]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def finish() -> None:
    """Wait for every rank and tear the process group down (a gloo group left alive at exit
    can abort the process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _active():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (identity without a process group)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_over_ranks(value: float) -> float:
    """Mean of a float over the ranks (identity without a process group)."""
    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on some rank (keeps collective decisions, such as
    skipping a step or stopping, identical across ranks: a rank that diverges would hang DDP)."""
    if not _active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
