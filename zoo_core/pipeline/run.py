"""``zoo run``: data -> model(s) with TTA -> ensemble -> PNGs -> evaluation -> report.

A stream, one video at a time and one frame at a time: nothing holds a video's
probabilities. Every file is written atomically; a video counts as finished once its
statistics file ``state/<video>.npz`` exists, so a rerun into the same directory skips
finished videos and redoes the one that was interrupted.

``pipeline.json`` is the run's identity: the pipeline, the sha256 of each model's
``config.json`` and weights (with their size and time, so an unchanged file is not hashed
again) and the provenance of every component. A rerun resumes only when the pipeline and
every model file match; results of different pipelines or weights never mix.

Under torchrun (``zoo run --nproc N``) each process predicts ``videos[rank::N]``; rank 0 alone
claims the directory first, and at the end merges every video's statistics in the video order
and builds the report from the PNGs, so the output does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from ..catalog import bind_component
from ..data.vspw import VSPWDataset, normalize
from ..errors import ConfigError, DataError, error_location
from ..evaluation.confusion import write_confusion
from ..evaluation.evaluator import StreamingEvaluator, VideoStats
from ..fileio import atomic_write_text
from ..hub.client import LOCK_NAME, Lock, file_sha256, resolve_weights
from ..inference.predictor import ModelRunner, Predictor
from ..inference.sinks import PngWriter, overlay, prefetch, read_label_png
from ..interfaces import BindContext
from ..model_dir import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ModelSpec,
    cannot_rebuild,
    describe_model,
    load_model_dir,
    model_components,
    provenance,
    read_model_config,
)
from ..parallel import World, setup, shard, sync, teardown, wait_for
from ..plugins import get_catalog
from ..runtime import resolve_amp, resolve_device
from .report import write_report
from .schema import Pipeline, PipelineModel

STATE_DIR = "state"
PRED_DIR = "pred"
STAMP_NAME = "pipeline.json"  # the run's identity: fingerprint, pipeline, model hashes, provenance
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)


@dataclass
class PreparedModel:
    """A pipeline model before its weights load: where they are and what its ``config.json`` says."""

    spec: PipelineModel
    path: Path
    config: dict
    label: str  # how messages name it: model 'swin' (backbone 'timm', heads ... from zoo-core 0.1.0)


def prepare_models(pipeline: Pipeline, dataset: VSPWDataset) -> tuple[list[PreparedModel], list[str], int, Lock]:
    """Resolve every model's weights and read its ``config.json`` (no weights load); check they agree on the classes.

    Returns the models, the class names (the first model's, else the dataset's), the number
    of classes and the lock of the weights that came from registry cards (repo, revision, sha256).
    """
    if not pipeline.models:
        raise ConfigError(
            "models: the pipeline names no trained model to run; add `models: [{name: ..., weights: DIR}]`"
        )
    pinned = Lock.load(pipeline.lock) if pipeline.lock else None
    used = Lock()
    prepared, class_names, num_classes = [], None, None
    for i, spec in enumerate(pipeline.models):
        resolved = resolve_weights(spec.weights, pinned)
        if resolved.repo_id:
            used.add(resolved)
        config_path = resolved.path / CONFIG_NAME
        config = read_model_config(resolved.path)
        model_spec = ModelSpec.parse(config["model"], f"{config_path}: model")
        names, n = config.get("class_names"), model_spec.num_classes
        if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
            raise DataError(f"{config_path}: class_names must be a list of names; restore the file or pull it again")
        if num_classes is not None and n != num_classes:
            raise ConfigError(
                f"models[{i}] ({spec.name}): predicts {n} classes, unlike models[0] ({num_classes}); "
                "an ensemble needs models trained on the same label set"
            )
        if num_classes is not None and names != class_names:
            raise ConfigError(
                f"models[{i}] ({spec.name}): {_class_difference(names, class_names, pipeline.models[0].name)}; "
                "an ensemble needs models trained on the same label set, the classes in the same order"
            )
        num_classes, class_names = n, names
        try:
            label = describe_model(spec.name, model_spec)
        except ConfigError as exc:  # a component whose plugin is not installed
            raise ConfigError(f"models[{i}] ({spec.name}): {cannot_rebuild(config_path, config, exc)}") from None
        prepared.append(PreparedModel(spec, resolved.path, config, label))
    return prepared, list(class_names or dataset.class_names), num_classes, used


def _class_difference(names: list[str] | None, first: list[str] | None, first_model: str) -> str:
    """How the class names of a model differ from those of models[0] (with as many classes)."""
    if names is None:
        return f"its config.json records no class names, that of models[0] ({first_model}) does"
    if first is None:
        return f"its config.json records class names, that of models[0] ({first_model}) does not"
    index = next((i for i, (a, b) in enumerate(zip(names, first)) if a != b), None)
    if index is None:  # one list is longer than the other
        return f"its config.json lists {len(names)} class names, that of models[0] ({first_model}) {len(first)}"
    return f"class {index} is {names[index]!r}, but {first[index]!r} in models[0] ({first_model})"


def models_context(
    models: list[PreparedModel], class_names: list[str], num_classes: int, device: torch.device
) -> BindContext:
    """The :class:`BindContext` of a pipeline's models: their names and directories, classes and device."""
    return BindContext(
        model_names=tuple(m.spec.name for m in models),
        class_names=tuple(class_names),
        num_classes=num_classes,
        device=device,
        model_dirs=tuple(m.path for m in models),
    )


