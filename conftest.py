"""Shared fixtures for the tests of the core and of the plugins (plugins/*/tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parent

# A small FCN + OCR cascade on ResNet-10t: trains a step in a fraction of a second on 64x96 frames.
TINY_MODEL = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [1, 2, 3]}},
    "heads": [
        {"type": "fcn", "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 32,
                                 "num_convs": 1, "loss_weight": 0.4}},
        {"type": "ocr", "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 32,
                                 "ocr_channels": 16}},
    ],
}


def zoo_environment(env: Optional[dict[str, str]] = None) -> dict[str, str]:
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

    def run(*args: str, env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zoo_core.cli", *map(str, args)],
                              env=zoo_environment(env), cwd=cwd or tmp_path,
                              capture_output=True, text=True, timeout=timeout)

    return run
