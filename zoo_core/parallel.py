"""Several processes on one machine: the process group torchrun describes, ``--nproc``, splitting the work.

``torchrun --nproc_per_node=N $(which zoo) COMMAND ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in each process; :func:`setup` joins the group (gloo on the CPU, nccl on CUDA).
Without those variables a command is a single process. ``COMMAND ... --nproc N`` starts the same
command under torchrun (:func:`relaunch`), through a thin wrapper around torchrun that turns a
rank's failure into the rank's own one-line error instead of torchrun's report.

``zoo train`` splits batches (``engine/distributed.py`` holds its collectives); ``zoo run`` splits
the videos round-robin (:func:`shard`): rank 0 alone claims the output directory while the others
wait (:func:`barrier`), every rank writes its own videos' files, and rank 0 waits for all of them
(:func:`wait_for`) and merges them in the one-process order.

torch is imported inside the functions: the command line's error path imports this module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .errors import ConfigError, ZooError

if TYPE_CHECKING:
    import click
    import torch

T = TypeVar("T")

ERRORS_ENV = "ZOO_RANK_ERRORS"
"""Set by the launcher for its ranks: the folder where a failing rank leaves its one-line error."""


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


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group if torchrun started this process; returns the world and this rank's device."""
    if not under_torchrun():
        return World(), device
    import torch
    import torch.distributed as dist

    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
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
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def sync(world: World) -> None:
    """Wait here until every rank arrives (rank 0 has claimed the output directory, say).

    A rank that failed instead has reported its error and exited: the others leave quietly (exit
    code 1) rather than with the collective's own traceback (gloo: "Connection closed by peer").
    """
    try:
        barrier(world)
    except RuntimeError:
        raise SystemExit(1) from None


def shard(items: Sequence[T], world: World) -> list[T]:
    """This rank's share of ``items``, round-robin: ``items[rank::size]`` (all of them for one process)."""
    return list(items[world.rank :: world.size])


def wait_for(
    paths: Sequence[Path],
    log: Callable[[str], None],
    on_found: Callable[[Path], None] = lambda path: None,
    poll: float = 0.2,
) -> None:
    """Rank 0: return once every path exists (the other ranks' results), calling ``on_found`` as each appears.

    Under torchrun a rank that fails ends the whole run (torchrun terminates the others), so rank 0 is
    not left waiting for a rank that died.
    """
    pending = list(paths)
    announced = False
    while True:
        for path in [p for p in pending if p.exists()]:
            pending.remove(path)
            on_found(path)
        if not pending:
            return
        if not announced:
            log(f"waiting for {len(pending)} result(s) of the other processes, e.g. {pending[0]}")
            announced = True
        time.sleep(poll)


# -- starting N processes: `--nproc` -------------------------------------------------------------------


def launch(nproc: int, zoo_args: Sequence[str]) -> int:
    """Run ``zoo ZOO_ARGS`` in ``nproc`` processes on this machine with torchrun; returns its exit code."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    command = [
        sys.executable,
        "-m",
        "zoo_core.parallel",  # torchrun, reporting a failed rank in one line (see _torchrun)
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


def relaunch(nproc: int) -> None:
    """In a click command with ``--nproc``: for ``nproc > 1`` outside torchrun, run this same command (its
    arguments rebuilt from click's context, without ``--nproc``) in ``nproc`` processes and exit with their
    exit code. Otherwise return: the command runs here (under torchrun, as one of the ranks)."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if nproc == 1 or under_torchrun():
        return
    import click

    sys.exit(launch(nproc, command_args(click.get_current_context(), skip=("nproc",))))


def command_args(ctx: click.Context, skip: Sequence[str] = ()) -> list[str]:
    """The arguments that run the command of ``ctx`` again with the same values (subcommand names first)."""
    import click

    names, context = [], ctx
    while context.parent is not None:
        names.insert(0, context.info_name)
        context = context.parent
    args = []
    for param in ctx.command.params:
        if param.name in skip or param.name not in ctx.params or ctx.params[param.name] is None:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            args += [str(v) for v in value] if param.nargs != 1 else [str(value)]
        elif param.is_flag:  # --resume, or --cache/--no-cache
            if value or param.secondary_opts:
                args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            for item in value if param.multiple else [value]:
                args += [param.opts[0], *([str(v) for v in item] if param.nargs > 1 else [str(item)])]
    return names + args


def report_to_launcher(error: ZooError) -> bool:
    """In a rank started by :func:`launch`: leave the error's line for the launcher, which prints the first
    failing rank's once. False elsewhere (the caller prints it)."""
    folder, rank = os.environ.get(ERRORS_ENV), os.environ.get("RANK")
    if not folder or rank is None:
        return False
    try:
        (Path(folder) / f"{rank}.txt").write_text(str(error), encoding="utf-8")
    except OSError:
        return False
    return True


def _torchrun(argv: list[str]) -> int:
    """``python -m zoo_core.parallel TORCHRUN_ARGS``: torchrun whose failure is the failing rank's one line.

    torchrun ends a failed run with a traceback of its own and a report; here the first failing rank's
    error (left by :func:`report_to_launcher`) is printed once instead, and its exit code returned.
    """
    import logging
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for handler in logging.getLogger("torch.distributed").handlers:  # its start-up banner and failure logs
        handler.setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="zoo-ranks-") as folder:
        os.environ[ERRORS_ENV] = folder  # the workers inherit this environment
        try:
            run(get_args_parser().parse_args(argv))
        except ChildFailedError as exc:
            line, code = _first_failure(Path(folder), exc)
            print(f"error: {line}", file=sys.stderr)
            return code
        except SignalException as exc:  # Ctrl-C or SIGTERM: the workers stopped and said how (zoo train: resume)
            report = _first_report(Path(folder))
            if report is not None:
                print(f"error: {report[1]}", file=sys.stderr)
            return 128 + int(exc.sigval)
    return 0


def _first_report(folder: Path) -> tuple[int, str] | None:
    """(rank, line) of the rank that reported first: the others fail because it did (torchrun stops them,
    a collective breaks)."""
    reports = sorted(folder.glob("*.txt"), key=lambda path: path.stat().st_mtime_ns)
    return (int(reports[0].stem), reports[0].read_text(encoding="utf-8")) if reports else None


def _first_failure(folder: Path, failed) -> tuple[str, int]:
    """The line and exit code of the first rank that reported; without a report, what torchrun observed."""
    report = _first_report(folder)
    if report is not None:
        failure = failed.failures.get(report[0])
        return report[1], failure.exitcode if failure is not None and failure.exitcode > 0 else 1
    rank, failure = failed.get_first_failure()
    if failure.exitcode < 0:
        return f"the process of rank {rank} was killed by {failure.signal_name()} (out of memory?)", 1
    return f"the process of rank {rank} failed with exit code {failure.exitcode}; its output is above", failure.exitcode


if __name__ == "__main__":
    sys.exit(_torchrun(sys.argv[1:]))
