"""``zoo run``: data -> model(s) with TTA -> ensemble -> PNGs -> evaluation -> report.

A stream, one video at a time and one frame at a time: nothing holds a video's
probabilities. Every file is written atomically; a video counts as finished once its
statistics file ``state/<video>.npz`` exists, so a rerun into the same directory skips
finished videos and redoes the one that was interrupted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from ..data.vspw import VSPWDataset, normalize
from ..errors import ConfigError
from ..evaluation.confusion import write_confusion
from ..evaluation.evaluator import StreamingEvaluator, VideoStats
from ..fileio import atomic_write_text
from ..hub.client import LOCK_NAME, Lock, resolve_weights
from ..model_dir import load_model_dir
from ..inference.predictor import ModelRunner, Predictor
from ..runtime import resolve_device
from ..inference.sinks import PngWriter, overlay, prefetch
from ..plugins import get_catalog
from .report import write_report
from .schema import Pipeline

STATE_DIR = "state"
PRED_DIR = "pred"


def build_predictor(pipeline: Pipeline, device: torch.device) -> tuple[Predictor, list[str], int, Lock]:
    """Resolve and load every model, wrap it in its TTA policy; check they agree on the classes.

    Returns the lock of the weights that came from registry cards (repo, revision, sha256).
    """
    if not pipeline.models:
        raise ConfigError("models: the pipeline names no trained model to run; add `models: [{name: ..., weights: DIR}]`")
    catalog = get_catalog()
    pinned = Lock.load(pipeline.lock) if pipeline.lock else None
    used = Lock()
    runners, class_names, num_classes = [], None, None
    for i, spec in enumerate(pipeline.models):
        resolved = resolve_weights(spec.weights, pinned)
        if resolved.repo_id:
            used.add(resolved)
        model, config = load_model_dir(resolved.path, device=device)
        model.eval()
        names = config.get("class_names")
        n = config["model"]["num_classes"]
        if num_classes is not None and (n != num_classes or names != class_names):
            raise ConfigError(f"models[{i}] ({spec.name}): predicts {n} classes, unlike models[0] ({num_classes}); "
                              "an ensemble needs models trained on the same label set")
        num_classes, class_names = n, names
        tta = catalog.build("tta", spec.tta.type, spec.tta.args)
        runners.append(ModelRunner(spec.name, model, tta, device, pipeline.runtime.amp))
    ensembler = catalog.build("ensembler", pipeline.ensemble.type, pipeline.ensemble.args)
    return Predictor(runners, ensembler), class_names, num_classes, used


def _claim_output(out: Path, pipeline: Pipeline) -> None:
    """Refuse to mix results of different pipelines in one directory."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "pipeline.json"
    fingerprint = pipeline.fingerprint()
    if stamp.exists():
        previous = json.loads(stamp.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise ConfigError(f"{out} holds the results of a different pipeline (fingerprint {previous}, now "
                              f"{fingerprint}); choose another --out or delete {out} to start over")
        return
    atomic_write_text(stamp, json.dumps({"fingerprint": fingerprint, "pipeline": pipeline.model_dump(mode="json")}, indent=2))
    atomic_write_text(out / "pipeline.yaml", yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False))


def run_pipeline(pipeline: Pipeline, out: Path, log=print) -> dict:
    """Run the pipeline into ``out``; returns the metrics (empty when there is nothing to evaluate)."""
    out = Path(out)
    device = resolve_device(pipeline.runtime.device)
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)
    dataset = VSPWDataset(pipeline.data.root, pipeline.data.split)
    videos = _select_videos(dataset, pipeline)
    predictor, class_names, num_classes, lock = build_predictor(pipeline, device)
    class_names = class_names or dataset.class_names
    _claim_output(out, pipeline)
    if lock.entries:  # what exactly was run, next to the results
        lock.save(out / LOCK_NAME)

    evaluator = StreamingEvaluator(num_classes, tuple(pipeline.eval.windows)) if pipeline.eval.enabled else None
    writer = PngWriter(pipeline.output.png_compress_level)
    overlays: list[tuple[str, object]] = []
    started, frames_done, skipped = time.perf_counter(), 0, 0
    # Counted in frames, so a long video shows progress too; listing frames reads no image.
    bar = tqdm(total=sum(len(dataset.frames(v)) for v in videos), desc="zoo run", unit="frame",
               disable=not pipeline.runtime.progress)
    try:
        for done, video in enumerate(videos):
            # a video is finished once its marker exists: its statistics, or an empty file without evaluation
            marker = out / STATE_DIR / (f"{video}.npz" if evaluator is not None else f"{video}.done")
            if marker.exists():
                if evaluator is not None:
                    evaluator.add(VideoStats.load(marker))
                skipped += 1
                bar.update(len(dataset.frames(video)))
                continue
            (out / PRED_DIR / video).mkdir(parents=True, exist_ok=True)
            if evaluator is not None:
                evaluator.start_video(video)
            for index, frame in enumerate(prefetch(dataset.iter_video(video))):
                images = normalize(frame.image).unsqueeze(0).to(device)
                labels = predictor(images)[0].cpu().numpy()
                writer.submit(out / PRED_DIR / video / f"{frame.ref.name}.png", labels)
                if evaluator is not None and frame.mask is not None:
                    evaluator.update(labels, frame.mask, source=f"{video}/{frame.ref.name}")
                if index == 0 and len(overlays) < pipeline.output.overlays:
                    overlays.append((f"{video}_{frame.ref.name}", overlay(frame.image, labels)))
                frames_done += 1
                bar.update()
                bar.set_postfix(video=f"{done + 1}/{len(videos)}", refresh=False)
            writer.flush()  # the video's PNGs are on disk before it is marked finished
            if evaluator is not None:
                evaluator.end_video().save(marker)
            else:
                atomic_write_text(marker, "")
    finally:
        writer.close()
        bar.close()
    if frames_done:
        elapsed = time.perf_counter() - started
        log(f"predicted {frames_done} frames in {elapsed:.1f} s ({frames_done / elapsed:.2f} frames/s)")
    if skipped:
        log(f"resumed: {skipped} finished video(s) skipped, {len(videos) - skipped} predicted")
    metrics: dict = {}
    if evaluator is not None and evaluator.evaluated_frames:
        metrics = evaluator.result(class_names)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
        write_confusion(out / "confusion.json", evaluator.confusion_matrix, class_names)
        write_report(out / "report", metrics, evaluator.confusion_matrix, class_names, overlays)
    elif evaluator is not None:
        log(f"split {pipeline.data.split!r} has no ground-truth masks: predictions written, nothing evaluated")
    return metrics


def _select_videos(dataset: VSPWDataset, pipeline: Pipeline) -> list[str]:
    videos = dataset.videos
    if pipeline.data.videos:
        unknown = [v for v in pipeline.data.videos if v not in set(videos)]
        if unknown:
            raise ConfigError(f"data.videos: {', '.join(unknown)} not in split {pipeline.data.split!r} of {dataset.root}")
        videos = list(pipeline.data.videos)
    if pipeline.data.max_videos:
        videos = videos[: pipeline.data.max_videos]
    return videos
