"""``zoo train``: iteration-based training that resumes exactly and runs under torchrun.

Everything random is a function of the seed and the iteration: the data order of epoch
``e`` (``TrainSet.epoch_order``), the augmentation of sample ``i`` in epoch ``e``, and the
torch random state of each micro-batch (dropout, drop-path), reseeded from ``(seed,
iteration, micro-batch)``. So a resumed run, a run split across N processes, and a single
process accumulating N micro-batches all see the same global batches and end with the
same weights. The learning rate is recomputed from the iteration, never accumulated.

The run directory ends with ``model.safetensors`` + ``config.json`` (what ``zoo run``
loads), ``train_log.jsonl``, ``checkpoints/iter_N/`` and, with SWA, ``swa/iter_N/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from ..model_dir import build_segmentor
from ..data.transforms import DEFAULT_TRAIN_TRANSFORMS, build_transforms
from ..errors import ConfigError, ZooError
from ..fileio import atomic_write_text
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME, load_weights, save_model_dir
from ..runtime import autocast, resolve_device
from ..interfaces import LossContext
from ..pipeline.schema import Pipeline, SourceSpec, TrainSpec
from ..plugins import get_catalog
from . import distributed
from .averaging import average_model_dirs
from .checkpoint import (
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

RUN_RECORD = "train_run.json"
# Position tables get no weight decay (mmsegmentation's Swin configs; timm's feature wrappers hide no_weight_decay()).
NO_DECAY_KEYWORDS = ("pos_embed", "relative_position_bias_table", "cls_token")
INTERRUPT_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(ZooError):
    """SIGINT or SIGTERM: the checkpoint is written and the message says how to resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# -- schedule -------------------------------------------------------------------------


def learning_rate(spec: TrainSpec, step: int) -> float:
    """The backbone's learning rate at 0-based ``step`` (the decoder's is ``decoder_lr_mult`` times it).

    Linear warm-up from 0 over ``warmup_iters`` (step ``s`` gets ``(s + 1) / warmup`` of
    ``lr``), then ``poly`` / ``linear`` decay to ``min_lr`` at ``max_iters``, or constant.
    With SWA, steps past ``max_iters`` run in cycles of ``swa.every``: each falls linearly
    from ``swa.lr`` (first step) to ``swa.min_lr`` (last step, where the snapshot is taken).
    """
    if spec.swa is not None and step >= spec.max_iters:
        position = (step - spec.max_iters) % spec.swa.every
        fraction = position / (spec.swa.every - 1) if spec.swa.every > 1 else 1.0
        return spec.swa.lr + (spec.swa.min_lr - spec.swa.lr) * fraction
    if step < spec.warmup_iters:
        return spec.lr * (step + 1) / spec.warmup_iters
    if spec.schedule == "constant":
        return spec.lr
    span = max(1, spec.max_iters - spec.warmup_iters)
    progress = min(1.0, (step - spec.warmup_iters) / span)
    power = 1.0 if spec.schedule == "linear" else spec.power
    return spec.min_lr + (spec.lr - spec.min_lr) * (1.0 - progress) ** power


def total_iters(spec: TrainSpec) -> int:
    return spec.max_iters + (spec.swa.iters if spec.swa else 0)


def param_groups(model: torch.nn.Module, spec: TrainSpec, decay_1d: bool = False) -> list[dict]:
    """Backbone at ``lr``; the decoder (heads, and a backbone's ``neck``: newly initialised) at
    ``lr * decoder_lr_mult``. Biases, norm weights and position tables (1-D tensors and the
    names timm lists in ``no_weight_decay``) get no weight decay, as in timm and mmsegmentation."""
    backbone = model.backbone
    neck = getattr(backbone, "neck", None)
    neck_ids = {id(p) for p in neck.parameters()} if isinstance(neck, torch.nn.Module) else set()
    backbone_ids = {id(p) for p in backbone.parameters()} - neck_ids
    skip = set()  # full names of the parameters a timm model lists in no_weight_decay()
    for prefix, module in model.named_modules():
        if callable(getattr(module, "no_weight_decay", None)):
            skip |= {f"{prefix}.{name}" if prefix else name for name in module.no_weight_decay()}

    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = "backbone" if id(param) in backbone_ids else "decoder"
        no_decay = not decay_1d and (param.ndim <= 1 or name in skip or any(k in name for k in NO_DECAY_KEYWORDS))
        groups.setdefault((part, no_decay), []).append(param)
    return [{"params": params, "name": f"{part}{'.no_decay' if no_decay else ''}",
             "lr_mult": 1.0 if part == "backbone" else spec.decoder_lr_mult,
             "weight_decay": 0.0 if no_decay else spec.weight_decay}
            for (part, no_decay), params in sorted(groups.items())]


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]


