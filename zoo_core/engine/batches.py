"""Which samples each process trains on at each step, and the torch seed of each micro-batch.

Global step ``s`` of epoch ``e`` takes the next global batch of ``TrainSet.epoch_order(e)``;
every process loads its own slice of it. Both depend on the seed and the step only, so a
resumed run and a run over N processes see the same global batches as one uninterrupted process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch

from .. import errors
from ..data import sources as data_sources
from ..data.sampler import TrainSet
from ..data.transforms import DEFAULT_TRAIN_TRANSFORMS, build_transforms
from ..errors import ConfigError
from ..pipeline.schema import Pipeline, SourceSpec, TrainSpec
from . import distributed


def micro_batch_seed(seed: int, iteration: int, micro_batch: int) -> int:
    """The torch seed of one global micro-batch: the same whichever process runs it."""
    return (seed * 1_000_003 + iteration) * 4099 + micro_batch


def local_batches(
    train_set: TrainSet, spec: TrainSpec, world: distributed.World, first_step: int
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
        sampler = [order[s * global_batch + start : s * global_batch + start + local] for s in range(offset, per_epoch)]
        train_set.set_epoch(epoch)  # before the loader starts: workers copy the dataset then
        # An own generator: the loader must not draw from the global torch RNG (that would shift dropout on resume).
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=spec.num_workers,
            generator=torch.Generator().manual_seed(spec.seed),
            persistent_workers=False,
        )
        try:
            for images, targets in loader:
                yield epoch, images, targets
        except Exception as exc:
            relayed = worker_zoo_error(exc)
            if relayed is None:
                raise
            raise relayed from None
        epoch, offset = epoch + 1, 0


# The last lines of a worker's traceback as torch relays it: "zoo_core.errors.DataError: <message>".
_WORKER_ERROR = re.compile(r"\nzoo_core\.errors\.(\w+): (.*?)\s*\Z", re.S)


def worker_zoo_error(exc: BaseException) -> errors.ZooError | None:
    """The :class:`~zoo_core.errors.ZooError` a DataLoader worker raised, as the user should see it.

    torch re-raises a worker's exception in the main process rebuilt from text: the worker's
    traceback, ending with the original type and message (a ``RuntimeError`` when the type
    takes other arguments). Only that message is for the user; None for anything else.
    """
    found = _WORKER_ERROR.search(str(exc)) if "Original Traceback" in str(exc) else None
    kind = getattr(errors, found.group(1), None) if found else None
    if not (isinstance(kind, type) and issubclass(kind, errors.ZooError)):
        return None
    message = found.group(2)
    if kind is errors.ComponentError:  # its text is "<component> failed[ <where>]: <error>"
        component, _, rest = message.partition(" failed")
        where, _, error = rest.partition(": ")
        return errors.ComponentError(component, error, where.strip())
    return kind(message)


def build_train_set(pipeline: Pipeline, world: distributed.World, log: Callable[[str], None]) -> TrainSet:
    """The training data of every source; under DDP rank 0 scans (and caches) the label filters first."""
    spec = pipeline.train
    sources = spec.sources or [SourceSpec(type="vspw", root=pipeline.data.root, split=spec.split)]
    transforms = build_transforms(spec.transforms or DEFAULT_TRAIN_TRANSFORMS, path="train.transforms")
    if not world.is_main:
        distributed.barrier(world)
    train_set = data_sources.build_train_set(
        sources,
        pipeline.data.root,
        transforms,
        spec.seed,
        progress=pipeline.runtime.progress and world.is_main,
        log=log,
    )
    if world.is_main:
        distributed.barrier(world)
    check_global_batch(spec, world, len(train_set))
    return train_set


def resolve_global_batch(pipeline: Pipeline, world: distributed.World, log: Callable[[str], None]) -> Pipeline:
    """The pipeline with ``train.accum_steps`` derived from ``train.global_batch`` for this many processes.

    ``global_batch`` (the reports' 16) = ``batch_size`` x ``accum_steps`` x processes, so one recipe
    runs on 8 GPUs (batch_size 2, accum 1) or on one (batch_size 2, accum 8) with the same batches.
    Logs the global batch in either case.
    """
    spec = pipeline.train
    assert spec is not None
    processes = f"{world.size} process{'es' if world.size > 1 else ''}"
    if spec.global_batch is not None:
        per_step = spec.batch_size * world.size
        if spec.global_batch % per_step:
            raise ConfigError(
                f"train.global_batch {spec.global_batch} is not a multiple of train.batch_size {spec.batch_size} x "
                f"{processes} = {per_step}; choose a batch_size and a process count (--nproc) whose product "
                f"divides {spec.global_batch}"
            )
        accum = spec.global_batch // per_step
        if "accum_steps" in spec.model_fields_set and spec.accum_steps != accum:
            raise ConfigError(
                f"train.accum_steps {spec.accum_steps} contradicts train.global_batch {spec.global_batch} "
                f"(batch_size {spec.batch_size} x {processes} needs accum_steps {accum}); remove accum_steps, "
                "which global_batch sets, or set global_batch: null"
            )
        spec = spec.model_copy(update={"accum_steps": accum})
        pipeline = pipeline.model_copy(update={"train": spec})
    log(
        f"global batch {spec.batch_size * spec.accum_steps * world.size} images per iteration "
        f"(batch_size {spec.batch_size} x accum_steps {spec.accum_steps} x {processes})"
    )
    return pipeline


def check_global_batch(spec: TrainSpec, world: distributed.World, samples: int) -> None:
    global_batch = spec.batch_size * spec.accum_steps * world.size
    if samples < global_batch:
        raise ConfigError(
            f"the global batch is {global_batch} images (train.batch_size {spec.batch_size} x "
            f"accum_steps {spec.accum_steps} x {world.size} processes) but the training data has "
            f"only {samples}; lower train.batch_size or add data"
        )
