"""Registry cards: the schema and its errors, discovery from the three sources, plugin requirements."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

from zoo_core.errors import ConfigError
from zoo_core.hub import cards
from zoo_core.hub.cards import Card, check_plugin, discover_cards, find_card, load_card_file, parse_card
from zoo_core.plugins import reset_registry

REGISTRY = Path(__file__).resolve().parents[1] / "registry"
COMMIT = "a" * 40
SHA256 = "b" * 64


def card_data(name: str = "tiny.vspw", **changes) -> dict:
    card = {
        "name": name,
        "plugin": {"distribution": "zoo-core", "min_version": "0.1"},
        "model": {"config": {"num_classes": 2, "backbone": {"type": "timm"}, "heads": [{"type": "fcn"}]}},
        "num_classes": 2,
        "class_names": ["sky", "road"],
        "hub": {"repo_id": "org/tiny", "revision": COMMIT, "sha256": SHA256},
        "license": "mit",
    }
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = card
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[key]
        else:
            target[key] = value
    return card


def write_card(folder: Path, data: dict, filename: str | None = None) -> Path:
    path = folder / (filename or f"{data['name']}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- the schema ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field, problem",
    [
        ({"hub.revision": "main"}, "hub.revision", "must be a full 40-hex commit id"),
        ({"hub.revision": "a1b2c3d"}, "hub.revision", "must be a full 40-hex commit id"),
        (
            {"hub.sha256": ""},
            "(top level)",
            "hub.files is empty: set it (zoo push prints it), or mark the card `verified: false`",
        ),
        ({"hub.sha256": "B" * 64}, "hub.sha256", "must be 64 lower-case hex digits"),
        ({"class_names": ["sky"]}, "(top level)", "class_names has 1 names but num_classes is 2"),
        ({"model.config.num_classes": 3}, "(top level)", "model.config.num_classes is 3 but num_classes is 2"),
        ({"model.config.heads": []}, "model.config.heads", "List should have at least 1 item"),
        ({"licence": "mit"}, "licence", "unknown key; allowed keys: name, summary,"),
        ({"license": None}, "license", "required but missing"),
        (
            {"hub.files": {"model.safetensors": SHA256}, "hub.sha256": None},
            "hub",
            "hub.files must give the sha256 of both config.json and model.safetensors",
        ),
        (
            {"hub.files": {"model.safetensors": SHA256, "config.json": SHA256}},
            "hub",
            "give hub.files (the sha256 of every file) or the older hub.sha256",
        ),
        ({"hub.filename": "../model.safetensors"}, "hub.filename", "must be model.safetensors, or a folder path"),
        ({"hub.filename": "a/./model.safetensors"}, "hub.filename", "must be model.safetensors, or a folder path"),
        ({"hub.filename": "pytorch_model.bin"}, "hub.filename", "must be model.safetensors, or a folder path"),
        ({"hub.repo_id": "tiny"}, "hub.repo_id", "must be ORG/NAME"),
        ({"name": "Tiny VSPW"}, "name", "lower-case letters, digits"),
    ],
)
def test_schema_errors_name_the_file_and_the_field(tmp_path, changes, field, problem):
    path = write_card(tmp_path, card_data(**changes), "card.yaml")
    with pytest.raises(ConfigError) as err:
        load_card_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid registry card\n")
    assert re.search(rf"^  {re.escape(field)}: .*{re.escape(problem)}", message, re.M), message


def test_a_card_pins_every_file_or_the_weights_only(tmp_path):
    files = {"config.json": "c" * 64, "model.safetensors": SHA256}
    card = load_card_file(write_card(tmp_path, card_data(**{"hub.sha256": None, "hub.files": files})))
    assert card.hub.hashes() == files and card.hub.weights_sha256 == SHA256
    assert card.model.config.heads[0].type == "fcn" and card.model.config.backbone.args == {}
    older = load_card_file(write_card(tmp_path, card_data("older")))  # hub.sha256: the weights only
    assert older.hub.hashes() == {"model.safetensors": SHA256} and older.hub.files is None
    assert parse_card(yaml.safe_load(card.to_yaml()), "again") == card


def test_unverified_card_may_leave_sha256_empty(tmp_path):
    card = load_card_file(write_card(tmp_path, card_data(**{"hub.sha256": "", "verified": False})))
    assert (card.verified, card.hub.sha256, card.hub.filename) == (False, "", "model.safetensors")
    nested = card_data(**{"hub.filename": "swin-l/model.safetensors"})
    assert load_card_file(write_card(tmp_path, nested)).hub.filename == "swin-l/model.safetensors"


def test_yaml_typo_and_non_mapping_are_named(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: tiny\nhub:\n  repo_id: org/tiny\n   revision: x\n")
    with pytest.raises(ConfigError, match=f"(?s)^{re.escape(str(typo))}: not valid YAML: .*line 4"):
        load_card_file(typo)
    listing = tmp_path / "list.yaml"
    listing.write_text("- name: tiny\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(str(listing))}: a card must be a mapping"):
        load_card_file(listing)


def test_card_schema_json_is_up_to_date():
    shipped = json.loads((REGISTRY / "card.schema.json").read_text())
    assert shipped == Card.model_json_schema(), (
        "registry/card.schema.json is stale: regenerate it with the command in registry/README.md"
    )


def test_readme_example_card_is_valid():
    block = re.search(r"```yaml\n(.*?)```", (REGISTRY / "README.md").read_text(), re.S).group(1)
    card = cards.parse_card(yaml.safe_load(block), "registry/README.md")
    assert card.num_classes == len(card.class_names) == 124
    assert card.hub.revision and card.hub.files and card.metrics.split == "val"


def test_the_registry_cards_hook_points_plugins_to_the_card_format():
    import inspect

    from zoo_core import hookspecs
    from zoo_core.hub.cards import HubFile

    doc = inspect.getdoc(hookspecs.zoo_registry_cards)
    assert "registry/README.md" in doc and (REGISTRY / "README.md").is_file()
    assert "zoo_core.hub" not in doc  # an internal module is not the plugin API
    named = set(re.findall(r"``hub\.(\w+)``", doc))
    assert "files" in named and named <= set(HubFile.model_fields)


# --- discovery -------------------------------------------------------------------------------

PLUGIN = """
from pathlib import Path

