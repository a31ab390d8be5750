"""``zoo run``, and the decorator shared by the commands that take a pipeline (``zoo train`` too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from .schema import Pipeline, load_pipeline


def pipeline_command(name: str, default_out: str, out_help: str, options: tuple = ()) -> Callable:
    """A command taking PIPELINE, --out, --set, --device and --amp; it receives the validated pipeline.

    ``options`` are extra ``click.option`` decorators; their values reach the body as keyword arguments.
    """

    def decorate(body: Callable[..., None]) -> click.Command:
        def with_options(function: Callable) -> Callable:
            for option in reversed(options):
                function = option(function)
            return function

        @click.command(name, help=body.__doc__)
        @click.argument("pipeline_path", metavar="PIPELINE", type=click.Path(dir_okay=False))
        @click.option("--out", type=click.Path(file_okay=False), default=default_out, show_default=True, help=out_help)
        @click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY.PATH=VALUE",
            help="Override a pipeline value (YAML syntax), e.g. --set train.max_iters=50.",
        )
        @click.option("--device", help="cpu, cuda or cuda:N (overrides runtime.device).")
        @click.option(
            "--amp",
            type=click.Choice(["auto", "none", "bf16", "fp16"]),
            help="Autocast precision (overrides runtime.amp, default auto: bf16 where the device "
            "computes it natively, else fp32).",
        )
        @with_options
        def command(
            pipeline_path: str,
            out: str,
            overrides: tuple[str, ...],
            device: str | None,
            amp: str | None,
            **extra_options,
        ) -> None:
            extra = list(overrides)
            if device:
                extra.append(f"runtime.device={device}")
            if amp:
                extra.append(f"runtime.amp={amp}")
            from ..plugins import warn_broken_plugins

            warn_broken_plugins()
            body(load_pipeline(pipeline_path, extra), Path(out), **extra_options)

        return command

    return decorate


NPROC_OPTION = click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Processes on this machine (torchrun; gloo on CPU, nccl on GPU).",
)


@pipeline_command(
    "run",
    "runs/latest",
    "Run directory; rerunning into it resumes.",
    options=(NPROC_OPTION,),
)
def run_command(pipeline: Pipeline, out: Path, nproc: int) -> None:
    """Predict and evaluate: data -> models (TTA) -> ensemble -> PNGs -> metrics and report.

    With --nproc N (or under torchrun) the videos are split across the processes; the results
    are those of one process."""
    from ..parallel import relaunch

    relaunch(nproc)  # --nproc N: this command again, in N processes
    from .report import metrics_table
    from .run import run_pipeline

    metrics = run_pipeline(pipeline, out, log=lambda m: click.echo(m, err=True))
    if metrics is None:  # another rank than 0: rank 0 reports
        return
    click.echo(f"predictions: {out / 'pred'}")
    if metrics:
        click.echo(metrics_table(metrics))
        click.echo(f"metrics: {out / 'metrics.json'}  report: {out / 'report'}")
