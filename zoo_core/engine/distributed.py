"""Distributed data parallel for ``zoo train``: the collectives of the training loop.

The process group, ``--nproc`` and sharding are in :mod:`zoo_core.parallel` (``zoo run`` uses them
too); they are re-exported here for the training engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from ..parallel import World, barrier, launch, setup, teardown

__all__ = ["World", "any_rank", "barrier", "check_identical", "launch", "mean_over_ranks", "setup", "teardown"]


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (all ranks must stop at the same iteration)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(values: Sequence[float], world: World, device: torch.device) -> list[float]:
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / world.size).tolist()


def check_identical(model: torch.nn.Module, world: World, device: torch.device) -> None:
    """Raise if the ranks' weights differ (they must: DDP averages every gradient)."""
    if not world.distributed:
        return
    fingerprint = (
        torch.stack(
            [torch.stack([p.detach().double().sum(), p.detach().double().abs().sum()]) for p in model.parameters()]
        )
        .flatten()
        .to(device)
    )
    high, low = fingerprint.clone(), -fingerprint
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MAX)
    if not torch.equal(high, -low):
        raise RuntimeError(
            f"the {world.size} ranks ended with different weights; a component is not "
            "deterministic across processes or skipped the gradient all-reduce"
        )
