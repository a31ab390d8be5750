"""Distributed data parallel: the process group torchrun describes, and ``zoo train --nproc``.

``torchrun --nproc_per_node=N $(which zoo) train PIPELINE ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in each process; :func:`setup` joins the group (gloo on
the CPU, nccl on CUDA). Without those variables the run is a single process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group if torchrun started this process; returns the world and this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                "start at most one process per GPU"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def launch(nproc: int, zoo_args: Sequence[str]) -> int:
    """Run ``zoo ZOO_ARGS`` in ``nproc`` processes on this machine with torchrun; returns its exit code."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "zoo_core.cli",
        *zoo_args,
    ]
    process = subprocess.Popen(command)
    # A terminal's Ctrl-C reaches torchrun and the workers by itself (they checkpoint): wait for them.
    # SIGTERM sent to this process alone is passed on.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum)),
    }
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
