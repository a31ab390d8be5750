"""``zoo data``: dataset utilities."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 64x96, got {value!r}") from None
    return height, width


@click.group("data")
def data_group() -> None:
    """Dataset utilities: make a synthetic VSPW-format dataset, count class statistics."""


@data_group.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--videos", default=6, show_default=True, help="Annotated videos (split into train and val).")
@click.option("--frames", default=12, show_default=True, help="Frames per video.")
@click.option("--size", default="64x96", show_default=True, callback=_parse_size, help="Frame size HEIGHTxWIDTH.")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed writes the same files.")
@click.option("--force", is_flag=True, help="Write into OUT even if it is not empty.")
def synth_command(out: str, videos: int, frames: int, size: tuple[int, int], seed: int, force: bool) -> None:
    """Write a small synthetic dataset in the VSPW layout to OUT (train, val, and a test video without masks)."""
    from .synth import synthesize

    summary = synthesize(out, videos=videos, frames=frames, size=size, seed=seed, overwrite=force)
    for line in summary.describe():
        click.echo(line)


@data_group.command("stats")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--split", default="train", show_default=True, help="Split whose masks are counted.")
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file to write (the 'stats' argument of the pixel-distribution loss).",
)
def stats_command(root: Path, split: str, out: Path) -> None:
    """Per-class pixel, frame and video counts and priors of a split of ROOT, written as JSON to --out."""
    from .stats import compute_stats, write_stats

    stats = compute_stats(root, split)
    write_stats(out, stats)
    absent = [name for name, n in zip(stats["class_names"], stats["pixel_counts"]) if n == 0]
    click.echo(
        f"{root} [{split}]: {stats['videos']} videos, {stats['frames']} frames, "
        f"{stats['labelled_pixels']} of {stats['total_pixels']} pixels labelled "
        f"({100 * stats['labelled_pixels'] / max(stats['total_pixels'], 1):.1f}%)"
    )
    click.echo(
        f"  {stats['num_classes'] - len(absent)} of {stats['num_classes']} classes present"
        + (f"; absent: {', '.join(absent[:8])}{' ...' if len(absent) > 8 else ''}" if absent else "")
    )
    click.echo(f"wrote {out}")
