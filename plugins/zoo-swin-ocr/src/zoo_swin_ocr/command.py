"""``zoo deepen``: add Swin blocks to a trained model directory."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_depths(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected four comma-separated integers, e.g. 4,6,20,4") from None
    if len(depths) != 4 or min(depths) < 1:
        raise click.BadParameter(f"{value!r}: expected four positive integers (one per Swin stage), e.g. 4,6,20,4")
    return depths


@click.command("deepen")
@click.argument("model_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--depths",
    required=True,
    callback=_parse_depths,
    metavar="D1,D2,D3,D4",
    help="Blocks per stage after deepening, e.g. 4,6,20,4 (each at least the model's, even additions).",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write (config.json + model.safetensors).",
)
def deepen_command(model_dir: Path, depths: tuple[int, ...], out_dir: Path) -> None:
    """Add Swin blocks to a trained model, as 3rd place did: (2,2,18,2) -> (4,6,20,4).

    MODEL_DIR is a model directory with the 'swin' backbone of zoo-swin-ocr. New blocks are
    appended to each stage as copies of its last blocks with their residual output projections
    zeroed: each starts as the identity, so the deepened model predicts
    exactly what MODEL_DIR does until it is fine-tuned.
    """
    from .deepen import deepen_model_dir

    done = deepen_model_dir(model_dir, depths, out_dir)
    old, new = (",".join(map(str, d)) for d in (done.old_depths, done.new_depths))
    click.echo(
        f"deepened {model_dir}: depths {old} -> {new}, {done.added_blocks} blocks added (identity at start), "
        f"{done.kept_tensors} tensors kept -> {done.out_dir}"
    )
