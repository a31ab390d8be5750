"""``zoo train``: iteration-based training with AdamW, checkpoints as safetensors.

The run directory ends with ``model.safetensors`` + ``config.json``, which ``zoo run``
(``models: [{weights: DIR}]``) and :func:`zoo_core.hub.local.load_model_dir` load.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..components.segmentor import build_segmentor
from ..data.transforms import DEFAULT_TRAIN_TRANSFORMS, build_transforms
from ..data.vspw import TrainFrames, VSPWDataset
from ..errors import ConfigError
from ..hub.local import save_model_dir
from ..inference.predictor import autocast, resolve_device
from ..interfaces import LossContext
from ..pipeline.schema import Pipeline, TrainSpec
from ..plugins import get_catalog


def lr_factor(spec: TrainSpec) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a 0-based iteration: linear warm-up from 0, then decay."""
    floor = spec.min_lr / spec.lr

    def factor(it: int) -> float:
        if it < spec.warmup_iters:
            return (it + 1) / spec.warmup_iters
        if spec.schedule == "constant":
            return 1.0
        span = max(1, spec.max_iters - spec.warmup_iters)
        progress = min(1.0, (it - spec.warmup_iters) / span)
        power = 1.0 if spec.schedule == "linear" else spec.power
        return floor + (1.0 - floor) * (1.0 - progress) ** power

    return factor


def param_groups(model: torch.nn.Module, spec: TrainSpec) -> list[dict]:
    """Backbone at ``lr``, everything else (the decoder) at ``lr * decoder_lr_mult``."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    decoder = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [{"params": backbone, "lr": spec.lr, "name": "backbone"},
            {"params": decoder, "lr": spec.lr * spec.decoder_lr_mult, "name": "decoder"}]


def batches(frames: TrainFrames, spec: TrainSpec) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches; epoch ``e`` visits the frames in the order ``randperm(seed, e)``."""
    epoch = 0
    while True:
        frames.set_epoch(epoch)
        order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(spec.seed * 100_003 + epoch))
        loader = torch.utils.data.DataLoader(frames, batch_size=spec.batch_size, sampler=order.tolist(),
                                             drop_last=True, num_workers=spec.num_workers)
        yield from loader
        epoch += 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(pipeline: Pipeline, out: Path, log=print) -> Path:
    if pipeline.model is None or pipeline.train is None:
        raise ConfigError("zoo train needs a `model` section (backbone and heads) and a `train` section")
    spec, out = pipeline.train, Path(out)
    seed_everything(spec.seed)
    device = resolve_device(pipeline.runtime.device)
    if pipeline.runtime.threads:
        torch.set_num_threads(pipeline.runtime.threads)

    dataset = VSPWDataset(pipeline.data.root, spec.split)
    frames = TrainFrames(dataset, build_transforms(spec.transforms or DEFAULT_TRAIN_TRANSFORMS), seed=spec.seed)
    if len(frames) < spec.batch_size:
        raise ConfigError(f"train.batch_size is {spec.batch_size} but split {spec.split!r} has only {len(frames)} frames")
    model_config = pipeline.model.model_dump(mode="json")
    model = build_segmentor(model_config).to(device).train()
    catalog = get_catalog()
    loss_fn = catalog.build("loss", spec.loss.type, spec.loss.args, num_classes=pipeline.model.num_classes)
    optimizer = torch.optim.AdamW(param_groups(model, spec), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(spec))

    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "train_log.jsonl").open("a")
    stream = batches(frames, spec)
    started = time.perf_counter()
    bar = tqdm(range(1, spec.max_iters + 1), desc="zoo train", unit="it", disable=not pipeline.runtime.progress)
    try:
        for it in bar:
            images, targets = next(stream)
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with autocast(device, pipeline.runtime.amp):
                outputs = model(images)
                losses = [head.loss_weight * loss_fn(output, targets, LossContext(images, it, spec.max_iters, i))
                          for i, (head, output) in enumerate(zip(model.heads, outputs))]
                loss = torch.stack([l.float() for l in losses]).sum()
            if not math.isfinite(loss.item()):
                raise ConfigError(f"training diverged at iteration {it} (loss {loss.item()}); lower train.lr "
                                  "or enable train.grad_clip")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            optimizer.step()
            scheduler.step()
            if it % spec.log_every == 0 or it == spec.max_iters:
                record = {"iter": it, "loss": round(loss.item(), 5), "lr": optimizer.param_groups[0]["lr"],
                          "head_losses": [round(l.item(), 5) for l in losses],
                          "seconds": round(time.perf_counter() - started, 2)}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if spec.checkpoint_every and it % spec.checkpoint_every == 0 and it != spec.max_iters:
                save_model_dir(model, model_config, out / "checkpoints" / f"iter_{it:07d}",
                               extra={"class_names": dataset.class_names, "iteration": it})
    finally:
        bar.close()
        log_file.close()

    save_model_dir(model.eval(), model_config, out,
                   extra={"class_names": dataset.class_names, "iteration": spec.max_iters,
                          "train": spec.model_dump(mode="json"), "data": {"root": str(pipeline.data.root),
                                                                          "split": spec.split}})
    log(f"trained {spec.max_iters} iterations in {time.perf_counter() - started:.0f} s -> {out / 'model.safetensors'}")
    return out
