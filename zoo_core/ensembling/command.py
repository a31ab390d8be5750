"""``zoo ensemble search``: one pass over the pipeline's split scores every point of a weight grid.

Everything is checked before any model loads and ``--out`` is written only at the end:
``search.json`` (every point's metrics), ``best.yaml`` (the ``ensemble:`` block to paste),
``search.png`` (a line for one gridded name, a heatmap for two). With ``--nproc N`` (or under
torchrun) the videos are split ``videos[rank::world]`` and rank 0 merges every video's
statistics in the one-process order, so the figures are bitwise those of one process.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import torch
import yaml

from ..data.vspw import VSPWDataset, normalize
from ..ensemble import LinearEnsembler
from ..errors import ConfigError, DataError, component_errors, error_location
from ..fileio import atomic_path, atomic_write_text
from ..inference.predictor import ModelRunner
from ..inference.sinks import prefetch
from ..model_dir import load_model_dir
from ..pipeline.command import pipeline_command
from ..pipeline.run import build_components, model_contents, models_context, prepare_models, select_videos
from ..pipeline.schema import Pipeline
from ..runtime import resolve_amp, resolve_device
from .cache import CacheSettings, ModelCache, cache_record, claim, open_cache
from .search import Grid, GridScorer, GridStats, build_grid, parse_grid

DEFAULT_OUT = "runs/search-<pipeline stem>"


@dataclass
class SearchPlan:
    """Everything checked, nothing loaded or written: what a search (or each of its ranks) runs."""

    pipeline: Pipeline
    dataset: VSPWDataset
    videos: list[str]
    class_names: list[str]
    num_classes: int
    ensembler: LinearEnsembler
    ensembler_label: str
    grid: Grid
    metric: str
    device: torch.device
    precision: str
    models: list = field(default_factory=list)  # PreparedModel
    ttas: list = field(default_factory=list)  # (policy, label)
    caches: list[ModelCache] | None = None
    settings: CacheSettings | None = None
    cache_dir: Path | None = None


def plan_search(
    pipeline: Pipeline,
    grid_items: tuple[str, ...],
    metric: str,
    cache: Path | None,
    settings: CacheSettings,
    log: Callable[[str], None],
) -> SearchPlan:
    """Check the grid, the data, the models, the ensembler and the cache; load and write nothing."""
    axes = parse_grid(grid_items)
    if cache is None and settings != CacheSettings():
        raise ConfigError("--cache-dtype, --cache-stride and --cache-topk set how --cache DIR stores; give --cache DIR")
    windows = sorted(set(pipeline.eval.windows))
    metrics = ["miou"] + [f"mvc{c}" for c in windows]
    if metric not in metrics:
        raise ConfigError(
            f"--metric {metric}: not a metric of this pipeline; choose one of {', '.join(metrics)} "
            "(mVC windows come from eval.windows)"
        )
    device = resolve_device(pipeline.runtime.device)
    dataset = VSPWDataset(pipeline.data.root, pipeline.data.split)
    videos = select_videos(dataset, pipeline)
    for video in videos:
        if any(ref.mask_path is None for ref in dataset.frames(video)):
            raise DataError(
                f"split {pipeline.data.split!r} of {dataset.root}: video {video} has no ground-truth masks; "
                "a search scores against labels: set data.split to a split with masks (val)"
            )
    models, class_names, num_classes, _ = prepare_models(pipeline, dataset)
    if len(models) < 2:
        raise ConfigError(
            f"models: the pipeline has {len(models)} model ({models[0].spec.name}); a weight search needs "
            "an ensemble of at least two models"
        )
    context = models_context(models, class_names, num_classes, device)
    ttas, (ensembler, label) = build_components(pipeline, context)
    if not isinstance(ensembler, LinearEnsembler):
        linear = _linear_ensemblers()
        raise ConfigError(
            f"ensemble.type {pipeline.ensemble.type!r}: {label} has no weights to search; a search needs a linear "
            f"ensembler (derived from zoo_core.ensemble.LinearEnsembler): {', '.join(linear) or 'none installed'}"
        )
    grid = build_grid(ensembler, axes, label)
    precision = resolve_amp(pipeline.runtime.amp, device, log)
    caches = None
    if cache is not None:
        settings.check(num_classes)
        contents = model_contents(models, None)
        records = [
            cache_record(
                m.spec.name,
                {name: f["sha256"] for name, f in contents[m.spec.name]["files"].items()},
                m.spec.tta.model_dump(mode="json"),
                precision,
                settings,
                num_classes,
            )
            for m in models
        ]
        caches = open_cache(cache, records, settings)
    return SearchPlan(
        pipeline,
        dataset,
        videos,
        class_names,
        num_classes,
        ensembler,
        label,
        grid,
        metric,
        device,
        precision,
        models,
        ttas,
        caches,
        settings if cache is not None else None,
        cache,
    )


def _linear_ensemblers() -> list[str]:
    """The installed ensemblers a search accepts (those whose class derives from LinearEnsembler)."""
    from ..plugins import get_catalog

    names = []
    for entry in get_catalog().entries(kind="ensembler"):
        factory = entry.factory
        try:
            factory = factory.resolve() if hasattr(factory, "resolve") else factory
        except Exception:  # a plugin that does not import is not this search's concern
            continue
        if isinstance(factory, type) and issubclass(factory, LinearEnsembler):
            names.append(entry.name)
    return names


def score(
    plan: SearchPlan, videos: list[str], log: Callable[[str], None]
) -> tuple[dict[str, GridStats], tuple[int, int]]:
    """Score every grid point on ``videos``: per video its statistics; the contested and all pixels scored."""
    runners: dict[str, ModelRunner] = {}
    caches = plan.caches or [None] * len(plan.models)
    needed = [
        (model, tta)
        for model, tta, cache in zip(plan.models, plan.ttas, caches)
        if cache is None or not all(cache.has(v) for v in videos)
    ]
    for model, (tta, tta_label) in needed:
        network, _ = load_model_dir(model.path, device=plan.device)
        runners[model.spec.name] = ModelRunner(
            model.spec.name, network.eval(), tta, plan.device, plan.precision, model.label, tta_label
        )
    if plan.caches is not None:
        claim(plan.caches)
        log(f"models run: {', '.join(runners) or 'none (every video is cached)'}")
    stride = plan.settings.stride if plan.settings else 1
    scorer = GridScorer(plan.grid.term_weights, plan.num_classes, tuple(sorted(set(plan.pipeline.eval.windows))))
    stats = {}
    started = time.perf_counter()
    frames = 0
    for video in videos:
        scorer.start_video()
        for name, per_model, mask in _frames(plan, video, runners, caches):
            with error_location(f"on video {video} frame {name}"), component_errors(plan.ensembler_label):
                terms = [t.float()[0].numpy() for t in plan.ensembler.terms(per_model)]
            scorer.update(terms, np.ascontiguousarray(mask[::stride, ::stride]))
            frames += 1
        stats[video] = scorer.end_video()
    if frames:
        elapsed = time.perf_counter() - started
        log(
            f"scored {len(plan.grid.points)} points on {frames} frames in {elapsed:.1f} s "
            f"({frames / elapsed:.2f} frames/s)"
        )
    return stats, (scorer.contested, scorer.pixels)


def _frames(
    plan: SearchPlan, video: str, runners: dict[str, ModelRunner], caches: list[ModelCache | None]
) -> Iterator[tuple[str, dict[str, torch.Tensor], np.ndarray]]:
    """``(frame name, {model: (1, C, h, w) float32}, mask)`` of each frame: from the cache or the models."""
    refs = plan.dataset.frames(video)
    cached = {m.spec.name: c for m, c in zip(plan.models, caches) if c is not None and c.has(video)}
    if len(cached) == len(plan.models):  # no image to read: the masks alone
        size = plan.dataset.load_mask(refs[0]).shape
        readers = {name: cache.frames(video, len(refs), size) for name, cache in cached.items()}
        for ref in refs:
            per_model = {m.spec.name: torch.from_numpy(next(readers[m.spec.name]))[None] for m in plan.models}
            yield ref.name, per_model, plan.dataset.load_mask(ref)
        return
    writers, readers = {}, None
    try:
        with torch.inference_mode():
            for frame in prefetch(plan.dataset.iter_video(video)):
                size = frame.mask.shape
                if readers is None:
                    readers = {name: cache.frames(video, len(refs), size) for name, cache in cached.items()}
                    for model, cache in zip(plan.models, caches):
                        if cache is not None and model.spec.name not in cached:
                            writers[model.spec.name] = cache.writer(video, len(refs), size)
                images = normalize(frame.image).unsqueeze(0).to(plan.device)
                per_model = {}
                with error_location(f"on video {video} frame {frame.ref.name}"):
                    for model in plan.models:
                        name = model.spec.name
                        if name in readers:
                            per_model[name] = torch.from_numpy(next(readers[name]))[None]
                            continue
                        probs = runners[name](images)[0].cpu()
                        if name in writers:
                            probs = torch.from_numpy(writers[name].add(probs))
                        per_model[name] = probs[None]
                yield frame.ref.name, per_model, frame.mask
    except BaseException as exc:
        for writer in writers.values():
            writer.close(exc)
        raise
    for writer in writers.values():
        writer.close()


def merge(stats: dict[str, GridStats], videos: list[str], grid: Grid, num_classes: int, windows: int) -> GridStats:
    """The statistics of ``videos`` in their order (the mVC sums add as ``zoo run`` adds them)."""
    total = GridStats.empty(len(grid.points), num_classes, windows)
    for video in videos:
        total.add(stats[video])
    return total


def results(plan: SearchPlan, total: GridStats) -> list[dict]:
    """Per point: its weights and metrics (per-class IoU kept for the caller to trim)."""
    windows = tuple(sorted(set(plan.pipeline.eval.windows)))
    return [
        {"weights": weights, **total.metrics(p, plan.class_names, windows)}
        for p, weights in enumerate(plan.grid.points)
    ]


def ranked(points: list[dict], metric: str) -> list[int]:
    """Point indices, best first; ties keep grid order; an undefined metric ranks last."""
    return sorted(
        range(len(points)), key=lambda i: -(points[i][metric] if points[i][metric] is not None else -math.inf)
    )


def write_outputs(
    plan: SearchPlan, out: Path, points: list[dict], order: list[int], top: int, extra: dict, log: Callable[[str], None]
) -> dict:
    """``search.json``, ``best.yaml`` and ``search.png`` into ``out``; returns the search.json object."""
    metric_keys = ["miou"] + [f"mvc{c}" for c in sorted(set(plan.pipeline.eval.windows))]
    scalar = ["pixel_acc", "mean_class_acc", "fwiou"]

    def entry(i: int, per_class: bool) -> dict:
        point = points[i]
        found = {"weights": point["weights"], **{k: point[k] for k in metric_keys + scalar}}
        if per_class:
            found["per_class_iou"] = point["per_class_iou"]
        return found

    best = order[0]
    document = {
        "metric": plan.metric,
        "best": entry(best, True),
        **extra,
        "top": [entry(i, True) for i in order[:top]],
        "points": [entry(i, False) for i in range(len(points))],
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "search.json", json.dumps(document, indent=1))
    block = {
        "ensemble": {"type": plan.pipeline.ensemble.type, "args": plan.ensembler.args_with(points[best]["weights"])}
    }
    atomic_write_text(out / "best.yaml", yaml.safe_dump(block, sort_keys=False))
    if not plot(plan, points, best, out / "search.png"):
        log(f"no search.png: {len(plan.grid.names)} gridded names (a plot shows one or two)")
    return document


def plot(plan: SearchPlan, points: list[dict], best: int, path: Path) -> bool:
    """A line of the metric over one gridded name, a heatmap over two, the best point marked; False for more."""
    from matplotlib.figure import Figure

    names, metric = plan.grid.names, plan.metric
    if len(names) > 2:
        return False
    values = [np.nan if p[metric] is None else 100 * p[metric] for p in points]
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    if len(names) == 1:
        axes.plot([p["weights"][names[0]] for p in points], values, marker="o", markersize=3)
        axes.axvline(points[best]["weights"][names[0]], color="tab:red", linewidth=1, label="best")
        axes.legend(loc="lower right", fontsize=7)
        axes.set_xlabel(names[0])
        axes.set_ylabel(f"{metric} (%)")
    else:
        xs = sorted({p["weights"][names[0]] for p in points})
        ys = sorted({p["weights"][names[1]] for p in points})
        image = np.full((len(ys), len(xs)), np.nan)
        for p, v in zip(points, values):
            image[ys.index(p["weights"][names[1]]), xs.index(p["weights"][names[0]])] = v
        shown = axes.imshow(
            image,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            interpolation="nearest",
            extent=_extent(xs) + _extent(ys),
        )
        axes.plot(*(points[best]["weights"][n] for n in names), marker="x", color="tab:red", markersize=10)
        axes.set_xlabel(names[0])
        axes.set_ylabel(names[1])
        figure.colorbar(shown, ax=axes, label=f"{metric} (%)")
    axes.set_title(f"{metric} over the grid ({len(points)} points)", fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    return True


def _extent(values: list[float]) -> list[float]:
    half = (values[1] - values[0]) / 2 if len(values) > 1 else 0.5
    return [values[0] - half, values[-1] + half]


def table(points: list[dict], order: list[int], names: list[str], windows: list[int], top: int) -> str:
    keys = ["miou"] + [f"mvc{c}" for c in windows]
    header = ["#", *names, *(k.replace("miou", "mIoU").replace("mvc", "mVC") for k in keys)]
    rows = []
    for rank, i in enumerate(order[:top], 1):
        point = points[i]
        rows.append(
            [str(rank), *(f"{point['weights'][n]:g}" for n in names)]
            + [("-" if point[k] is None else f"{100 * point[k]:.2f}") for k in keys]
        )
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows])


def search(plan: SearchPlan, out: Path, top: int = 10, log: Callable[[str], None] = print) -> dict | None:
    """Score the plan's grid (this rank's videos under torchrun), write ``out`` on rank 0.

    Returns ``{"points": [...], "order": [...], "exact": bool}`` on rank 0, None on the other ranks.
    """
    from ..parallel import setup, shard, teardown

    world, _ = setup(plan.device)
    try:
        videos = shard(plan.videos, world)
        if world.is_main:
            skipped = f" ({plan.grid.skipped} skipped: all term weights 0)" if plan.grid.skipped else ""
            log(
                f"grid: {len(plan.grid.points)} points{skipped} on {len(plan.videos)} video(s), "
                f"{world.size} process(es)"
            )
        stats, contested = score(plan, videos, log)
        if world.distributed:
            import torch.distributed as dist

            gathered = [None] * world.size if world.is_main else None
            dist.gather_object((stats, contested), gathered, dst=0)
            if not world.is_main:
                return None
            stats = {video: found for part, _ in gathered for video, found in part.items()}
            contested = tuple(sum(part[1][i] for part in gathered) for i in (0, 1))
    finally:
        teardown()
    windows = sorted(set(plan.pipeline.eval.windows))
    total = merge(stats, plan.videos, plan.grid, plan.num_classes, len(windows))
    points = results(plan, total)
    order = ranked(points, plan.metric)
    settings = plan.settings
    exact = settings is None or settings.exact
    extra = {
        "exact": exact,
        "ensemble": plan.pipeline.ensemble.type,
        "grid": {name: sorted({p[name] for p in plan.grid.points}) for name in plan.grid.names},
        "points_skipped": plan.grid.skipped,
        "split": plan.pipeline.data.split,
        "videos": len(plan.videos),
        "frames": total.frames,
        "contested_pixels": contested[0] / max(1, contested[1]),  # share of pixels scored per point
        "precision": plan.precision,
        "cache": None
        if settings is None
        else {"dir": str(plan.cache_dir), "dtype": settings.dtype, "stride": settings.stride, "topk": settings.topk},
    }
    write_outputs(plan, out, points, order, top, extra, log)
    return {"points": points, "order": order, "exact": exact}


# -- the command line ------------------------------------------------------------------------------


def _metric_choice(value: str) -> str:
    if not re.fullmatch(r"miou|mvc\d+", value):
        raise click.BadParameter(f"{value!r} is not miou or mvcN (mvc8, mvc16)")
    return value


@pipeline_command(
    "search",
    DEFAULT_OUT,
    "Where search.json, best.yaml and search.png go.",
    options=(
        click.option(
            "--grid",
            "grid_items",
            multiple=True,
            metavar="NAME=START:STOP:STEP",
            help="A weight of the ensembler and its values (STOP included); repeat for more names.",
        ),
        click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows of the table."),
        click.option(
            "--cache",
            "cache_dir",
            type=click.Path(file_okay=False),
            help="Keep each model's probabilities here; later searches read them instead of running the models.",
        ),
        click.option(
            "--cache-dtype",
            type=click.Choice(["float16", "float32"]),
            default="float16",
            show_default=True,
            help="float16 halves the size; only float32, stride 1 and no top-k score exactly what zoo run predicts.",
        ),
        click.option(
            "--cache-stride", type=int, default=1, show_default=True, help="Cache every S-th pixel in each direction."
        ),
        click.option(
            "--cache-topk", type=int, help="Cache only the K most probable classes of each pixel.", default=None
        ),
        click.option(
            "--metric",
            default="miou",
            show_default=True,
            callback=lambda c, p, v: _metric_choice(v),
            help="What the best point maximises: miou, or mvcN for a window N of eval.windows (mvc8, mvc16).",
        ),
        click.option("--nproc", type=int, default=1, show_default=True, help="Processes on this machine (torchrun)."),
    ),
)
def search_command(
    pipeline: Pipeline,
    out: Path,
    grid_items: tuple[str, ...],
    top: int,
    cache_dir: str | None,
    cache_dtype: str,
    cache_stride: int,
    cache_topk: int | None,
    metric: str,
    nproc: int,
) -> None:
    """Search the ensemble weights: every point of a grid scored exactly in one pass over the split."""
    from ..parallel import relaunch

    ctx = click.get_current_context()
    if str(out) == str(Path(DEFAULT_OUT)):
        out = Path("runs") / f"search-{Path(ctx.params['pipeline_path']).stem}"
    log = lambda message: click.echo(message, err=True)  # noqa: E731
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)
    settings = CacheSettings(cache_dtype, cache_stride, cache_topk)
    cache = Path(cache_dir) if cache_dir else None
    quiet = nproc > 1 or os.environ.get("RANK", "0") != "0"  # say the precision once
    plan = plan_search(pipeline, grid_items, metric, cache, settings, (lambda m: None) if quiet else log)
    relaunch(nproc)  # with --nproc N > 1: this command in N processes under torchrun, then exit

    found = search(plan, out, top, log)
    if found is None:  # a rank other than 0
        return
    points, order = found["points"], found["order"]
    click.echo(table(points, order, plan.grid.names, sorted(set(pipeline.eval.windows)), top))
    best = points[order[0]]
    shown = ", ".join(f"{k}={v:g}" for k, v in best["weights"].items())
    exact = "" if found["exact"] else "  (not exact: scored on the cache's rounded probabilities)"
    click.echo(f"best {metric}: {shown}{exact}")
    click.echo(f"search: {out / 'search.json'}  ensemble block: {out / 'best.yaml'}")


@click.group("ensemble")
def ensemble_group() -> None:
    """Ensemble weights: search them exactly on the pipeline's split."""


ensemble_group.add_command(search_command)