def build_components(pipeline: Pipeline, context: BindContext) -> tuple[list[tuple[Any, str]], tuple[Any, str]]:
    """Build each model's TTA policy and the ensembler, with their labels, and bind them to ``context``.

    The ensembler is built and bound for a one-model pipeline too (where it is never called), so
    arguments that do not fit the pipeline fail here, before any model loads.
    """
    catalog = get_catalog()
    ttas = []
    for i, spec in enumerate(pipeline.models):
        tta = catalog.build("tta", spec.tta.type, spec.tta.args)
        label = f"{catalog.get('tta', spec.tta.type).describe()} of model {spec.name!r}"
        bind_component(tta, label, replace(context, kind="tta", where=f"models[{i}].tta"))
        ttas.append((tta, label))
    ensembler = catalog.build("ensembler", pipeline.ensemble.type, pipeline.ensemble.args)
    label = catalog.get("ensembler", pipeline.ensemble.type).describe()
    bind_component(ensembler, label, replace(context, kind="ensembler", where="ensemble"))
    return ttas, (ensembler, label)


def run_provenance(pipeline: Pipeline, models: list[PreparedModel]) -> dict:
    """Who provided each component of the run: every model's backbone and heads, its TTA policy, the ensembler."""
    components = []
    for i, model in enumerate(models):
        components += model_components(model.config["model"], f"models[{i}]")
        components.append((f"models[{i}].tta", "tta", model.spec.tta.type))
    components.append(("ensemble", "ensembler", pipeline.ensemble.type))
    return provenance(components)


# -- the run directory: what it holds must come from one pipeline and one set of weights ---------------


def read_stamp(out: Path) -> dict | None:
    """``out/pipeline.json`` of an earlier run, or None; a clear error for a file no run wrote."""
    path = out / STAMP_NAME
    if not path.exists():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); it is not the record of a `zoo run`: "
            f"choose another --out, or delete {out} to start over"
        ) from None
    if not isinstance(stamp, dict) or not isinstance(stamp.get("fingerprint"), str):
        raise ConfigError(
            f"{path} is not the record of a `zoo run` (expected an object with a 'fingerprint'); "
            f"choose another --out, or delete {out} to start over"
        )
    return stamp


def model_contents(models: list[PreparedModel], stamp: dict | None) -> dict[str, dict]:
    """``{model: {"path", "files": {file: {sha256, size, mtime_ns}}}}`` of each model's ``config.json`` and weights.

    A file whose path, size and modification time match the earlier run's record keeps its
    stored sha256 (hashing 1 GB of weights takes seconds); any other file is hashed, once per run.
    """
    before = (stamp or {}).get("models")
    before = before if isinstance(before, dict) else {}
    record = {}
    for model in models:
        path = str(model.path.resolve())
        known = before.get(model.spec.name)
        known_files = known.get("files", {}) if isinstance(known, dict) and known.get("path") == path else {}
        files = {}
        for name in MODEL_FILES:
            stat = (model.path / name).stat()
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            old = known_files.get(name)
            if isinstance(old, dict) and all(old.get(k) == v for k, v in entry.items()) and old.get("sha256"):
                files[name] = {"sha256": old["sha256"], **entry}
            else:
                files[name] = {"sha256": file_sha256(model.path / name), **entry}
        record[model.spec.name] = {"path": path, "files": files}
    return record


