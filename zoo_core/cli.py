"""The ``zoo`` command line. Each service module owns its subcommands; this file wires them.

The subcommands are imported when they run: ``zoo --help`` and ``zoo list`` import no torch.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys

import click

from .catalog import docstring_from_source
from .errors import ZooError
from .hookspecs import KIND_HOOKS
from .version import __version__

SUBCOMMANDS = {
    "average": "zoo_core.engine.command:average_command",
    "compare": "zoo_core.evaluation.compare:compare_command",
    "convert": "zoo_core.hub.command:convert_command",
    "data": "zoo_core.data.command:data_group",
    "ensemble": "zoo_core.ensembling.command:ensemble_group",
    "eval": "zoo_core.evaluation.command:eval_command",
    "hub": "zoo_core.hub.command:hub_group",
    "new-plugin": "zoo_core.scaffold.command:new_plugin_command",
    "pull": "zoo_core.hub.command:pull_command",
    "push": "zoo_core.hub.command:push_command",
    "run": "zoo_core.pipeline.command:run_command",
    "train": "zoo_core.engine.command:train_command",
}
"""The core's subcommands, name -> ``module:attr`` of the click command, imported on first use."""


class ZooGroup(click.Group):
    """Turns :class:`ZooError` into ``error: ...`` on stderr and a non-zero exit, no traceback.

    Subcommands of :data:`SUBCOMMANDS` are imported when named; ``--help`` reads their one-line
    help from the source, so listing them imports none.
    """

    def main(self, *args, **kwargs):
        # Here rather than in invoke(): click builds `--help` (and looks up plugin commands)
        # while parsing, before invoke() runs.
        try:
            return super().main(*args, **kwargs)
        except ZooError as exc:
            from .plugins import env_flag

            if env_flag("ZOO_DEBUG"):
                raise
            from .parallel import report_to_launcher

            if not report_to_launcher(exc):  # a rank of `--nproc`: the launcher prints the first failure once
                click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in SUBCOMMANDS:
            self.add_command(_import_command(SUBCOMMANDS[name]), name)
        return super().get_command(ctx, name) or plugin_commands().get(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS) | set(plugin_commands()))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            lazy = name in SUBCOMMANDS and name not in self.commands
            doc = docstring_from_source(*SUBCOMMANDS[name].split(":")) if lazy else None
            if doc is not None:
                rows.append((name, click.Command(name, help=doc).get_short_help_str(limit)))
            elif (command := self.get_command(ctx, name)) is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _import_command(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zoo")
def main() -> None:
    """Video scene parsing toolkit: plugins, data, training, pipelines, evaluation."""


def plugin_commands() -> dict[str, click.Command]:
    """Subcommands from the plugins' ``zoo_commands`` hook; a faulty one is skipped with a warning."""
    from .plugins import get_registry

    return _commands_of(get_registry().manager)


@functools.lru_cache(maxsize=1)  # once per loaded registry: `zoo --help` asks for every name, warn once
def _commands_of(manager) -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for impl in manager.hook.zoo_commands.get_hookimpls():
        source = manager.get_name(impl.plugin)  # distribution:name
        try:
            commands = impl.function() or []
            for command in commands:
                if not isinstance(command, click.Command) or not command.name:
                    raise TypeError(f"zoo_commands() must return click commands, got {command!r}")
                if command.name in main.commands or command.name in SUBCOMMANDS or command.name in found:
                    raise ValueError(f"the command name {command.name!r} is already taken")
                found[command.name] = command
        except Exception as exc:
            click.echo(f"warning: the commands of plugin {source} were skipped: {type(exc).__name__}: {exc}", err=True)
    return found


@main.command("list")
@click.argument("pattern", required=False)
@click.option(
    "--kind",
    type=click.Choice(list(KIND_HOOKS)),
    help="Only components of this kind.",
)
@click.option("--weights", is_flag=True, help="List the registry cards of published weights instead.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object with 'plugins' and 'components' (with --weights: 'weights').",
)
def list_command(pattern: str | None, kind: str | None, weights: bool, as_json: bool) -> None:
    """Installed plugins and their components; PATTERN is a shell-style wildcard."""
    from .catalog import plugin_matches
    from .plugins import get_registry

    if weights:
        _list_weights(pattern, as_json)
        return

    registry = get_registry()
    components = registry.catalog.entries(kind=kind, pattern=pattern)

    def provides(p) -> bool:
        return any(c.plugin == p.name and c.distribution == p.distribution for c in components)

    plugins = [
        p
        for p in registry.plugins
        if (not pattern or plugin_matches(p.name, p.distribution, pattern) or provides(p)) and (not kind or provides(p))
    ]
    if as_json:
        click.echo(
            json.dumps(
                {"plugins": [p.record() for p in plugins], "components": [c.record() for c in components]}, indent=2
            )
        )
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
        click.echo(
            json.dumps({"weights": [dict(s.card.model_dump(mode="json"), origin=s.origin) for s in sources]}, indent=2)
        )
        return
    if not sources:
        click.echo(
            "no registry cards"
            + (f" match {pattern!r}" if pattern else "")
            + " (cards come from zoo-core, plugins and the folders in ZOO_REGISTRY_PATH)"
        )
    for source in sources:
        card = source.card
        metrics = card.metrics
        miou = f"mIoU {100 * metrics.miou:.2f} ({metrics.split})" if metrics and metrics.miou is not None else ""
        flag = "" if card.verified else "  [unverified]"
        click.echo(
            f"{card.name:<28} {card.hub.repo_id}@{card.hub.revision[:12]}  {card.plugin.distribution:<18} {miou}{flag}"
        )
        if card.summary:
            click.echo(f"    {card.summary}")


if __name__ == "__main__":
    main()
