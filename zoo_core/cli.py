"""The ``zoo`` command line. Each service module owns its subcommands; this file wires them."""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .errors import ZooError


class ZooGroup(click.Group):
    """Turns :class:`ZooError` into ``error: ...`` on stderr and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            if os.environ.get("ZOO_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or plugin_commands().get(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(plugin_commands()))


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zoo")
def main() -> None:
    """Video scene parsing toolkit: plugins, data, training, pipelines, evaluation."""


def plugin_commands() -> dict[str, click.Command]:
    """Subcommands from the plugins' ``zoo_commands`` hook; a faulty one is skipped with a warning."""
    from .plugins import get_registry

    manager = get_registry().manager
    found: dict[str, click.Command] = {}
    for impl in manager.hook.zoo_commands.get_hookimpls():
        source = manager.get_name(impl.plugin)  # distribution:name
        try:
            commands = impl.function() or []
            for command in commands:
                if not isinstance(command, click.Command) or not command.name:
                    raise TypeError(f"zoo_commands() must return click commands, got {command!r}")
                if command.name in main.commands or command.name in found:
                    raise ValueError(f"the command name {command.name!r} is already taken")
                found[command.name] = command
        except Exception as exc:
            click.echo(f"warning: the commands of plugin {source} were skipped: {type(exc).__name__}: {exc}", err=True)
    return found


@main.command("list")
@click.argument("pattern", required=False)
@click.option("--kind", type=click.Choice(["backbone", "head", "loss", "remapper", "tta", "ensembler"]),
              help="Only components of this kind.")
@click.option("--weights", is_flag=True, help="List the registry cards of published weights instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with 'plugins' and 'components' "
              "(with --weights: 'weights').")
def list_command(pattern: str | None, kind: str | None, weights: bool, as_json: bool) -> None:
    """Installed plugins and their components; PATTERN is a shell-style wildcard."""
    import fnmatch

    from .plugins import get_registry

    if weights:
        _list_weights(pattern, as_json)
        return

    registry = get_registry()
    components = registry.catalog.entries(kind=kind, pattern=pattern)

    def provides(p) -> bool:
        return any(c.plugin == p.name and c.distribution == p.distribution for c in components)

    plugins = [p for p in registry.plugins
               if (not pattern or fnmatch.fnmatchcase(p.name, pattern) or fnmatch.fnmatchcase(p.distribution, pattern)
                   or provides(p)) and (not kind or provides(p))]
    if as_json:
        click.echo(json.dumps({"plugins": [p.record() for p in plugins],
                               "components": [c.record() for c in components]}, indent=2))
        return
    click.echo("Plugins")
    for p in plugins:
        line = f"  {p.name:<20} {p.distribution:<24} {p.version:<10} {p.status}"
        click.echo(line + (f"  {p.error}" if p.error else ""))
    current = None
    for c in components:
        if c.kind != current:
            current = c.kind
            click.echo(f"\n{current}")
        click.echo(f"  {c.name:<20} {c.distribution:<24} {c.summary}")


def _list_weights(pattern: str | None, as_json: bool) -> None:
    import fnmatch

    from .hub.cards import discover_cards

    sources = [s for s in discover_cards() if not pattern or fnmatch.fnmatchcase(s.card.name, pattern)]
    if as_json:
        click.echo(json.dumps({"weights": [dict(s.card.model_dump(mode="json"), origin=s.origin) for s in sources]},
                              indent=2))
        return
    if not sources:
        click.echo("no registry cards" + (f" match {pattern!r}" if pattern else "")
                   + " (cards come from zoo-core, plugins and the folders in ZOO_REGISTRY_PATH)")
    for source in sources:
        card = source.card
        miou = f"mIoU {100 * card.metrics.miou:.2f} ({card.metrics.split})" if card.metrics and card.metrics.miou is not None else ""
        flag = "" if card.verified else "  [unverified]"
        click.echo(f"{card.name:<28} {card.hub.repo_id}@{card.hub.revision[:12]}  {card.plugin.distribution:<18} {miou}{flag}")
        if card.summary:
            click.echo(f"    {card.summary}")


def _register_subcommands() -> None:
    from .data.command import data_group
    from .engine.command import average_command, train_command
    from .evaluation.command import eval_command
    from .hub.command import convert_command, hub_group, pull_command, push_command
    from .pipeline.command import run_command

    main.add_command(data_group)
    main.add_command(eval_command)
    main.add_command(run_command)
    main.add_command(train_command)
    main.add_command(average_command)
    for command in (pull_command, push_command, convert_command, hub_group):
        main.add_command(command)


_register_subcommands()

if __name__ == "__main__":
    main()