def run_fingerprint(pipeline: Pipeline, contents: dict[str, dict], precision: str) -> str:
    """What a resumed run must share: the pipeline's fingerprint, the sha256 of every file of every model and
    the precision ``runtime.amp`` resolved to (``auto`` may choose differently on another machine)."""
    identity = {"pipeline": pipeline.fingerprint(), "models": _file_hashes(contents), "precision": precision}
    data = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def _file_hashes(contents: Any) -> dict[str, dict[str, str]]:
    """``{model: {file: sha256}}`` of a :func:`model_contents` record (empty for a record an older run lacks)."""
    if not isinstance(contents, dict):
        return {}
    return {
        model: {name: f.get("sha256") for name, f in entry["files"].items() if isinstance(f, dict)}
        for model, entry in contents.items()
        if isinstance(entry, dict) and isinstance(entry.get("files"), dict)
    }


def finished_videos(out: Path) -> list[str]:
    """Videos whose marker exists: statistics (``state/V.npz``) or, without evaluation, ``state/V.done``."""
    state = out / STATE_DIR
    return sorted(p.stem for p in state.glob("*") if p.suffix in (".npz", ".done")) if state.is_dir() else []


def _claim_output(
    out: Path,
    pipeline: Pipeline,
    stamp: dict | None,
    contents: dict[str, dict],
    record: dict,
    precision: str,
    log: Callable[[str], None],
) -> None:
    """Make ``out`` this run's: resume the same run, start over where nothing finished, refuse to mix results.

    A run is the same when the pipeline's fingerprint and the sha256 of every model file match.
    A plugin or zoo-core version that changed since only warns: the results may differ slightly.
    """
    fingerprint = run_fingerprint(pipeline, contents, precision)
    if stamp is not None and stamp["fingerprint"] == fingerprint:
        _warn_version_changes(out, stamp.get("provenance"), record, log)
        # Keep the record of the run that started the directory; refresh the files' size and time only.
        atomic_write_text(out / STAMP_NAME, json.dumps(dict(stamp, models=contents), indent=2))
        return
    if stamp is not None:
        finished = finished_videos(out)
        reason = _difference(stamp, pipeline, contents, precision)
        if finished:
            raise ConfigError(
                f"{out} holds {len(finished)} finished video(s) of {reason}; results must not mix: "
                f"choose another --out, or delete {out} to start over"
            )
        log(f"{out}: no video of the earlier run had finished; starting over for this pipeline")
        _clear_unfinished(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / STAMP_NAME,
        json.dumps(
            {
                "fingerprint": fingerprint,
                "pipeline_fingerprint": pipeline.fingerprint(),
                "pipeline": pipeline.model_dump(mode="json"),
                "models": contents,
                "precision": precision,
                "provenance": record,
            },
            indent=2,
        ),
    )
    atomic_write_text(out / "pipeline.yaml", yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False))


def _difference(stamp: dict, pipeline: Pipeline, contents: dict[str, dict], precision: str) -> str:
    """What makes the earlier run in a directory another one: its pipeline, its precision or a model's content."""
    previous = stamp.get("pipeline_fingerprint", stamp["fingerprint"])  # older runs stamped the pipeline alone
    if previous != pipeline.fingerprint():
        return f"a different pipeline (fingerprint {previous}, now {pipeline.fingerprint()})"
    if stamp.get("precision") != precision:
        return (
            f"the same pipeline in another precision ({stamp.get('precision')} then, {precision} now: "
            "runtime.amp auto resolves per device; set runtime.amp to the earlier one to resume)"
        )
    before, now = _file_hashes(stamp.get("models")), _file_hashes(contents)
    changes = []
    for model, files in now.items():
        for name, sha256 in files.items():
            old = before.get(model, {}).get(name)
            if old != sha256:
                was = f"sha256 {old[:12]}..." if isinstance(old, str) else "not recorded"
                changes.append(
                    f"model {model!r}: {contents[model]['path']}/{name} has changed ({was} then, "
                    f"sha256 {sha256[:12]}... now)"
                )
    return "the same pipeline with other weights: " + "; ".join(changes)


