"""What the pytest plugin's fixtures are made of, usable without pytest (a script, a notebook).

:data:`TINY_MODEL`, :class:`SyntheticVSPW` and :func:`run_cli` are public through
:mod:`zoo_core.testing`; importing this module imports neither pytest nor torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from click.testing import Result

__all__ = ["TINY_MODEL", "SyntheticVSPW", "run_cli"]

# A small FCN + OCR cascade on ResNet-10t (timm, no download): a training step takes a fraction of a
# second on 64x96 frames. Every part is a built-in, so it builds whatever plugins are installed.
TINY_MODEL: dict[str, Any] = {
    "num_classes": 124,
    "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [1, 2, 3]}},
    "heads": [
        {
            "type": "fcn",
            "args": {
                "in_index": [0, 1, 2],
                "input_transform": "resize_concat",
                "channels": 32,
                "num_convs": 1,
                "loss_weight": 0.4,
            },
        },
        {
            "type": "ocr",
            "args": {"in_index": [0, 1, 2], "input_transform": "resize_concat", "channels": 32, "ocr_channels": 16},
        },
    ],
}


# -- the command line, in this process --------------------------------------------------------


@contextlib.contextmanager
def isolated_zoo(env: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run ``zoo`` code as in a fresh process, and put back what it changed.

    Every ``ZOO_*`` variable is cleared (then ``env`` is set); the process-wide plugin
    registry is reset before and after; the environment, torch's thread count and its
    random state (which ``zoo train`` and ``zoo run`` set) are restored afterwards.
    """
    import torch

    from zoo_core.plugins import reset_registry

    saved_env = dict(os.environ)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    for name in [name for name in os.environ if name.startswith("ZOO_")]:
        del os.environ[name]
    os.environ.update(env or {})
    reset_registry()
    try:
        yield
    finally:
        reset_registry()
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)


def run_cli(*args: Any, env: Mapping[str, str] | None = None, input: str | None = None) -> Result:
    """``zoo ARGS`` in this process under :func:`isolated_zoo`; click's ``Result``.

    An exception other than the CLI's own exit propagates: a traceback a user would see
    fails the test rather than passing as a non-zero exit code.
    """
    from click.testing import CliRunner

    from zoo_core.cli import main

    runner = CliRunner()  # click >= 8.2: stdout and stderr apart, output holds both
    with isolated_zoo(env):
        return runner.invoke(
            main,
            [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args],
            input=input,
            catch_exceptions=False,
        )


@dataclass(frozen=True)
class SyntheticVSPW:
    """A synthetic dataset in VSPW's layout: ``root/data/<video>/{origin,mask}/``, ``root/{train,val,test}.txt``."""

    root: Path
    splits: dict[str, list[str]]  # split -> video names; the test split has no masks
    frames: int  # per video
    size: tuple[int, int]  # (height, width)

    def chance_miou(self, split: str = "val") -> tuple[float, float]:
        """The mIoU of two predictors that ignore the image: uniformly random classes, and the majority class.

        Over the labelled pixels of ``split``: with C classes, class c holding n_c of N pixels
        expects n_c / C true positives out of N / C predictions, so IoU_c = (n_c / C) /
        (n_c + N / C - n_c / C); the majority class m everywhere scores n_m / N for m and 0
        for the others. Both average over the classes present, as the metric does. A trained
        model should beat the larger of the two.
        """
        import numpy as np

        from zoo_core.data.classes import NUM_CLASSES
        from zoo_core.data.vspw import VSPWDataset

        dataset = VSPWDataset(self.root, split)
        counts = np.zeros(256, dtype=np.int64)
        for video in dataset.videos:
            for ref in dataset.frames(video):
                counts += np.bincount(dataset.load_mask(ref).ravel(), minlength=256)
        n = counts[:NUM_CLASSES].astype(np.float64)
        present, total = n > 0, n.sum()
        uniform = (n / NUM_CLASSES) / (n + total / NUM_CLASSES - n / NUM_CLASSES)
        return float(uniform[present].mean()), float(n.max() / total / present.sum())
