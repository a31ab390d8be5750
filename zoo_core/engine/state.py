"""What one training step works on (model, loss, optimizer, gradient scaler) and the step itself."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..catalog import bind_component
from ..components.segmentor import Segmentor
from ..errors import ConfigError, component_errors
from ..interfaces import BindContext, Loss, LossContext
from ..model_dir import WEIGHTS_NAME, build_segmentor, describe_model, load_weights
from ..pipeline.schema import Pipeline, TrainSpec
from ..plugins import get_catalog
from ..runtime import autocast
from . import distributed
from .batches import micro_batch_seed
from .checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint
from .schedule import param_groups
from .teacher import Teacher, check_same_teacher, load_teacher


@dataclass
class TrainState:
    """The model and what updates it, on one process of a run.

    ``trained`` is what the forward pass goes through: the model itself, or its
    ``DistributedDataParallel`` wrapper under torchrun (see :meth:`distribute`).
    ``extra`` is saved with every checkpoint (the class names, the teacher's record).
    ``teacher`` is the frozen model of a loss that ``needs_teacher`` (see :mod:`.teacher`).
    """

    spec: TrainSpec
    model: Segmentor
    model_config: dict
    loss_fn: Loss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    world: distributed.World
    device: torch.device
    amp: str
    extra: dict
    model_label: str = "the model"  # how error messages name the model and the loss
    loss_label: str = "the loss"
    components: tuple[tuple[str, str, str], ...] = ()  # (path, kind, name) that shape the weights besides the model
    teacher: Teacher | None = None
    trained: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.trained = self.model

    @classmethod
    def build(
        cls, pipeline: Pipeline, world: distributed.World, device: torch.device, amp: str, extra: dict
    ) -> TrainState:
        """A fresh model (its initial weights drawn from the torch seed), the loss, AdamW and the scaler."""
        assert pipeline.model is not None and pipeline.train is not None
        spec = pipeline.train
        model_config = pipeline.model.model_dump(mode="json")
        catalog = get_catalog()
        # The loss is built and bound before the model: a bad argument fails before any weight is made. Its own
        # random draws, if any, happen on a forked RNG: the model's initial weights stay a function of the seed.
        with torch.random.fork_rng(devices=[]):
            loss_fn = catalog.build("loss", spec.loss.type, spec.loss.args, num_classes=pipeline.model.num_classes)
        loss_label = catalog.get("loss", spec.loss.type).describe()
        class_names = tuple(extra.get("class_names", ()))
        bind_component(
            loss_fn,
            loss_label,
            BindContext((), class_names, pipeline.model.num_classes, device, "loss", "train.loss"),
        )
        teacher = load_teacher(loss_fn, loss_label, class_names, pipeline.model.num_classes, device)
        if teacher is not None:
            extra = dict(extra, teacher=teacher.record)  # the provenance of every checkpoint and the final model
        model = build_segmentor(model_config).to(device).train()
        optimizer = torch.optim.AdamW(param_groups(model, spec), lr=spec.lr, betas=spec.betas)
        scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        return cls(
            spec,
            model,
            model_config,
            loss_fn,
            optimizer,
            scaler,
            world,
            device,
            amp,
            extra,
            model_label=describe_model(None, model_config, catalog),
            loss_label=loss_label,
            components=training_components(spec),
            teacher=teacher,
        )

    def restore(self, checkpoint: Path | None, log: Callable[[str], None]) -> int:
        """Load ``checkpoint`` (weights, optimizer, scaler), else ``train.init_from``; the iteration to start from."""
        if checkpoint is None:
            if self.spec.init_from:
                _load_initial_weights(self.model, self.spec.init_from, log)
            return 0
        check_same_teacher(self.teacher, checkpoint)
        state = load_checkpoint(checkpoint, self.model, self.optimizer)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        log(f"resuming from {checkpoint} (iteration {state['iteration']})")
        return state["iteration"]

    def distribute(self) -> None:
        """Under torchrun, train through DDP (after :meth:`restore`: DDP starts from rank 0's weights)."""
        if self.world.distributed:
            self.trained = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    def step(self, images: torch.Tensor, targets: torch.Tensor, iteration: int) -> list[float]:
        """Optimizer step ``iteration`` (1-based) over this rank's ``accum_steps`` micro-batches.

        Returns the mean loss of each head."""
        spec = self.spec
        self.optimizer.zero_grad(set_to_none=True)
        head_totals = torch.zeros(len(self.model.heads), device=self.device)
        images, targets = images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        for micro in range(spec.accum_steps):
            torch.manual_seed(micro_batch_seed(spec.seed, iteration, self.world.rank * spec.accum_steps + micro))
            part = slice(micro * spec.batch_size, (micro + 1) * spec.batch_size)
            last_micro = micro == spec.accum_steps - 1
            sync = contextlib.nullcontext() if last_micro or not self.world.distributed else self.trained.no_sync()
            with sync:
                with autocast(self.device, self.amp):
                    head_losses = self.head_losses(images[part], targets[part], iteration)
                    loss = head_losses.sum()
                total = loss.item()  # the one device sync of a micro-batch
                if not math.isfinite(total):
                    raise ConfigError(
                        f"training diverged at iteration {iteration} (loss {total}); lower train.lr "
                        "or set train.grad_clip"
                    )
                with component_errors(f"{self.loss_label}, backward through {self.model_label},"):
                    self.scaler.scale(loss / spec.accum_steps).backward()
            head_totals += head_losses.detach() / spec.accum_steps
        if spec.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return head_totals.tolist()

    def head_losses(self, images: torch.Tensor, targets: torch.Tensor, iteration: int) -> torch.Tensor:
        """The forward pass of one micro-batch and each head's weighted loss, as a float32 vector.

        With a teacher, every head's loss gets the teacher's prediction (its last head) on the same images.
        """
        with component_errors(self.model_label):
            outputs = self.trained(images)
        teacher = None
        if self.teacher is not None:
            with component_errors(self.teacher.label):
                teacher = self.teacher(images)
        with component_errors(self.loss_label):
            losses = [
                self.loss_fn(output, targets, LossContext(images, iteration, self.spec.max_iters, i, teacher=teacher))
                for i, output in enumerate(outputs)
            ]
            for value in losses:
                if not isinstance(value, torch.Tensor) or value.dim() != 0:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise TypeError(f"a loss must return a scalar tensor, got {shape}")
            return torch.stack([(head.loss_weight * value).float() for head, value in zip(self.model.heads, losses)])

    def checkpoint(self, folder: Path, iteration: int) -> None:
        """A resumable checkpoint (weights, optimizer, scaler); only the newest ``keep_checkpoints`` are kept."""
        if self.world.is_main:
            state = {"scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
            save_checkpoint(
                folder, iteration, self.model, self.model_config, self.extra, self.optimizer, state, self.components
            )
            prune_checkpoints(folder, self.spec.keep_checkpoints)
        distributed.barrier(self.world)

    def snapshot(self, folder: Path, iteration: int) -> None:
        """The weights alone (an SWA snapshot, averaged at the end)."""
        if self.world.is_main:
            save_checkpoint(folder, iteration, self.model, self.model_config, self.extra, components=self.components)
        distributed.barrier(self.world)


def training_components(spec: TrainSpec) -> tuple[tuple[str, str, str], ...]:
    """``(path, kind, name)`` of the loss and the remappers: recorded in a trained model's provenance."""
    sources = [
        (f"train.sources[{i}]", "remapper", source.remapper or source.type)
        for i, source in enumerate(spec.sources or [])
    ]
    return (("train.loss", "loss", spec.loss.type), *sources)


def _load_initial_weights(model: torch.nn.Module, ref: str, log: Callable[[str], None]) -> None:
    """``train.init_from``: a trained model's weights (strictly: the pipeline's model must be its architecture)."""
    from ..hub.client import resolve_weights

    resolved = resolve_weights(ref)
    load_weights(
        model,
        resolved.path / WEIGHTS_NAME,
        f"the pipeline's model (train.init_from: {ref}; copy the `model` section of its config.json)",
    )
    log(f"initialised from {resolved.path}")
