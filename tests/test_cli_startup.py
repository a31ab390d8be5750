"""`zoo --help` and `zoo list` import no torch: subcommands and components are imported when used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from zoo_core.cli import SUBCOMMANDS, ZooGroup, _import_command, main

# Runs the CLI in a fresh interpreter (the installed plugins included, as a user has them) and
# prints, after the command's own output, which heavy modules it imported.
PROBE = """
import sys
from zoo_core.cli import main
try:
    main({args!r}, prog_name="zoo")
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"exit": code, "torch": "torch" in sys.modules, "timm": "timm" in sys.modules,
                  "components": sorted(m for m in sys.modules if m.startswith("zoo_core.components."))}}))
"""


def probe(*args: str) -> tuple[str, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + PROBE.format(args=list(args))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output, _, last = result.stdout.rstrip("\n").rpartition("\n")
    return output, json.loads(last)


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["list", "swin*"], ["--version"]])
def test_listing_imports_no_torch(args):
    output, seen = probe(*args)
    assert seen["exit"] == 0, output
    assert not seen["torch"] and not seen["timm"], f"zoo {' '.join(args)} imported torch"
    assert seen["components"] == []


def test_help_lists_every_command_with_its_help():
    output, _ = probe("--help")
    commands = output.split("Commands:")[1]
    for name in [*SUBCOMMANDS, "list"]:
        assert any(line.split()[:1] == [name] and len(line.split()) > 2 for line in commands.splitlines()), name
    assert "deepen" in commands  # a plugin's command (zoo-swin-ocr) is listed too


def test_list_shows_summaries_without_torch():
    output, seen = probe("list")
    assert not seen["torch"]
    lines = {line.split()[0]: line for line in output.splitlines() if line.startswith("  ")}
    assert "FCN decode head (num_convs conv-BN-ReLU blocks" in lines["fcn"]  # ``num_convs`` became plain text
    assert "Swin Transformer" in lines["swin"] and "zoo-swin-ocr" in lines["swin"]


def test_building_a_component_imports_it():
    code = (
        "import sys\nfrom zoo_core.plugins import get_catalog\n"
        "catalog = get_catalog()\nassert 'torch' not in sys.modules\n"
        "tta = catalog.build('tta', 'flip')\nprint(type(tta).__module__, 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("ZOO_")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["zoo_core.components.tta", "True"]


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_read_from_the_source_is_the_commands_own(name):
    """The one-line help `zoo --help` reads without importing equals what the imported command says."""
    group = ZooGroup("zoo")  # nothing imported yet: the rows come from the source
    ctx = click.Context(group)
    formatter = ctx.make_formatter()
    group.format_commands(ctx, formatter)
    assert not group.commands
    rows = dict(line.split(None, 1) for line in formatter.getvalue().splitlines()[1:] if line.strip())
    limit = formatter.width - 6 - max(len(n) for n in group.list_commands(ctx))
    command = _import_command(SUBCOMMANDS[name])
    assert isinstance(command, click.Command) and command.name == name
    assert rows[name].strip() == command.get_short_help_str(limit)


def test_lazy_commands_run_and_unknown_ones_fail():
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["data", "synth", "--help"])
    assert result.exit_code == 0 and "--videos" in result.output
    result = CliRunner().invoke(main, ["nosuch"])
    assert result.exit_code == 2 and "No such command 'nosuch'" in result.output


CLASHING_PLUGIN = '''
import click

from zoo_core import hookimpl


@click.command("run")
def run():
    """Tries to replace a core command that is imported only when used."""


@hookimpl
def zoo_commands():
    return [run]
'''


def test_a_plugin_command_cannot_take_a_lazy_core_name(tmp_path):
    """`run` is not imported when `zoo --help` lists it, yet it is taken; the warning comes once."""
    (tmp_path / "clash_cmd").mkdir()
    (tmp_path / "clash_cmd" / "__init__.py").write_text("")
    (tmp_path / "clash_cmd" / "plugin.py").write_text(CLASHING_PLUGIN)
    info = tmp_path / "clash_cmd-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: clash-cmd\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[zoo.plugins]\nclash = clash_cmd.plugin\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "zoo_core.cli", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: the commands of plugin clash-cmd:clash were skipped") == 1, result.stderr
    assert "'run' is already taken" in result.stderr
    assert "Predict and evaluate" in result.stdout  # the core's run, still listed with its own help
