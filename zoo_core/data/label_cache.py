"""The labelled-fraction filter (keep an image only if enough of it is labelled after remapping) and
its cache: deciding reads every label map once, so the kept list is stored as JSON and reused."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..fileio import atomic_write_text
from ..interfaces import Remapper

Log = Callable[[str], None]

CACHE_VERSION = 1
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")  # in a cache file's name


def cache_dir() -> Path:
    """Where the zoo keeps derived data: ``ZOO_CACHE_DIR``, else ``XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "zoo"


def labelled_subset(
    dataset: Any,
    keep: Callable[[np.ndarray], bool],
    threshold: float,
    fingerprint: str,
    progress: bool = True,
    log: Log | None = None,
) -> list[int]:
    """The indices of ``dataset`` whose train-id mask passes ``keep`` (at least ``threshold`` labelled).

    Deciding reads every label map once, so the answer is cached as JSON in :func:`cache_dir`,
    keyed by the resolved root, the split, the file list, ``fingerprint`` (the remapping) and
    the threshold. ``dataset`` has ``kind``, ``root``, ``split``, ``keys()``, ``load_mask(i)``.
    """
    log = log or stderr_log
    keys = dataset.keys()
    what = f"{dataset.kind} {dataset.split} ({dataset.root})"
    record = {
        "version": CACHE_VERSION,
        "kind": dataset.kind,
        "root": str(Path(dataset.root).resolve()),
        "split": dataset.split,
        "files": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
        "remapping": fingerprint,
        "threshold": threshold,
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    # The split is the user's text (`train+val`, or `a/../..`): only its safe characters go into the file name.
    label = _UNSAFE_IN_NAME.sub("_", f"{dataset.kind}-{dataset.split}")[:60]
    path = cache_dir() / "labelled" / f"{label}-{digest[:20]}.json"
    kept = _read_keep_list(path, record, keys)
    if kept is None:
        bar = tqdm(
            range(len(keys)),
            desc=f"labelled {dataset.kind} {dataset.split}",
            unit="image",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        kept = [index for index in bar if keep(dataset.load_mask(index))]
        try:
            atomic_write_text(path, json.dumps({**record, "total": len(keys), "kept": [keys[i] for i in kept]}))
        except OSError as exc:
            log(f"warning: cannot write the cache {path} ({exc}); the next run scans {what} again")
        source = "scanned"
    else:
        source = f"cached in {path}"
    dropped = len(keys) - len(kept)
    log(
        f"{what}: kept {len(kept):,} of {len(keys):,} images, dropped {dropped:,} with less than "
        f"{threshold:.0%} labelled after remapping ({source})"
    )
    return kept


def _read_keep_list(path: Path, record: dict, keys: list[str]) -> list[int] | None:
    """The cached indices, or None when there is no usable cache (missing, unreadable or stale)."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if any(cached.get(field) != value for field, value in record.items()) or cached.get("total") != len(keys):
            return None
        position = {key: index for index, key in enumerate(keys)}
        return [position[key] for key in cached["kept"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr)


def remapping_fingerprint(remapper: Remapper) -> str:
    """What decides a mask's fate: the remapper's class and its lookup table."""
    kind = f"{type(remapper).__module__}.{type(remapper).__qualname__}"
    return hashlib.sha256(kind.encode() + np.asarray(remapper.lut, dtype=np.uint8).tobytes()).hexdigest()
