"""``zoo new-plugin``: only click at the top, so ``zoo --help`` stays fast."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("new-plugin")
@click.argument("kind", metavar="KIND")
@click.argument("name", metavar="NAME")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the folder zoo-NAME.",
)
def new_plugin_command(kind: str, name: str, parent: Path) -> None:
    """Create a plugin distribution zoo-NAME with a working component of KIND, its tests and README.

    KIND is one of backbone, head, loss, remapper, tta, ensembler. NAME is the component's
    name: lower-case words joined by hyphens (my-ensemble); the distribution is zoo-NAME,
    the package zoo_NAME. An existing non-empty folder is never overwritten.
    """
    from . import new_plugin

    target = new_plugin(kind, name, parent)
    click.echo(f"created {target} ({kind} {name!r}); next:")
    click.echo(f"  cd {target} && pip install -e '.[test]' && pytest && zoo list {name}")
