"""The contract between the zoo and its plugins: one hook per component kind.

A plugin is any importable object (usually a module named ``plugin.py``) with functions
marked ``@hookimpl``, published under the entry-point group ``zoo.plugins``::

    # pyproject.toml of your distribution
    [project.entry-points."zoo.plugins"]
    my-plugin = "my_package.plugin"

Each hook takes no arguments and returns a ``dict`` from component name to *factory*: a
callable that takes keyword arguments (the ``args`` of the pipeline YAML) and returns
the component. The zoo records which distribution gave each name. Names are short,
lower-case, hyphenated (``swin-ocr``, ``flip``); a name two distributions both register is
a clash, reported naming both, and a pipeline then has to say ``distribution:name``.

The first line of a factory's docstring is the summary ``zoo list`` shows, as plain text
(reST markup such as ``code`` and :class:`~a.B` is stripped). Factories are not called at
discovery time, but a hook runs whenever the plugins are discovered (``zoo list``, ``zoo
--help``, every pipeline): return :func:`zoo_core.lazy` references rather than importing
the component modules (and torch) in the hook::

    from zoo_core import hookimpl, lazy

    @hookimpl
    def zoo_backbones():
        return {"my-convnet": lazy("my_package.backbone:MyConvNet")}

``lazy("module:attr")`` imports ``module`` when the component is first built (an import
failure is a :class:`~zoo_core.errors.PluginError` naming the target); ``zoo list`` reads
the summary from the module's source without importing it or its packages, and the
catalog checks the YAML ``args`` against the target's signature as for a plain factory.
A strict registry (``ZOO_STRICT_PLUGINS=1``, ``load_registry(strict=True)``) imports them
all at discovery. Plain factories (classes, functions) keep working.

Errors: a factory raises :class:`zoo_core.errors.ConfigError` for bad arguments. TTA
policies, ensemblers and losses may define ``bind(context)``, called with a
:class:`~zoo_core.interfaces.BindContext` (the pipeline's model names, class names,
``num_classes``, device) once the component is built and before any model loads, so an
argument that does not fit the pipeline fails at once. Any exception a component raises
while a pipeline runs is reported as one line naming its kind, name, distribution and
version and the video and frame (``zoo run``) or iteration (``zoo train``); ``ZOO_DEBUG=1``
shows the traceback.

The core registers its own parts through these same hooks (:mod:`zoo_core.builtin`).
The interfaces named below are in :mod:`zoo_core.interfaces`.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "zoo"
ENTRY_POINT_GROUP = "zoo.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Factories = dict[str, Callable[..., object]]


@hookspec
def zoo_backbones() -> Factories:
    """Backbones: ``name -> factory(**args) -> Backbone``.

    A backbone is an ``nn.Module`` mapping ``images (N, 3, H, W)`` to a list of NCHW
    feature maps, with attributes ``channels`` and ``strides`` (one entry per map). It must
    accept any input size: pad inside ``forward`` if the architecture needs multiples of
    its stride, and return maps of ``ceil(H / stride) x ceil(W / stride)``.

    Example::

        @hookimpl
        def zoo_backbones():
            return {"my-convnet": MyConvNet}      # MyConvNet(depth=18) -> nn.Module
    """


@hookspec
def zoo_heads() -> Factories:
    """Decode heads: ``name -> factory(*, in_channels, in_strides, num_classes, **args) -> Head``.

    The segmentor builder passes ``in_channels`` and ``in_strides`` (the backbone's lists)
    and ``num_classes``; the rest come from the YAML. A head is an ``nn.Module`` whose
    ``forward(features, prev_output)`` returns either per-pixel logits ``(N, C, h, w)`` or a
    :class:`~zoo_core.interfaces.MaskClassification` (class and mask logits, turned into
    per-pixel scores only at inference). ``prev_output`` is the output of the head before
    it in the cascade (``None`` for the first), so a head can refine another: the built-in
    ``ocr`` head uses the ``fcn`` logits as soft object regions. Attributes: ``num_classes``
    and ``loss_weight`` (the weight of this head's loss in the total; an auxiliary FCN uses
    0.4). The last head of the cascade is the one used for prediction.

    Example::

        @hookimpl
        def zoo_heads():
            return {"my-head": MyHead}   # MyHead(in_channels, in_strides, num_classes, ...)
    """


@hookspec
def zoo_losses() -> Factories:
    """Losses: ``name -> factory(**args) -> Loss``.

    A loss is called as ``loss(output, target, context)``: ``output`` is one head's raw
    output, ``target`` the ``(N, H, W)`` train ids with 255 ignored, ``context`` a
    :class:`~zoo_core.interfaces.LossContext`. It returns a scalar. Context that does not
    change during training (class pixel counts from ``zoo data stats``, a confusion matrix
    saved by ``zoo eval``) is a factory argument, typically a file path read once. The
    builder passes ``num_classes`` when the factory's signature names it. A loss that
    needs a frozen teacher's output sets the class attribute ``needs_teacher = True`` and
    names the teacher in its ``teacher`` attribute (a registry card or a model directory);
    ``zoo train`` then loads it once, before the model is built (refusing a teacher with
    other classes than the student), and fills ``context.teacher`` with the teacher's last
    head's output on the same augmented images, computed without gradients (under the run's
    autocast), for every head of the student.

    Example::

        @hookimpl
        def zoo_losses():
            return {"focal": FocalLoss}   # FocalLoss(gamma=2.0)(output, target, context)
    """


@hookspec
def zoo_remappers() -> Factories:
    """Dataset remappers: ``name -> factory(**args) -> Remapper``.

    A remapper turns a source dataset's label map into VSPW train ids (0..123, 255 for
    ignore) with a 256-entry ``uint8`` lookup table ``lut``; ``remapper(mask)`` applies it;
    ``remapper.keep(remapped)`` is its filter (the 3rd-place recipe keeps an image only if
    at least 80% of its pixels stay labelled); ``source_classes`` lists the source names.

    Example::

        @hookimpl
        def zoo_remappers():
            return {"mapillary": MapillaryToVSPW}
    """


@hookspec
def zoo_tta_policies() -> Factories:
    """Test-time augmentation: ``name -> factory(**args) -> TTAPolicy``.

    A policy is called as ``policy(predict, images)``: ``predict`` maps a batch
    ``(N, 3, H, W)`` to class probabilities ``(N, C, H, W)`` at that batch's size; the
    policy runs it on transformed views (flip, scales), maps every result back to the
    input geometry and returns their average. Accumulate a running sum, do not stack.
    The core's ``predict`` also takes ``size=(H, W)`` (a rescaled view's probabilities at
    the input's size, interpolated once from the model's output) and ``add_to=`` (a running
    sum of that shape, added to in place); see :data:`zoo_core.interfaces.PredictFn`.

    Example::

        @hookimpl
        def zoo_tta_policies():
            return {"vflip": VerticalFlipTTA}
    """


@hookspec
def zoo_ensemblers() -> Factories:
    """Ensemblers: ``name -> factory(**args) -> Ensembler``.

    An ensembler is called once per frame with ``per_model``: an ordered mapping from each
    pipeline model's name to its probabilities ``(N, C, H, W)``. It returns one ``(N, C, H,
    W)`` map whose argmax is the prediction. Frames arrive as a stream; keep no more than
    a frame's worth of state. Model names let an ensembler group models (strong, weak,
    auxiliary) through its arguments; check them in ``bind(context)`` against
    ``context.model_names`` (the built-in ``weighted`` does), which is called even when the
    pipeline has a single model and the ensembler itself is skipped.

    Example::

        @hookimpl
        def zoo_ensemblers():
            return {"max": lambda: (lambda per_model: torch.stack(list(per_model.values())).amax(0))}
    """


@hookspec
def zoo_registry_cards() -> list:
    """Registry cards of published weights: a list of card files (paths) or card mappings.

    Each card follows the format of ``registry/README.md`` (name, plugin, model, class names,
    ``hub.repo_id``, ``hub.revision`` (a full commit id), ``hub.files`` (the sha256 of
    ``config.json`` and of the weights), metrics, license). ``zoo list --weights`` shows them
    and ``zoo pull NAME`` downloads and verifies every file.

    Example::

        @hookimpl
        def zoo_registry_cards():
            return [Path(__file__).parent / "cards" / "swin-l-ocr.vspw.yaml"]
    """


@hookspec
def zoo_commands() -> list:
    """Extra ``zoo`` subcommands: a list of ``click.Command`` objects.

    For tools that belong to one plugin's models (model surgery such as ``zoo deepen``).
    They are looked up only when the user names a command the core does not have, or asks
    for ``zoo --help``; a name the core or another plugin already uses is refused. Import
    heavy modules inside the command's function, not at the top of ``plugin.py``.

    Example::

        @hookimpl
        def zoo_commands():
            from .command import deepen_command

            return [deepen_command]
    """


KIND_HOOKS = {
    "backbone": "zoo_backbones",
    "head": "zoo_heads",
    "loss": "zoo_losses",
    "remapper": "zoo_remappers",
    "tta": "zoo_tta_policies",
    "ensembler": "zoo_ensemblers",
}
"""Component kind -> the hook that provides it."""