# -- data -----------------------------------------------------------------------------


def micro_batch_seed(seed: int, iteration: int, micro_batch: int) -> int:
    """The torch seed of one global micro-batch: the same whichever process runs it."""
    return (seed * 1_000_003 + iteration) * 4099 + micro_batch


def local_batches(train_set, spec: TrainSpec, world: distributed.World, first_step: int
                  ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(epoch, images, targets)`` of this rank for steps ``first_step, first_step + 1, ...``.

    Global step ``s`` of epoch ``e`` uses ``order[s * G : (s + 1) * G]`` of
    ``epoch_order(e)`` (``G`` the global batch; a last partial batch is dropped); rank
    ``r`` loads its ``batch_size * accum_steps`` slice starting at ``r * batch_size * accum_steps``.
    """
    local = spec.batch_size * spec.accum_steps
    global_batch = local * world.size
    per_epoch = len(train_set) // global_batch
    epoch, offset = divmod(first_step, per_epoch)
    while True:
        order = train_set.epoch_order(epoch)
        start = world.rank * local
        sampler = [order[s * global_batch + start: s * global_batch + start + local] for s in range(offset, per_epoch)]
        train_set.set_epoch(epoch)  # before the loader starts: workers copy the dataset then
        # An own generator: the loader must not draw from the global torch RNG (that would shift dropout on resume).
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=spec.num_workers,
                                             generator=torch.Generator().manual_seed(spec.seed),
                                             persistent_workers=False)
        for images, targets in loader:
            yield epoch, images, targets
        epoch, offset = epoch + 1, 0


def build_train_set(pipeline: Pipeline, world: distributed.World, log: Callable[[str], None]):
    """The training data of every source; under DDP rank 0 scans (and caches) the label filters first."""
    from ..data.sources import build_train_set as build

    spec = pipeline.train
    sources = spec.sources or [SourceSpec(type="vspw", root=pipeline.data.root, split=spec.split)]
    transforms = build_transforms(spec.transforms or DEFAULT_TRAIN_TRANSFORMS)
    if not world.is_main:
        distributed.barrier(world)
    train_set = build(sources, pipeline.data.root, transforms, spec.seed,
                      progress=pipeline.runtime.progress and world.is_main, log=log)
    if world.is_main:
        distributed.barrier(world)
    return train_set


# -- the run --------------------------------------------------------------------------


def run_fingerprint(pipeline: Pipeline) -> dict:
    """What a resumed run must share with the interrupted one (runtime settings may change)."""
    return pipeline.model_dump(mode="json", include={"data", "model", "train"})


class _StopRequest:
    """Remembers SIGINT/SIGTERM; the loop stops after the current iteration and checkpoints."""

    def __init__(self, abort_on_repeat: bool):
        self.signal: int | None = None
        self.abort_on_repeat = abort_on_repeat
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(ValueError):  # signals can only be set from the main thread
            for sig in INTERRUPT_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.abort_on_repeat and self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        # Under torchrun a Ctrl-C arrives twice (from the terminal, then passed on by torchrun): the
        # checkpoint must not be cut short; torchrun itself kills the workers if they take too long.
        self.signal = self.signal or signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(pipeline: Pipeline, out: Path, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    if pipeline.model is None or pipeline.train is None:
        raise ConfigError("zoo train needs a `model` section (backbone and heads) and a `train` section")
    spec, out = pipeline.train, Path(out)
    device = resolve_device(pipeline.runtime.device)
    world, device = distributed.setup(device)
    try:
        return _train(pipeline, spec, out, resume, world, device, log if world.is_main else (lambda message: None))
    finally:
        distributed.teardown()


def _train(pipeline: Pipeline, spec: TrainSpec, out: Path, resume: bool, world: distributed.World,
           device: torch.device, log: Callable[[str], None]) -> Path:
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)
    torch.manual_seed(spec.seed)  # the initial weights
    checkpoints, swa_dir = out / "checkpoints", out / "swa"
    latest = _check_run_dir(pipeline, out, resume, checkpoints)
    if resume and _finished(out, total_iters(spec)):
        log(f"{out} has already trained to iteration {total_iters(spec)}; nothing to do")
        return out

    train_set = build_train_set(pipeline, world, log)
    global_batch = spec.batch_size * spec.accum_steps * world.size
    if len(train_set) < global_batch:
        raise ConfigError(f"the global batch is {global_batch} images (train.batch_size {spec.batch_size} x "
                          f"accum_steps {spec.accum_steps} x {world.size} processes) but the training data has "
                          f"only {len(train_set)}; lower train.batch_size or add data")
    model_config = pipeline.model.model_dump(mode="json")
    model = build_segmentor(model_config).to(device).train()
    loss_fn = get_catalog().build("loss", spec.loss.type, spec.loss.args, num_classes=pipeline.model.num_classes)
    optimizer = torch.optim.AdamW(param_groups(model, spec), lr=spec.lr, betas=spec.betas)
    scaler = torch.amp.GradScaler(device.type, enabled=pipeline.runtime.amp == "fp16")
    extra = {"class_names": list(train_set.class_names)}

    step = 0
    if latest is None and spec.init_from:
        _load_initial_weights(model, spec.init_from, log)
    if latest is not None:
        state = load_checkpoint(latest, model, optimizer)
        step = state["iteration"]
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        log(f"resuming from {latest} (iteration {step})")
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RUN_RECORD, json.dumps(run_fingerprint(pipeline), indent=2) + "\n")
        _truncate_log(out / "train_log.jsonl", step)

    trained = model
    if world.distributed:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    last = total_iters(spec)
    stream = local_batches(train_set, spec, world, step)
    started = time.perf_counter()
    bar = tqdm(total=last, initial=step, desc="zoo train", unit="it",
               disable=not (pipeline.runtime.progress and world.is_main))
    log_file = (out / "train_log.jsonl").open("a") if world.is_main else None
    try:
        with _StopRequest(abort_on_repeat=not world.distributed) as stop:
            while step < last:
                epoch, images, targets = next(stream)
                lr = learning_rate(spec, step)
                set_learning_rate(optimizer, lr)
                step += 1
                losses = _train_step(trained, model, loss_fn, optimizer, scaler, images, targets, spec, step,
                                     world, device, pipeline.runtime.amp)
                bar.update(1)
                if step % spec.log_every == 0 or step == last:
                    losses = distributed.mean_over_ranks(losses, world, device)
                    record = {"iter": step, "epoch": epoch, "loss": round(sum(losses), 5), "lr": lr,
                              "head_losses": [round(v, 5) for v in losses],
                              "seconds": round(time.perf_counter() - started, 2)}
                    if log_file:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}")

                stopping = distributed.any_rank(stop.signal is not None, world, device)
                regular = spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < last
                at_swa_start = spec.swa is not None and step == spec.max_iters
                if stopping or regular or at_swa_start:
                    _checkpoint(checkpoints, step, model, model_config, extra, optimizer, scaler, spec, world)
                if spec.swa is not None and step > spec.max_iters and (step - spec.max_iters) % spec.swa.every == 0:
                    if world.is_main:
                        save_checkpoint(swa_dir, step, model, model_config, extra)
                    distributed.barrier(world)
                if stopping and step < last:
                    signum = stop.signal or signal.SIGTERM
                    raise TrainingInterrupted(
                        f"interrupted by {signal.Signals(signum).name} at iteration {step} of {last}; the checkpoint "
                        f"is in {checkpoints}; continue with the same command and --resume",
                        INTERRUPT_EXIT.get(signum, 130))
    finally:
        bar.close()
        if log_file:
            log_file.close()

    distributed.check_identical(model, world, device)
    if world.distributed:
        log(f"all {world.size} processes hold identical weights")
    final_extra = dict(extra, iteration=last, train=spec.model_dump(mode="json"),
                       data={"root": str(pipeline.data.root), "split": spec.split})
    if world.is_main:
        if spec.swa is not None:
            snapshots = [path for iteration, path in list_checkpoints(swa_dir) if iteration > spec.max_iters]
            average_model_dirs(snapshots, out, extra=dict(final_extra, swa_snapshots=len(snapshots)))
            log(f"averaged {len(snapshots)} SWA snapshots")
        else:
            save_model_dir(model.eval(), model_config, out, extra=final_extra)
    distributed.barrier(world)
    log(f"trained to iteration {last} in {time.perf_counter() - started:.0f} s -> {out / 'model.safetensors'}")
    return out


def _load_initial_weights(model: torch.nn.Module, ref: str, log: Callable[[str], None]) -> None:
    """``train.init_from``: a trained model's weights (strictly: the pipeline's model must be its architecture)."""
    from ..hub.client import resolve_weights

    resolved = resolve_weights(ref)
    load_weights(model, resolved.path / WEIGHTS_NAME,
                 f"the pipeline's model (train.init_from: {ref}; copy the `model` section of its config.json)")
    log(f"initialised from {resolved.path}")


def _train_step(trained, model, loss_fn, optimizer, scaler, images, targets, spec: TrainSpec, step: int,
                world: distributed.World, device: torch.device, amp: str) -> list[float]:
    """One optimizer step over this rank's ``accum_steps`` micro-batches; returns the mean loss per head."""
    optimizer.zero_grad(set_to_none=True)
    head_totals = torch.zeros(len(model.heads), device=device)
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    for micro in range(spec.accum_steps):
        torch.manual_seed(micro_batch_seed(spec.seed, step, world.rank * spec.accum_steps + micro))
        part = slice(micro * spec.batch_size, (micro + 1) * spec.batch_size)
        last_micro = micro == spec.accum_steps - 1
        sync = contextlib.nullcontext() if last_micro or not world.distributed else trained.no_sync()
        with sync:
            with autocast(device, amp):
                outputs = trained(images[part])
                losses = [head.loss_weight * loss_fn(output, targets[part],
                                                     LossContext(images[part], step, spec.max_iters, i))
                          for i, (head, output) in enumerate(zip(model.heads, outputs))]
                head_losses = torch.stack([value.float() for value in losses])
                loss = head_losses.sum()
            total = loss.item()  # the one device sync of a micro-batch
            if not math.isfinite(total):
                raise ConfigError(f"training diverged at iteration {step} (loss {total}); lower train.lr "
                                  "or set train.grad_clip")
            scaler.scale(loss / spec.accum_steps).backward()
        head_totals += head_losses.detach() / spec.accum_steps
    if spec.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return head_totals.tolist()


