"""Testing helpers for plugin authors: a conformance check per component kind, and a pytest plugin.

``from zoo_core.testing import check_backbone`` and the like; see ``docs/writing-plugins.md``.
Names are imported on first use, so that loading this package (pytest loads its plugin in
every session) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it.
_EXPORTS = {
    "CheckReport": "checks",
    "ConformanceError": "checks",
    "check_backbone": "checks",
    "check_ensembler": "checks",
    "check_head": "checks",
    "check_loss": "checks",
    "check_remapper": "checks",
    "check_tta": "checks",
    "SyntheticVSPW": "support",
    "TINY_MODEL": "support",
    "run_cli": "support",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