from zoo_core.hookspecs import hookimpl


@hookimpl
def zoo_registry_cards():
    return [Path(__file__).parent / "from-file.yaml", {CARD}]
"""


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """An installed distribution ``zoo-cards-plugin`` 1.0 whose plugin gives a card file and a card mapping."""
    site = tmp_path / "site"
    package = site / "zoo_cards_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(textwrap.dedent(PLUGIN).replace("{CARD}", repr(card_data("from-mapping"))))
    write_card(package, card_data("from-file"), "from-file.yaml")
    info = site / "zoo_cards_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-cards-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo.plugins]\ncards = zoo_cards_plugin.plugin\n")
    monkeypatch.syspath_prepend(str(site))
    for name in ("ZOO_REGISTRY_PATH", "ZOO_DISABLE_PLUGIN_AUTOLOAD", "ZOO_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    yield package
    for module in [m for m in sys.modules if m.startswith("zoo_cards_plugin")]:
        del sys.modules[module]
    reset_registry()


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Stand-in for the shipped ``registry/`` folder, so the test can put cards in it."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "README.md").write_text("not a card")
    monkeypatch.setattr(cards, "resources", types.SimpleNamespace(files=lambda package: folder))
    return folder


def test_cards_come_from_registry_plugins_and_registry_path(plugin_site, shipped, tmp_path, monkeypatch):
    write_card(shipped, card_data("from-registry"))
    team, mine = tmp_path / "team", tmp_path / "mine"
    team.mkdir(), mine.mkdir()
    write_card(team, card_data("from-team"))
    (team / ".hidden.yaml").write_text("not: a card")
    write_card(mine, card_data("from-mine"), "from-mine.yml")
    monkeypatch.setenv("ZOO_REGISTRY_PATH", f"{team}:{mine}")

    origins = {s.card.name: s.origin for s in discover_cards()}
    assert origins == {
        "from-registry": "registry/from-registry.yaml (zoo-core)",
        "from-file": f"{plugin_site / 'from-file.yaml'} (zoo-cards-plugin)",
        "from-mapping": "a card of plugin zoo-cards-plugin",
        "from-team": str(team / "from-team.yaml"),
        "from-mine": str(mine / "from-mine.yml"),
    }
    assert list(origins) == ["from-registry", "from-file", "from-mapping", "from-team", "from-mine"]
    assert find_card("from-mapping").hub.repo_id == "org/tiny"
    with pytest.raises(ConfigError, match=r"no registry card named 'from'; did you mean from-registry, from-file"):
        find_card("from")


def test_the_same_name_from_two_sources_names_both(plugin_site, shipped, tmp_path, monkeypatch):
    write_card(tmp_path, card_data("from-file"), "copy.yaml")
    monkeypatch.setenv("ZOO_REGISTRY_PATH", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        discover_cards()
    assert str(err.value) == (
        f"registry card 'from-file' is defined twice: in {plugin_site / 'from-file.yaml'} "
        f"(zoo-cards-plugin) and in {tmp_path / 'copy.yaml'}; rename or remove one"
    )


def test_a_bad_card_in_registry_path_or_a_missing_folder_is_named(shipped, tmp_path, monkeypatch):
    reset_registry()
    write_card(tmp_path, card_data(**{"hub.revision": "main"}), "bad.yaml")
    monkeypatch.setenv("ZOO_REGISTRY_PATH", str(tmp_path))
    with pytest.raises(
        ConfigError, match=f"{re.escape(str(tmp_path / 'bad.yaml'))}: invalid registry card\n  hub.revision: "
    ):
        discover_cards()
    monkeypatch.setenv("ZOO_REGISTRY_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(
        ConfigError, match=f"ZOO_REGISTRY_PATH names {re.escape(str(tmp_path / 'nowhere'))}, which is not a directory"
    ):
        discover_cards()


# --- plugin requirements ---------------------------------------------------------------------


def test_plugin_requirements_are_checked_before_any_download(plugin_site, tmp_path, monkeypatch):
    from zoo_core.hub.client import pull

    assert (
        check_plugin(
            Card.model_validate(card_data(**{"plugin.distribution": "zoo-cards-plugin", "plugin.min_version": "1.0"}))
        )
        is None
    )
    too_old = Card.model_validate(
        card_data(**{"plugin.distribution": "zoo-cards-plugin", "plugin.min_version": "1.10"})
    )
    with pytest.raises(
        ConfigError,
        match=r"card 'tiny.vspw' needs zoo-cards-plugin>=1.10, 1.0 is installed; "
        r"upgrade it: pip install -U 'zoo-cards-plugin>=1.10'",
    ):
        check_plugin(too_old)

    write_card(
        tmp_path, card_data("needs-plugin", **{"plugin.distribution": "zoo-absent-plugin", "plugin.min_version": "0.2"})
    )
    monkeypatch.setenv("ZOO_REGISTRY_PATH", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a download would fail differently
    with pytest.raises(
        ConfigError,
        match=r"card 'needs-plugin' needs the plugin zoo-absent-plugin>=0.2; "
        r"install it: pip install 'zoo-absent-plugin>=0.2'",
    ):
        pull("needs-plugin")


def test_zoo_list_weights_shows_cards_with_wildcards_and_json(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from zoo_core.cli import main

    folder = tmp_path / "cards"
    folder.mkdir()
    data = card_data("swin-tiny.vspw")
    data["metrics"] = {"split": "val", "miou": 0.4321}
    write_card(folder, data)
    write_card(folder, dict(card_data("volo-tiny.vspw"), verified=False, hub=dict(data["hub"], sha256="")))
    monkeypatch.setenv("ZOO_REGISTRY_PATH", str(folder))

    text = CliRunner().invoke(main, ["list", "--weights"])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert any(line.startswith("swin-tiny.vspw") and "mIoU 43.21 (val)" in line for line in lines)
    assert any(line.startswith("volo-tiny.vspw") and "[unverified]" in line for line in lines)

    listing = CliRunner().invoke(main, ["list", "--weights", "swin*", "--json"])
    records = json.loads(listing.output)["weights"]
    assert [r["name"] for r in records] == ["swin-tiny.vspw"]
    assert records[0]["hub"]["revision"] == data["hub"]["revision"] and records[0]["origin"].endswith(".yaml")


@pytest.mark.parametrize(
    "min_version, ok",
    [("1.0rc1", True), ("1.0.0", True), ("0.9.post3", True), ("1.0.post1", False), ("1.1.dev0", False)],
)
def test_plugin_versions_compare_as_pip_does(plugin_site, min_version, ok):
    card = Card.model_validate(
        card_data(**{"plugin.distribution": "zoo-cards-plugin", "plugin.min_version": min_version})
    )
    if ok:
        check_plugin(card)  # zoo-cards-plugin 1.0 is installed
    else:
        with pytest.raises(ConfigError, match=rf"needs zoo-cards-plugin>={re.escape(min_version)}, 1.0 is installed"):
            check_plugin(card)


def test_a_card_version_that_is_not_pep_440_is_named(plugin_site):
    card = Card.model_validate(card_data(**{"plugin.distribution": "zoo-cards-plugin", "plugin.min_version": "one"}))
    with pytest.raises(ConfigError, match=r"card 'tiny.vspw': plugin.min_version: 'one' is not a version \(PEP 440"):
        check_plugin(card)
