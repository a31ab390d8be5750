"""``zoo maskformer``: convert MaskFormer weights from transformers or the official detectron2 code."""

from __future__ import annotations

from pathlib import Path

import click

_OUT = click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write (config.json + model.safetensors).",
)


def _size_divisibility(default_help: str) -> click.Option:
    return click.option(
        "--size-divisibility",
        type=click.IntRange(min=0),
        default=None,
        help=f"Pad images at prediction to multiples of this (0: off). Default: {default_help}.",
    )


@click.group("maskformer")
def maskformer_group() -> None:
    """Convert MaskFormer weights (transformers, official detectron2 checkpoints) to zoo model directories."""


@maskformer_group.command("import-hf")
@click.argument("source")
@_OUT
@_size_divisibility("the size_divisor of the model's preprocessor_config.json, else 32")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of a repo id.")
def import_hf_command(source: str, out_dir: Path, size_divisibility: int | None, revision: str | None) -> None:
    """Convert a transformers MaskFormerForInstanceSegmentation with a Swin backbone.

    SOURCE is a directory written by save_pretrained (config.json + model.safetensors) or a
    Hugging Face Hub repo id such as facebook/maskformer-swin-large-ade. Only safetensors
    weights are read. Needs `pip install transformers`.
    """
    from .convert_hf import import_hf

    done = import_hf(source, out_dir, size_divisibility=size_divisibility, revision=revision)
    click.echo(f"converted {source}: {done.tensors} tensors, {done.config['num_classes']} classes -> {done.out_dir}")


@maskformer_group.command("import-d2")
@click.argument("pkl", type=click.Path(dir_okay=True, path_type=Path))
@_OUT
@_size_divisibility("32, as the official configs")
@click.option(
    "--nheads",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Attention heads of the transformer decoder (MODEL.MASK_FORMER.NHEADS; not in the weights' shapes).",
)
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse the checkpoint unless it has this many classes (150 for ADE20K).",
)
def import_d2_command(
    pkl: Path, out_dir: Path, size_divisibility: int | None, nheads: int, num_classes: int | None
) -> None:
    """Convert an official MaskFormer checkpoint (model_final_*.pkl) with a Swin backbone.

    PKL is read without running code: only numpy arrays and plain containers are unpickled,
    anything else is refused. The sizes are read off the weights' shapes.
    """
    from .convert_d2 import import_d2

    done = import_d2(
        pkl,
        out_dir,
        nheads=nheads,
        size_divisibility=32 if size_divisibility is None else size_divisibility,
        num_classes=num_classes,
    )
    click.echo(f"converted {pkl}: {done.tensors} tensors, {done.config['num_classes']} classes -> {done.out_dir}")
