"""The pytest plugin of zoo_core.testing: the fixtures a plugin's tests get from a plain ``pip install``."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from test_plugins import BROKEN_COMMON, BROKEN_PLUGINS, GOOD_PLUGIN, Site

from zoo_core.data.synth import synthesize
from zoo_core.errors import PluginError
from zoo_core.model_dir import load_model_dir
from zoo_core.plugins import get_registry, load_registry, reset_registry
from zoo_core.testing import TINY_MODEL, SyntheticVSPW
from zoo_core.testing.pytest_plugin import TINY_MODEL_STEPS
from zoo_core.testing.support import isolated_zoo

pytest_plugins = ["pytester"]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A good plugin and a broken one (it fails to import), installed on ``sys.path``."""
    for name in [name for name in os.environ if name.startswith("ZOO_")]:
        monkeypatch.delenv(name)
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    site = Site(root)
    site.add("good-zoo-plugin", "1.2.3", "good_zoo_plugin", GOOD_PLUGIN, entry_point="good")
    site.add(
        "broken-zoo-plugin",
        "0.1.0",
        "broken_zoo_plugin",
        BROKEN_PLUGINS["import"][0] + BROKEN_COMMON,
        entry_point="broken",
    )
    yield site
    for module in [m for m in sys.modules if m.split(".")[0] in site.packages]:
        del sys.modules[module]
    reset_registry()


# -- load_registry(distributions=...) -------------------------------------------------------


def test_strict_registry_of_some_distributions_ignores_a_broken_one_beside_them(site):
    with pytest.raises(PluginError, match="broken-zoo-plugin"):
        load_registry(strict=True)
    registry = load_registry(strict=True, distributions=["good_zoo_plugin"])  # any spelling of the name
    assert [(p.name, p.distribution, p.status) for p in registry.plugins] == [
        ("builtin", "zoo-core", "ok"),
        ("good", "good-zoo-plugin", "ok"),
    ]
    assert registry.catalog.get("head", "tiny-head").distribution == "good-zoo-plugin"
    assert registry.catalog.get("head", "fcn").distribution == "zoo-core"
    # The built-ins alone, whatever is installed.
    assert [p.distribution for p in load_registry(strict=True, distributions=["zoo-core"]).plugins] == ["zoo-core"]


def test_strict_registry_of_a_broken_or_absent_distribution_says_why(site, monkeypatch):
    with pytest.raises(PluginError, match=r"broken-zoo-plugin 0.1.0\): import failed: ModuleNotFoundError"):
        load_registry(strict=True, distributions=["broken-zoo-plugin"])
    with pytest.raises(PluginError, match="no zoo.plugins entry point of distribution.s. zoo-absent is installed"):
        load_registry(distributions=["good-zoo-plugin", "zoo-absent"])
    # Naming the distributions loads them even where autoload is switched off.
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "good-zoo-plugin" in {p.distribution for p in load_registry(distributions=["good-zoo-plugin"]).plugins}
    assert {p.distribution for p in load_registry().plugins} == {"zoo-core"}


# -- zoo_distribution and zoo_registry, as a plugin's test session sees them ----------------


def test_a_plugin_test_session_gets_its_own_strict_registry(site, pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site.root), os.environ.get("PYTHONPATH", "")]))
    pytester.makefile(".toml", pyproject='[project]\nname = "good-zoo-plugin"\nversion = "1.2.3"\n')
    pytester.makepyfile(
        test_good=textwrap.dedent("""
        def test_distribution_is_read_from_pyproject(zoo_distribution):
            assert zoo_distribution == "good-zoo-plugin"

        def test_registry_holds_the_builtins_and_this_distribution(zoo_registry):
            assert [p.distribution for p in zoo_registry.plugins] == ["zoo-core", "good-zoo-plugin"]
            assert zoo_registry.catalog.get("tta", "vflip").distribution == "good-zoo-plugin"

        def test_zoo_cli_runs_in_this_process(zoo_cli):
            result = zoo_cli("list", "--json")
            assert result.exit_code == 0
            assert "good-zoo-plugin" in {p["distribution"] for p in __import__("json").loads(result.stdout)["plugins"]}
        """)
    )
    broken = pytester.mkpydir("broken")
    (broken / "conftest.py").write_text(
        textwrap.dedent("""
        import pytest

        @pytest.fixture(scope="module")
        def zoo_distribution():
            return "broken-zoo-plugin"
        """)
    )
    (broken / "test_broken.py").write_text("def test_registry(zoo_registry):\n    pass\n")

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*the plugins of broken-zoo-plugin do not load: these plugins are broken:",
            "*plugin 'broken' (distribution broken-zoo-plugin 0.1.0): import failed: ModuleNotFoundError*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_without_a_pyproject_the_distribution_is_asked_for(pytester):
    pytester.makepyfile(test_lost="def test_registry(zoo_registry):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--rootdir", str(pytester.path))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*no pyproject.toml with a [[]project[]] name above*define a fixture `zoo_distribution` returning its name*"]
    )


