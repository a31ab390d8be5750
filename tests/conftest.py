"""Fixtures of the core's tests; those shared with the plugins' tests live in zoo_core.testing (a pytest plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo_core.testing import TINY_MODEL  # noqa: F401  (tests import it from here)

REPO_ROOT = Path(__file__).resolve().parents[1]


def zoo_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any ``ZOO_*`` setting, plus ``env``.

    ``PYTHONPATH`` given in ``env`` is put in front of the repository root, so a test can
    make extra distributions (plugins) importable in the child process.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") and k != "PYTHONPATH"}
    extra = dict(env or {})
    paths = [p for p in (extra.pop("PYTHONPATH", ""), str(REPO_ROOT)) if p]
    clean.update(extra)
    clean["PYTHONPATH"] = os.pathsep.join(paths)
    return clean


@pytest.fixture
def run_zoo(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run_zoo(*args, env=None, cwd=None)``: run ``python -m zoo_core.cli`` and return its result.

    Output is captured as text and the exit code is not checked, so a test can assert on
    failures too. The child gets a clean environment (see :func:`zoo_environment`).
    """

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zoo_core.cli", *map(str, args)],
            env=zoo_environment(env),
            cwd=cwd or tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
