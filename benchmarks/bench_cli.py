"""Start-up time of the ``zoo`` commands that build nothing, and whether they import torch.

    python benchmarks/bench_cli.py [--reps 7]

Each command runs as its own process through the installed ``zoo`` script, with the
installed plugins (as a user has them), ``--reps`` times; the minimum and the median wall
time are printed against the target, and the median CPU time (user + system), which
other work on the machine does not inflate. A separate run of the same command in a probe
interpreter reports whether torch was imported. Targets: ``zoo --help`` under 0.5 s,
``zoo list`` under 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [(["--help"], 0.5), (["list"], 1.5), (["list", "--json"], 1.5), (["--version"], 0.5)]

PROBE = """
import json, sys
from zoo_core.cli import main
try:
    main({args!r}, prog_name="zoo")
except SystemExit:
    pass
print(json.dumps("torch" in sys.modules))
"""


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}


def run_times(command: list[str], reps: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of each run; CPU time does not grow when other work shares the cores."""
    walls, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def imports_torch(args: list[str]) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], env=environment(), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    zoo = shutil.which("zoo") or sys.exit("the zoo command is not installed (pip install -e .)")
    print(
        f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {args.reps} runs each "
        f"(plus one untimed warm-up)"
    )
    print(f"{'command':<18}{'wall min':>9}{'median':>8}{'cpu median':>12}{'target':>8}  {'torch imported':<15}")
    for command, target in COMMANDS:
        run_times([zoo, *command], 1)  # warm the file cache
        walls, cpus = run_times([zoo, *command], args.reps)
        verdict = "ok" if statistics.median(walls) < target else "SLOW"
        torch = "yes" if imports_torch(command) else "no"
        print(
            f"{'zoo ' + ' '.join(command):<18}{min(walls):>9.3f}{statistics.median(walls):>8.3f}"
            f"{statistics.median(cpus):>12.3f}{target:>8.1f}  {torch:<15}{verdict}"
        )


if __name__ == "__main__":
    main()