def _warn_version_changes(out: Path, before: Any, now: dict, log: Callable[[str], None]) -> None:
    if not isinstance(before, dict):
        return

    def versions(record: dict) -> dict[str, str]:
        found = {"zoo-core": f"zoo-core {record.get('zoo-core')}"}
        for c in record.get("components", []):
            if isinstance(c, dict):
                what = f"{c.get('kind')} {c.get('name')!r} at {c.get('where')}"
                found[what] = f"{c.get('distribution')} {c.get('version')}"
        return found

    old, new = versions(before), versions(now)
    changed = [f"{what}: {old[what]} then, {new[what]} now" for what in new if what in old and old[what] != new[what]]
    if changed:
        log(
            f"warning: {out} was started with other versions ({'; '.join(changed)}); its finished videos keep "
            "their predictions: delete it to predict everything with the installed versions"
        )


def _clear_unfinished(out: Path) -> None:
    """Remove what an earlier run left without finishing any video: its PNGs and its lock."""
    pred = out / PRED_DIR
    for png in pred.glob("*/*.png"):
        png.unlink()
    for folder in pred.glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    (out / LOCK_NAME).unlink(missing_ok=True)


def run_pipeline(pipeline: Pipeline, out: Path, log=print) -> dict | None:
    """Run the pipeline into ``out``; returns the metrics (empty when there is nothing to evaluate).

    Everything that can be checked is checked before ``out`` is created or a model loads:
    the data, each model's config.json and classes, the components' arguments (``bind``).
    Under torchrun the videos are split across the processes (see :func:`_run`); the other
    ranks return None, rank 0 the metrics of the whole run.
    """
    world, device = setup(resolve_device(pipeline.runtime.device))
    try:
        return _run(pipeline, Path(out), world, device, log if world.is_main else (lambda message: None))
    finally:
        teardown()


def _run(pipeline: Pipeline, out: Path, world: World, device: torch.device, log: Callable[[str], None]) -> dict | None:
    """Every rank checks everything, rank 0 alone claims ``out``, each rank predicts its share of the videos
    (``videos[rank::size]``), and rank 0 merges every video's statistics in the video order: metrics,
    confusion matrix and report are those of one process, whatever the number of processes."""
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)
    dataset = VSPWDataset(pipeline.data.root, pipeline.data.split)
    videos = select_videos(dataset, pipeline)
    models, class_names, num_classes, lock = prepare_models(pipeline, dataset)
    context = models_context(models, class_names, num_classes, device)
    ttas, (ensembler, ensembler_label) = build_components(pipeline, context)
    record = run_provenance(pipeline, models)
    amp = resolve_amp(pipeline.runtime.amp, device, log)  # auto: bf16 only where the device computes it natively
    if world.is_main:
        stamp = read_stamp(out)
        _claim_output(out, pipeline, stamp, model_contents(models, stamp), record, amp, log)
        if lock.entries:  # what exactly was run, next to the results
            lock.save(out / LOCK_NAME)
    sync(world)  # the other ranks write into `out` once it is this run's

    evaluate = pipeline.eval.enabled

    def marker(video: str) -> Path:
        """A video is finished once this exists: its statistics, or an empty file without evaluation."""
        return out / STATE_DIR / (f"{video}.npz" if evaluate else f"{video}.done")

    finished = {v for v in videos if marker(v).exists()}
    mine = [v for v in shard(videos, world) if v not in finished]
    frames = {v: len(dataset.frames(v)) for v in videos}  # listing frames reads no image
    if finished:
        log(f"resumed: {len(finished)} finished video(s) skipped, {len(videos) - len(finished)} to predict")
    # Counted in frames, so a long video shows progress too; rank 0 counts the other ranks' videos as they finish.
    bar = tqdm(
        total=sum(frames.values()),
        initial=sum(frames[v] for v in finished),
        desc="zoo run",
        unit="frame",
        disable=not (pipeline.runtime.progress and world.is_main),
    )
    with bar:
        others = [marker(v) for v in videos if v not in finished and v not in mine]
        if mine:
            predictor = _load_predictor(models, ttas, ensembler, ensembler_label, device, amp)
            evaluator = StreamingEvaluator(num_classes, tuple(pipeline.eval.windows)) if evaluate else None
            started = time.perf_counter()
            with PngWriter(pipeline.output.png_compress_level) as writer:
                for video in mine:
                    _predict_video(dataset, video, out, predictor, writer, evaluator, device, bar)
                    writer.flush()  # the video's PNGs are on disk before it is marked finished
                    if evaluator is not None:
                        evaluator.end_video().save(marker(video))
                    else:
                        atomic_write_text(marker(video), "")
                    if world.is_main:
                        others = _count_finished(others, bar, frames)
            done = sum(frames[v] for v in mine)
            elapsed = time.perf_counter() - started
            who = f"rank 0 of {world.size} " if world.distributed else ""
            log(f"{who}predicted {done} frames in {elapsed:.1f} s ({done / elapsed:.2f} frames/s)")
        if not world.is_main:
            return None
        wait_for(others, log, on_found=lambda path: bar.update(frames[path.stem]))

    if not evaluate:
        return {}
    # One evaluator over every video in the video order, as one uninterrupted process adds them.
    evaluator = StreamingEvaluator(num_classes, tuple(pipeline.eval.windows))
    for video in videos:
        evaluator.add(VideoStats.load(marker(video)))
    if not evaluator.evaluated_frames:
        log(f"split {pipeline.data.split!r} has no ground-truth masks: predictions written, nothing evaluated")
        return {}
    metrics = evaluator.result(class_names)
    atomic_write_text(out / "metrics.json", json.dumps(dict(metrics, precision=amp, provenance=record), indent=2))
    write_confusion(out / "confusion.json", evaluator.confusion_matrix, class_names)
    overlays = _first_frame_overlays(dataset, videos[: pipeline.output.overlays], out)
    write_report(out / "report", metrics, evaluator.confusion_matrix, class_names, overlays)
    return metrics


