"""Plugin discovery and ``zoo list``, against real distribution metadata.

Each test writes small distributions (a package plus a ``*.dist-info`` with METADATA and
``entry_points.txt``) into a temporary site directory, so ``importlib.metadata`` finds
them exactly as it finds an installed plugin.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from zoo_core.errors import ConfigError, PluginError
from zoo_core.plugins import load_registry, reset_registry

RECORD_KEYS = {
    "plugin": {"name", "distribution", "version", "status", "error"},
    "component": {"kind", "name", "distribution", "version", "summary"},
}

GOOD_PLUGIN = '''
from zoo_core.hookspecs import hookimpl


class TinyHead:
    """A head that only remembers its arguments.

    This second paragraph is not part of the summary.
    """

    def __init__(self, in_channels, in_strides, num_classes, depth=2):
        self.in_channels, self.in_strides, self.num_classes, self.depth = in_channels, in_strides, num_classes, depth


def vertical_flip():
    """Vertical flip test-time augmentation."""
    return "vflip-policy"


@hookimpl
def zoo_heads():
    return {"tiny-head": TinyHead}


@hookimpl
def zoo_tta_policies():
    return {"vflip": vertical_flip}
'''

# Each broken plugin also offers a valid loss: none of a broken plugin's parts may be kept.
BROKEN_PLUGINS = {
    "import": ("import zoo_missing_framework\n", "import failed: ModuleNotFoundError", "zoo_missing_framework"),
    "list": (
        "@hookimpl\ndef zoo_heads():\n    return ['listed-head']\n",
        "validate failed: TypeError",
        "zoo_heads() must return a dict",
    ),
    "not-callable": (
        "@hookimpl\ndef zoo_heads():\n    return {'number-head': 3}\n",
        "validate failed: TypeError",
        "'number-head' whose factory is not callable",
    ),
    "misspelled-hook": (
        "@hookimpl\ndef zoo_head():\n    return {'lost-head': dict}\n",
        "validate failed: PluginValidationError",
        "unknown hook 'zoo_head'",
    ),
}
BROKEN_COMMON = (
    "from zoo_core.hookspecs import hookimpl\n\n@hookimpl\ndef zoo_losses():\n    return {'orphan-loss': dict}\n\n"
)


class Site:
    """A directory on ``sys.path`` that distributions are written into."""

    def __init__(self, root: Path):
        self.root = root
        self.packages: list[str] = []

    def add(self, distribution: str, version: str, package: str, source: str, entry_point: str = "plugin") -> None:
        pkg = self.root / package
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "plugin.py").write_text(textwrap.dedent(source))
        info = self.root / f"{package}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[zoo.plugins]\n{entry_point} = {package}.plugin\n")
        self.packages.append(package)

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.root)}


@pytest.fixture
def site(tmp_path, monkeypatch):
    for name in ("ZOO_STRICT_PLUGINS", "ZOO_DISABLE_PLUGIN_AUTOLOAD", "ZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    site = Site(root)
    yield site
    # Package names repeat across tests; forget them so the next test imports its own.
    for module in [m for m in sys.modules if m.split(".")[0] in site.packages]:
        del sys.modules[module]
    reset_registry()  # nor may the process-wide registry keep this site's plugins


@pytest.fixture
def good_site(site):
    site.add("good-zoo-plugin", "1.2.3", "good_zoo_plugin", GOOD_PLUGIN, entry_point="good")
    return site


def record_of(registry, distribution):
    (record,) = [p for p in registry.plugins if p.distribution == distribution]
    return record


def list_json(run_zoo, *args, env):
    result = run_zoo("list", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def zoo_list():
    """``zoo_list(*args)``: ``zoo list ARGS`` in this process (fast), on a freshly loaded registry."""
    from click.testing import CliRunner

    from zoo_core.cli import main

    def run(*args: str):
        reset_registry()
        result = CliRunner().invoke(main, ["list", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args else result.stdout

    yield run
    reset_registry()


# -- a good plugin --------------------------------------------------------------------


def test_good_plugin_components_carry_distribution_and_version(good_site):
    registry = load_registry()
    record = record_of(registry, "good-zoo-plugin")
    assert (record.name, record.version, record.status, record.error) == ("good", "1.2.3", "ok", "")
    assert record_of(registry, "zoo-core").status == "ok"

    head = registry.catalog.get("head", "tiny-head")
    assert (head.distribution, head.version, head.plugin) == ("good-zoo-plugin", "1.2.3", "good")
    assert head.factory.__module__ == "good_zoo_plugin.plugin"
    assert head.summary == "A head that only remembers its arguments."
    assert registry.catalog.get("tta", "vflip").summary == "Vertical flip test-time augmentation."
    # the qualified name works too, in the PEP 503 spelling or as written in METADATA
    assert registry.catalog.get("head", "good_zoo_plugin:tiny-head") is head
    assert registry.catalog.get("head", "good-zoo-plugin:tiny-head") is head


def test_build_injects_only_what_the_factory_accepts(good_site):
    catalog = load_registry().catalog
    head = catalog.build("head", "tiny-head", {"depth": 5}, in_channels=[8, 16], in_strides=[4, 8], num_classes=3)
    assert (head.in_channels, head.in_strides, head.num_classes, head.depth) == ([8, 16], [4, 8], 3, 5)
    # vertical_flip() takes nothing: the injected value is dropped, not passed
    assert catalog.build("tta", "vflip", {}, num_classes=3) == "vflip-policy"


def test_build_rejects_unknown_args_listing_accepted_ones(good_site):
    catalog = load_registry().catalog
    with pytest.raises(ConfigError) as err:
        catalog.build("head", "tiny-head", {"dept": 5}, in_channels=[8], in_strides=[4], num_classes=3)
    message = str(err.value)
    assert "'tiny-head' has no argument(s) dept" in message
    assert message.endswith("it accepts: depth")  # injected arguments are not the user's to set

    with pytest.raises(ConfigError, match=r"'vflip' has no argument\(s\) scale; it accepts: \(none\)"):
        catalog.build("tta", "vflip", {"scale": 2})


def test_unknown_component_lists_installed_choices(good_site):
    catalog = load_registry().catalog
    with pytest.raises(ConfigError) as err:
        catalog.get("tta", "vflp")
    assert "unknown tta 'vflp'" in str(err.value)
    assert "vflip" in str(err.value).split("installed ttas:")[1]
    with pytest.raises(ConfigError, match="unknown head 'other-dist:tiny-head'"):
        catalog.get("head", "other-dist:tiny-head")
    with pytest.raises(ConfigError, match="unknown component kind 'heads'; choose one of: backbone, head"):
        catalog.get("heads", "tiny-head")


def test_zoo_list_json_records_have_the_documented_keys(good_site, run_zoo):
    listing = list_json(run_zoo, env=good_site.env)
    assert set(listing) == {"plugins", "components"}
    assert all(set(p) == RECORD_KEYS["plugin"] for p in listing["plugins"])
    assert all(set(c) == RECORD_KEYS["component"] for c in listing["components"])
    assert {
        "name": "good",
        "distribution": "good-zoo-plugin",
        "version": "1.2.3",
        "status": "ok",
        "error": "",
    } in listing["plugins"]
    assert {
        "kind": "head",
        "name": "tiny-head",
        "distribution": "good-zoo-plugin",
        "version": "1.2.3",
        "summary": "A head that only remembers its arguments.",
    } in listing["components"]
    core = [p for p in listing["plugins"] if p["distribution"] == "zoo-core"]
    assert [(p["name"], p["status"]) for p in core] == [("builtin", "ok")]


def test_zoo_list_filters_by_wildcard_and_kind(good_site, zoo_list):
    assert [c["name"] for c in zoo_list("--json", "tiny*")["components"]] == ["tiny-head"]
    by_distribution = zoo_list("--json", "good-zoo-plugin:*")
    assert sorted(c["name"] for c in by_distribution["components"]) == ["tiny-head", "vflip"]
    assert [p["name"] for p in zoo_list("--json", "good*")["plugins"]] == ["good"]

    tta = zoo_list("--json", "--kind", "tta")
    assert {c["kind"] for c in tta["components"]} == {"tta"}
    assert "vflip" in {c["name"] for c in tta["components"]}
    assert "good" in {p["name"] for p in tta["plugins"]}
    assert zoo_list("--json", "--kind", "loss", "*flip")["components"] == []

    text = zoo_list("vflip")
    assert "vflip" in text and "Vertical flip test-time augmentation." in text
    assert "tiny-head" not in text


# -- broken plugins -----------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BROKEN_PLUGINS))
def test_broken_plugin_is_isolated(good_site, case):
    body, cause, detail = BROKEN_PLUGINS[case]
    good_site.add("broken-zoo-plugin", "0.4.0", "broken_zoo_plugin", BROKEN_COMMON + body)
    registry = load_registry()

    record = record_of(registry, "broken-zoo-plugin")
    assert (record.name, record.version, record.status) == ("plugin", "0.4.0", "broken")
    assert record.error.startswith(cause) and detail in record.error
    assert [r.distribution for r in registry.broken()] == ["broken-zoo-plugin"]
    assert "broken-zoo-plugin" not in {e.distribution for e in registry.catalog.entries()}
    assert "orphan-loss" not in registry.catalog.names("loss")
    # everything else still works
    assert record_of(registry, "good-zoo-plugin").status == "ok"
    assert record_of(registry, "zoo-core").status == "ok"
    assert registry.catalog.get("head", "tiny-head").distribution == "good-zoo-plugin"
    assert registry.catalog.get("head", "fcn").distribution == "zoo-core"


def test_strict_mode_turns_a_broken_plugin_into_an_error(good_site, monkeypatch):
    good_site.add("broken-zoo-plugin", "0.4.0", "broken_zoo_plugin", BROKEN_PLUGINS["import"][0])
    with pytest.raises(PluginError) as err:
        load_registry(strict=True)
    assert "plugin 'plugin' (distribution broken-zoo-plugin 0.4.0)" in str(err.value)
    assert "zoo_missing_framework" in str(err.value)
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        load_registry()


def test_zoo_list_shows_a_broken_plugin_and_strict_mode_exits_cleanly(good_site, run_zoo):
    good_site.add("broken-zoo-plugin", "0.4.0", "broken_zoo_plugin", BROKEN_PLUGINS["import"][0])
    listing = list_json(run_zoo, env=good_site.env)
    (broken,) = [p for p in listing["plugins"] if p["distribution"] == "broken-zoo-plugin"]
    assert (broken["version"], broken["status"]) == ("0.4.0", "broken")
    assert "zoo_missing_framework" in broken["error"]
    assert "tiny-head" in {c["name"] for c in listing["components"]}

    # `zoo --help` and a bare `zoo` look up plugin commands while click parses, before any command runs.
    for args in (["list"], ["--help"], []):
        strict = run_zoo(*args, env={**good_site.env, "ZOO_STRICT_PLUGINS": "1"})
        assert strict.returncode != 0, args
        assert "Traceback" not in strict.stderr, args
        assert strict.stderr.startswith("error: ZOO_STRICT_PLUGINS is set"), (args, strict.stderr)
        assert "broken-zoo-plugin 0.4.0" in strict.stderr and "zoo_missing_framework" in strict.stderr


# -- autoload switch ----------------------------------------------------------------


def test_disabled_autoload_keeps_only_the_builtins(good_site, monkeypatch, zoo_list):
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_registry()
    assert [(p.name, p.distribution) for p in registry.plugins] == [("builtin", "zoo-core")]
    assert {e.distribution for e in registry.catalog.entries()} == {"zoo-core"}
    assert "tiny-head" not in registry.catalog.names("head")
    assert "tiny-head" in load_registry(autoload=True).catalog.names("head")

    listing = zoo_list("--json")
    assert {p["distribution"] for p in listing["plugins"]} == {"zoo-core"}
    assert {c["distribution"] for c in listing["components"]} == {"zoo-core"}


# -- clashes ------------------------------------------------------------------------

TWIN = '''
from zoo_core.hookspecs import hookimpl


def twin_{tag}(**args):
    """Twin head from {dist}."""
    return "{tag}"


def only_{tag}():
    return "{tag}"


@hookimpl
def zoo_heads():
    return {{"twin": twin_{tag}}}


@hookimpl
def zoo_losses():
    return {{"only-{tag}": only_{tag}}}
'''


@pytest.fixture
def twin_site(site):
    # Same entry-point name in both: a common choice that must not break either plugin.
    site.add("dist-a", "1.0", "dist_a", TWIN.format(tag="a", dist="dist-a"))
    site.add("dist-b", "2.0", "dist_b", TWIN.format(tag="b", dist="dist-b"))
    return site


def test_clash_names_both_distributions(twin_site):
    registry = load_registry()
    for dist in ("dist-a", "dist-b"):
        record = record_of(registry, dist)
        assert record.status == "clash"
        assert "head 'twin' is registered by both" in record.error
        assert "dist-a 1.0" in record.error and "dist-b 2.0" in record.error
    assert registry.broken() == []

    catalog = registry.catalog
    with pytest.raises(PluginError) as err:
        catalog.get("head", "twin")
    assert "dist-a 1.0" in str(err.value) and "dist-b 2.0" in str(err.value)
    assert str(err.value).endswith("write 'dist-a:twin' or 'dist-b:twin' to pick one")
    assert catalog.build("head", "dist-a:twin") == "a"
    assert catalog.build("head", "dist_b:twin", {"anything": 1}) == "b"
    assert catalog.get("head", "dist-b:twin").version == "2.0"
    # the rest of a clashing distribution is unaffected
    assert catalog.build("loss", "only-a") == "a" and catalog.build("loss", "only-b") == "b"


def test_clash_with_a_builtin_name(site):
    site.add(
        "fcn-fork",
        "0.1",
        "fcn_fork",
        "from zoo_core.hookspecs import hookimpl\n\n@hookimpl\ndef zoo_heads():\n    return {'fcn': dict}\n",
    )
    registry = load_registry()
    assert record_of(registry, "fcn-fork").status == "clash"
    assert record_of(registry, "zoo-core").status == "clash"
    with pytest.raises(PluginError) as err:
        registry.catalog.get("head", "fcn")
    assert "zoo-core" in str(err.value) and "fcn-fork 0.1" in str(err.value)
    assert registry.catalog.get("head", "zoo-core:fcn").plugin == "builtin"
    assert registry.catalog.get("head", "fcn-fork:fcn").factory is dict
    # other built-ins are not affected
    assert registry.catalog.get("head", "ocr").distribution == "zoo-core"


def test_zoo_list_shows_clashes(twin_site, zoo_list):
    listing = zoo_list("--json")
    statuses = {
        p["distribution"]: (p["status"], p["error"])
        for p in listing["plugins"]
        if p["distribution"] in ("dist-a", "dist-b")
    }
    assert set(statuses) == {"dist-a", "dist-b"}
    assert all(s == "clash" and "dist-a" in e and "dist-b" in e for s, e in statuses.values())
    assert sorted((c["distribution"], c["summary"]) for c in listing["components"] if c["name"] == "twin") == [
        ("dist-a", "Twin head from dist-a."),
        ("dist-b", "Twin head from dist-b."),
    ]


def test_pipeline_naming_a_clashing_component_fails_and_qualified_name_works(site, tmp_path):
    from zoo_core.pipeline.schema import load_pipeline

    site.add(
        "fcn-fork",
        "0.1",
        "fcn_fork",
        "from zoo_core.hookspecs import hookimpl\n\n@hookimpl\ndef zoo_heads():\n    return {'fcn': dict}\n",
    )
    reset_registry()
    head = {"type": "fcn", "args": {}}
    pipeline = {
        "data": {"root": str(tmp_path)},
        "model": {"backbone": {"type": "timm", "args": {"model_name": "resnet10t"}}, "heads": [head]},
    }
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(pipeline))
    with pytest.raises(PluginError) as err:
        load_pipeline(path)
    message = str(err.value)
    assert "model.heads[0].type" in message and "zoo-core" in message and "fcn-fork 0.1" in message
    head["type"] = "zoo-core:fcn"
    path.write_text(json.dumps(pipeline))
    assert load_pipeline(path).model.heads[0].type == "zoo-core:fcn"


# -- plugin subcommands --------------------------------------------------------------

COMMAND_PLUGIN = '''
import click

from zoo_core.hookspecs import hookimpl


@click.command("greet")
@click.argument("who")
def greet(who):
    """Say hello (a plugin's own subcommand)."""
    click.echo(f"hello {who}")


@click.command("list")
def shadow():
    """Tries to replace a core command."""


@hookimpl
def zoo_commands():
    return [greet]
'''


def test_plugin_subcommand_runs_and_shows_in_help(site, run_zoo):
    site.add("greet-zoo-plugin", "0.1.0", "greet_zoo_plugin", COMMAND_PLUGIN)
    result = run_zoo("greet", "world", env=site.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello world"
    assert "greet" in run_zoo("--help", env=site.env).stdout


def test_plugin_subcommand_cannot_take_a_core_name(site, run_zoo):
    site.add(
        "shadow-zoo-plugin", "0.1.0", "shadow_zoo_plugin", COMMAND_PLUGIN.replace("return [greet]", "return [shadow]")
    )
    result = run_zoo("nosuchcommand", env=site.env)
    assert result.returncode != 0
    assert "shadow-zoo-plugin" in result.stderr and "'list' is already taken" in result.stderr
    assert run_zoo("list", "--json", env=site.env).returncode == 0  # the core's list is untouched