# -- zoo_cli -----------------------------------------------------------------------------------


def test_zoo_cli_clears_zoo_settings_and_reloads_the_registry(site, zoo_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    get_registry()  # a registry cached before the call must not leak into it
    result = zoo_cli("list", "--json")
    assert result.exit_code == 0, result.output
    assert {"zoo-core", "good-zoo-plugin", "broken-zoo-plugin"} <= {
        p["distribution"] for p in json.loads(result.stdout)["plugins"]
    }

    result = zoo_cli("list", "--json", env={"ZOO_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert [p["distribution"] for p in json.loads(result.stdout)["plugins"]] == ["zoo-core"]
    assert os.environ["ZOO_DISABLE_PLUGIN_AUTOLOAD"] == "1" and os.getcwd() == str(tmp_path)

    result = zoo_cli("list", "--kind", "nothing")
    assert result.exit_code == 2 and "Invalid value for '--kind'" in result.stderr and result.stdout == ""


def test_isolated_zoo_restores_threads_random_state_and_environment(monkeypatch):
    monkeypatch.setenv("ZOO_DEBUG", "1")
    threads, expected = torch.get_num_threads(), torch.rand(3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    with isolated_zoo({"ZOO_STRICT_PLUGINS": "1"}):
        assert "ZOO_DEBUG" not in os.environ and os.environ["ZOO_STRICT_PLUGINS"] == "1"
        torch.set_num_threads(1 if threads > 1 else 2)
        torch.manual_seed(123)
        os.environ["ZOO_CACHE_DIR"] = "elsewhere"
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(torch.rand(3), expected)
    assert os.environ["ZOO_DEBUG"] == "1"
    assert "ZOO_STRICT_PLUGINS" not in os.environ and "ZOO_CACHE_DIR" not in os.environ


# -- synthetic_vspw and tiny_model_dir -----------------------------------------------------------


def test_synthetic_vspw_is_a_small_vspw_dataset(synthetic_vspw):
    assert synthetic_vspw.size == (64, 96) and synthetic_vspw.frames == 8
    assert [len(synthetic_vspw.splits[s]) for s in ("train", "val", "test")] == [4, 2, 1]
    for video in synthetic_vspw.splits["val"]:
        masks = sorted((synthetic_vspw.root / "data" / video / "mask").glob("*.png"))
        assert len(masks) == 8 and Image.open(masks[0]).size == (96, 64)


def test_chance_miou_by_hand(tmp_path):
    summary = synthesize(tmp_path / "data", videos=2, frames=1, size=(16, 16))
    (video,) = summary.splits["val"]
    # 150 pixels of raw id 1 (train id 0), 50 of raw id 2 (train id 1), 56 of "others" (raw 0: ignored).
    raw = np.array([1] * 150 + [2] * 50 + [0] * 56, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(raw).save(tmp_path / "data" / "data" / video / "mask" / "00000001.png")
    data = SyntheticVSPW(tmp_path / "data", summary.splits, 1, (16, 16))
    uniform, majority = data.chance_miou("val")
    # C = 124, N = 200: IoU_0 = (150/C) / (150 + 200/C - 150/C) = 3/373, IoU_1 = (50/C) / (50 + 150/C) = 1/127.
    assert uniform == pytest.approx((3 / 373 + 1 / 127) / 2, rel=1e-12)
    assert majority == pytest.approx(150 / 200 / 2, rel=1e-12)  # class 0 everywhere: IoU 0.75, class 1: 0


def test_tiny_model_dir_holds_a_trained_tiny_model(tiny_model_dir, synthetic_vspw):
    model, config = load_model_dir(tiny_model_dir)
    assert config["model"] == TINY_MODEL and config["iteration"] == TINY_MODEL_STEPS
    log = [json.loads(line) for line in (tiny_model_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == list(range(1, TINY_MODEL_STEPS + 1))
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    with torch.no_grad():
        probs = model.predict(torch.randn(1, 3, *synthetic_vspw.size))
    assert probs.shape == (1, 124, 64, 96)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 64, 96))
