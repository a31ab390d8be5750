"""``zoo train``: iteration-based training that resumes exactly and runs under torchrun.

Everything random is a function of the seed and the iteration: the data order of epoch
``e`` (``TrainSet.epoch_order``), the augmentation of sample ``i`` in epoch ``e``, and the
torch random state of each micro-batch (dropout, drop-path), reseeded from ``(seed,
iteration, micro-batch)``. So a resumed run, a run split across N processes, and a single
process accumulating N micro-batches all see the same global batches and end with the
same weights. The learning rate is recomputed from the iteration, never accumulated.

The run directory ends with ``model.safetensors`` + ``config.json`` (what ``zoo run``
loads), ``train_log.jsonl``, ``checkpoints/iter_N/`` and, with SWA, ``swa/iter_N/``.

The jobs live beside this loop: ``schedule`` (learning rate, parameter groups, when to
checkpoint), ``batches`` (the data of each step), ``state`` (model, loss, optimizer and the
step), ``run_dir`` (what the run directory holds, resume checks) and ``interrupt`` (signals).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.sampler import TrainSet
from ..errors import ConfigError, error_location
from ..model_dir import save_model_dir
from ..pipeline.schema import Pipeline
from ..runtime import resolve_amp, resolve_device
from . import distributed
from .averaging import average_model_dirs
from .batches import build_train_set, local_batches, resolve_global_batch
from .checkpoint import list_checkpoints
from .interrupt import StopRequest
from .run_dir import CHECKPOINTS_DIR, LOG_NAME, SWA_DIR, check_run_dir, finished, start_run_dir
from .schedule import checkpoint_due, learning_rate, set_learning_rate, swa_snapshot_due, total_iters
from .state import TrainState


def train(pipeline: Pipeline, out: Path, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    if pipeline.model is None or pipeline.train is None:
        raise ConfigError("zoo train needs a `model` section (backbone and heads) and a `train` section")
    out = Path(out)
    device = resolve_device(pipeline.runtime.device)
    world, device = distributed.setup(device)
    try:
        return _train(pipeline, out, resume, world, device, log if world.is_main else (lambda message: None))
    finally:
        distributed.teardown()


def _train(
    pipeline: Pipeline,
    out: Path,
    resume: bool,
    world: distributed.World,
    device: torch.device,
    log: Callable[[str], None],
) -> Path:
    spec = pipeline.train
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)
    torch.manual_seed(spec.seed)  # the initial weights
    latest = check_run_dir(pipeline, out, resume)
    if resume and finished(out, total_iters(spec)):
        log(f"{out} has already trained to iteration {total_iters(spec)}; nothing to do")
        return out

    recorded = pipeline  # the run directory keeps the pipeline as given: a derived accum_steps is no change
    pipeline = resolve_global_batch(pipeline, world, log)
    train_set = build_train_set(pipeline, world, log)
    amp = resolve_amp(pipeline.runtime.amp, device, log)  # auto: bf16 only where the device computes it natively
    state = TrainState.build(pipeline, world, device, amp, extra={"class_names": list(train_set.class_names)})
    step = state.restore(latest, log)
    if world.is_main:
        start_run_dir(recorded, out, step)
    state.distribute()

    started = time.perf_counter()
    _loop(state, train_set, out, step, started, progress=pipeline.runtime.progress)
    _save_final_model(state, pipeline, out, log)
    log(
        f"trained to iteration {total_iters(spec)} in {time.perf_counter() - started:.0f} s -> "
        f"{out / 'model.safetensors'}"
    )
    return out


def _loop(state: TrainState, train_set: TrainSet, out: Path, step: int, started: float, progress: bool) -> None:
    """Steps ``step + 1 .. total_iters``, with their log records, checkpoints and SWA snapshots.

    On SIGINT or SIGTERM the current step finishes, a checkpoint is written and
    :class:`TrainingInterrupted` says how to resume.
    """
    spec, world, device = state.spec, state.world, state.device
    last = total_iters(spec)
    stream = local_batches(train_set, spec, world, step)
    bar = tqdm(total=last, initial=step, desc="zoo train", unit="it", disable=not (progress and world.is_main))
    log_file = (out / LOG_NAME).open("a") if world.is_main else None
    try:
        with StopRequest(abort_on_repeat=not world.distributed) as stop:
            while step < last:
                epoch, images, targets = next(stream)
                lr = learning_rate(spec, step)
                set_learning_rate(state.optimizer, lr)
                step += 1
                with error_location(f"at iteration {step}"):
                    losses = state.step(images, targets, step)
                bar.update(1)
                if step % spec.log_every == 0 or step == last:
                    losses = distributed.mean_over_ranks(losses, world, device)
                    record = {
                        "iter": step,
                        "epoch": epoch,
                        "loss": round(sum(losses), 5),
                        "lr": lr,
                        "head_losses": [round(v, 5) for v in losses],
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                    if log_file:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}")

                stopping = distributed.any_rank(stop.signal is not None, world, device)
                if stopping or checkpoint_due(spec, step):
                    state.checkpoint(out / CHECKPOINTS_DIR, step)
                if swa_snapshot_due(spec, step):
                    state.snapshot(out / SWA_DIR, step)
                if stopping and step < last:
                    raise stop.error(step, last, out / CHECKPOINTS_DIR)
    finally:
        bar.close()
        if log_file:
            log_file.close()


def _save_final_model(state: TrainState, pipeline: Pipeline, out: Path, log: Callable[[str], None]) -> None:
    """``model.safetensors`` + ``config.json`` in ``out``: the last weights, or the average of the SWA snapshots."""
    spec, world = state.spec, state.world
    distributed.check_identical(state.model, world, state.device)
    if world.distributed:
        log(f"all {world.size} processes hold identical weights")
    final_extra = dict(
        state.extra,
        iteration=total_iters(spec),
        train=spec.model_dump(mode="json"),
        data={"root": str(pipeline.data.root), "split": spec.split},
    )
    if world.is_main:
        if spec.swa is not None:
            snapshots = [path for iteration, path in list_checkpoints(out / SWA_DIR) if iteration > spec.max_iters]
            average_model_dirs(snapshots, out, extra=dict(final_extra, swa_snapshots=len(snapshots)))
            log(f"averaged {len(snapshots)} SWA snapshots")
        else:
            save_model_dir(state.model.eval(), state.model_config, out, extra=final_extra, components=state.components)
    distributed.barrier(world)