def _checkpoint(folder: Path, step: int, model, model_config: dict, extra: dict, optimizer, scaler,
                spec: TrainSpec, world: distributed.World) -> None:
    if world.is_main:
        state = {"scaler": scaler.state_dict() if scaler.is_enabled() else None}
        save_checkpoint(folder, step, model, model_config, extra, optimizer, state)
        prune_checkpoints(folder, spec.keep_checkpoints)
    distributed.barrier(world)


def _check_run_dir(pipeline: Pipeline, out: Path, resume: bool, checkpoints: Path) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite a run or to resume a different one."""
    found = list_checkpoints(checkpoints)
    record_path = out / RUN_RECORD
    if not resume:
        if found or (out / WEIGHTS_NAME).exists():
            raise ConfigError(f"{out} already holds a training run; continue it with --resume, or train into "
                              "another --out")
        return None
    if record_path.is_file():
        before = json.loads(record_path.read_text())
        now = run_fingerprint(pipeline)
        changed = sorted(_differences(before, now))
        if changed:
            raise ConfigError(f"--resume: the pipeline differs from the one that started {out} at "
                              f"{', '.join(changed[:8])}; resume with the same pipeline and --set values, "
                              "or train into another --out")
    return found[-1][1] if found else None


def _finished(out: Path, last: int) -> bool:
    try:
        return json.loads((out / CONFIG_NAME).read_text()).get("iteration") == last
    except (OSError, ValueError):
        return False


def _differences(before, now, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        keys = set(before) | set(now)
        return [d for k in keys for d in _differences(before.get(k), now.get(k), f"{prefix}{'.' if prefix else ''}{k}")]
    return [] if before == now else [prefix or "(all)"]


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past the checkpoint being resumed: they are about to be recomputed."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("iter", 0) <= step]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