def _load_predictor(
    models: list[PreparedModel], ttas: list, ensembler: Any, ensembler_label: str, device: torch.device, amp: str
) -> Predictor:
    runners = []
    for model, (tta, tta_label) in zip(models, ttas):
        network, _ = load_model_dir(model.path, device=device)
        runners.append(ModelRunner(model.spec.name, network.eval(), tta, device, amp, model.label, tta_label))
    return Predictor(runners, ensembler, ensembler_label)


def _predict_video(
    dataset: VSPWDataset,
    video: str,
    out: Path,
    predictor: Predictor,
    writer: PngWriter,
    evaluator: StreamingEvaluator | None,
    device: torch.device,
    bar: tqdm,
) -> None:
    """Predict one video frame by frame: its PNGs go to the writer, its statistics to the evaluator."""
    (out / PRED_DIR / video).mkdir(parents=True, exist_ok=True)
    if evaluator is not None:
        evaluator.start_video(video)
    for frame in prefetch(dataset.iter_video(video)):
        images = normalize(frame.image).unsqueeze(0).to(device)
        with error_location(f"on video {video} frame {frame.ref.name}"):
            labels = predictor(images)[0].cpu().numpy()
        writer.submit(out / PRED_DIR / video / f"{frame.ref.name}.png", labels)
        if evaluator is not None and frame.mask is not None:
            evaluator.update(labels, frame.mask, source=f"{video}/{frame.ref.name}")
        bar.update()


def _count_finished(pending: list[Path], bar: tqdm, frames: dict[str, int]) -> list[Path]:
    """Advance the progress bar by the other ranks' videos finished since; returns those still pending."""
    still = []
    for path in pending:
        if path.exists():
            bar.update(frames[path.stem])
        else:
            still.append(path)
    return still


def _first_frame_overlays(dataset: VSPWDataset, videos: list[str], out: Path) -> list[tuple[str, Any]]:
    """The report's overlays: the first frame of each of ``videos`` under its predicted labels, read back from
    the PNGs, so they do not depend on which process predicted which video or on an interruption."""
    overlays = []
    for video in videos:
        ref = dataset.frames(video)[0]
        labels = read_label_png(out / PRED_DIR / video / f"{ref.name}.png")
        overlays.append((f"{video}_{ref.name}", overlay(dataset.load_image(ref), labels)))
    return overlays


def select_videos(dataset: VSPWDataset, pipeline: Pipeline) -> list[str]:
    videos = dataset.videos
    if pipeline.data.videos:
        unknown = [v for v in pipeline.data.videos if v not in set(videos)]
        if unknown:
            raise ConfigError(
                f"data.videos: {', '.join(unknown)} not in split {pipeline.data.split!r} of {dataset.root}"
            )
        videos = list(pipeline.data.videos)
    if pipeline.data.max_videos:
        videos = videos[: pipeline.data.max_videos]
    return videos
