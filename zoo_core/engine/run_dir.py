"""The run directory of ``zoo train``: what it holds, whether it may be written or resumed, and its log.

``train_run.json`` records the pipeline that started the run (its fingerprint); ``--resume``
refuses a different one. ``train_log.jsonl`` holds one record per logged iteration.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_text
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME
from ..pipeline.schema import Pipeline
from .checkpoint import list_checkpoints

RUN_RECORD = "train_run.json"
LOG_NAME = "train_log.jsonl"
CHECKPOINTS_DIR = "checkpoints"
SWA_DIR = "swa"


def run_fingerprint(pipeline: Pipeline) -> dict:
    """What a resumed run must share with the interrupted one (runtime settings may change)."""
    return pipeline.model_dump(mode="json", include={"data", "model", "train"})


def check_run_dir(pipeline: Pipeline, out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite a run or to resume a different one."""
    found = list_checkpoints(out / CHECKPOINTS_DIR)
    record_path = out / RUN_RECORD
    if not resume:
        if found or (out / WEIGHTS_NAME).exists():
            raise ConfigError(
                f"{out} already holds a training run; continue it with --resume, or train into another --out"
            )
        return None
    if record_path.is_file():
        try:
            before = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise DataError(
                f"{record_path} is unreadable ({exc}); it records the pipeline that started the run, which "
                "--resume compares with yours: restore it, delete it to resume without that check, "
                "or train into another --out"
            ) from None
        now = run_fingerprint(pipeline)
        changed = sorted(differences(before, now))
        if changed:
            raise ConfigError(
                f"--resume: the pipeline differs from the one that started {out} at "
                f"{', '.join(changed[:8])}; resume with the same pipeline and --set values, "
                "or train into another --out"
            )
    return found[-1][1] if found else None


def finished(out: Path, last: int) -> bool:
    """Whether ``out`` holds the final model of a run of ``last`` iterations."""
    try:
        return json.loads((out / CONFIG_NAME).read_text()).get("iteration") == last
    except (OSError, ValueError, AttributeError):  # missing, torn, or not an object
        return False


def differences(before, now, prefix: str = "") -> list[str]:
    """The dotted paths at which two JSON values differ."""
    if isinstance(before, dict) and isinstance(now, dict):
        keys = set(before) | set(now)
        return [d for k in keys for d in differences(before.get(k), now.get(k), f"{prefix}{'.' if prefix else ''}{k}")]
    return [] if before == now else [prefix or "(all)"]


def start_run_dir(pipeline: Pipeline, out: Path, step: int) -> None:
    """Record the run's pipeline and forget the log past ``step``, where training (re)starts."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_RECORD, json.dumps(run_fingerprint(pipeline), indent=2) + "\n")
    truncate_log(out / LOG_NAME, step)


def truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint being resumed: they are about to be recomputed.

    A last line cut short (the run was killed while writing it) goes too: it is past the
    checkpoint, which is written after its iteration's record. A file that does not end
    with a newline is rewritten, so that the next record starts a line of its own.
    """
    if not path.is_file():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")  # records are ASCII: bad bytes mean a bad line
    lines = text.splitlines()
    last = max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        iteration = _logged_iteration(line)
        if iteration is None and number < last:
            raise DataError(
                f"{path}, line {number}: not a record of zoo train ({line[:60]!r}); "
                "delete that line (or the whole log, which only informs) and resume again"
            )
        if iteration is not None and iteration <= step:
            kept.append(line)
    if kept != lines or (text and not text.endswith("\n")):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _logged_iteration(line: str) -> int | None:
    """The ``iter`` of a log line, or None for a line that is not a whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    iteration = record.get("iter") if isinstance(record, dict) else None
    return iteration if isinstance(iteration, int) and not isinstance(iteration, bool) else None
