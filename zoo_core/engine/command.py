"""``zoo train`` and ``zoo average``."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.command import pipeline_command
from ..pipeline.schema import Pipeline


@click.command("average")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model directory to write (config.json + model.safetensors).",
)
@click.option("--force", is_flag=True, help="Replace the model already in --out.")
def average_command(checkpoints: tuple[Path, ...], out: Path, force: bool) -> None:
    """Average the weights of CHECKPOINTS (model directories of one architecture, such as
    RUN/checkpoints/iter_*) into a new model, as the 3rd-place VOLO model was made."""
    from ..errors import ConfigError
    from ..model_dir import WEIGHTS_NAME
    from .averaging import average_model_dirs

    if out.resolve() in {c.resolve() for c in checkpoints}:
        raise ConfigError(f"--out {out} is one of the checkpoints being averaged; write the average elsewhere")
    if (out / WEIGHTS_NAME).exists() and not force:
        raise ConfigError(f"{out / WEIGHTS_NAME} exists; choose another --out or pass --force")
    average_model_dirs(list(checkpoints), out)
    click.echo(f"averaged {len(checkpoints)} checkpoints -> {out / WEIGHTS_NAME}")


@pipeline_command(
    "train",
    "runs/train",
    "Run directory: checkpoints, train_log.jsonl, model.safetensors, config.json.",
    options=(
        click.option(
            "--resume", is_flag=True, help="Continue from the newest checkpoint in --out (same pipeline and --set)."
        ),
        click.option(
            "--nproc",
            type=int,
            default=1,
            show_default=True,
            help="Processes on this machine (torchrun; gloo on CPU, nccl on GPU).",
        ),
    ),
)
def train_command(pipeline: Pipeline, out: Path, resume: bool, nproc: int) -> None:
    """Train the pipeline's `model` with its `train` recipe (resumable; Ctrl-C writes a checkpoint)."""
    from ..parallel import relaunch

    relaunch(nproc)  # --nproc N: this command again, in N processes
    from .trainer import train

    train(pipeline, out, resume=resume, log=lambda m: click.echo(m, err=True))
