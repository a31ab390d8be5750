"""``zoo run`` and ``zoo train``."""

from __future__ import annotations

from pathlib import Path

import click

from .schema import load_pipeline

_set_option = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                           help="Override a pipeline value (YAML syntax), e.g. --set train.max_iters=50.")
_device_option = click.option("--device", help="cpu, cuda or cuda:N (overrides runtime.device).")
_amp_option = click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]),
                           help="Autocast precision (overrides runtime.amp); bf16 speeds up recent CPUs.")


def _load(pipeline_path: str, overrides: tuple[str, ...], device: str | None, amp: str | None):
    extra = list(overrides)
    if device:
        extra.append(f"runtime.device={device}")
    if amp:
        extra.append(f"runtime.amp={amp}")
    from ..cli import warn_broken_plugins

    warn_broken_plugins()
    return load_pipeline(pipeline_path, extra)


@click.command("run")
@click.argument("pipeline_path", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="Run directory; rerunning into it resumes.")
@_set_option
@_device_option
@_amp_option
def run_command(pipeline_path: str, out: str, overrides: tuple[str, ...], device: str | None, amp: str | None) -> None:
    """Predict and evaluate: data -> models (TTA) -> ensemble -> PNGs -> metrics and report."""
    from .report import metrics_table
    from .run import run_pipeline

    pipeline = _load(pipeline_path, overrides, device, amp)
    metrics = run_pipeline(pipeline, Path(out), log=lambda m: click.echo(m, err=True))
    click.echo(f"predictions: {Path(out) / 'pred'}")
    if metrics:
        click.echo(metrics_table(metrics))
        click.echo(f"metrics: {Path(out) / 'metrics.json'}  report: {Path(out) / 'report'}")


@click.command("train")
@click.argument("pipeline_path", metavar="PIPELINE", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="runs/train", show_default=True,
              help="Run directory: checkpoints, train_log.jsonl, model.safetensors, config.json.")
@_set_option
@_device_option
@_amp_option
def train_command(pipeline_path: str, out: str, overrides: tuple[str, ...], device: str | None, amp: str | None) -> None:
    """Train the pipeline's `model` with its `train` recipe."""
    from ..engine.trainer import train

    pipeline = _load(pipeline_path, overrides, device, amp)
    train(pipeline, Path(out), log=lambda m: click.echo(m, err=True))
