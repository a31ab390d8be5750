"""The zoo's pytest plugin: fixtures for the tests of the core and of every plugin.

zoo-core registers this module under the ``pytest11`` entry point, so every pytest run in an
environment where zoo-core is installed has these fixtures, with no ``conftest.py``:

``zoo_cli``
    ``zoo_cli(*args, env=None, input=None)`` runs the ``zoo`` command line in this process
    and returns click's ``Result`` (``exit_code``, ``output``, ``stdout``, ``stderr``).
``synthetic_vspw``
    a small synthetic VSPW dataset (:class:`SyntheticVSPW`), made once per session; read only.
``tiny_model_dir``
    the directory of a tiny model (:data:`TINY_MODEL`) trained for a few steps on
    ``synthetic_vspw`` by ``zoo train``; made once per session; read only.
``zoo_distribution``
    the distribution under test: the ``[project] name`` of the nearest ``pyproject.toml``
    above the test file. Override it in ``conftest.py`` if your tests live elsewhere.
``zoo_registry``
    a strict registry of the core's built-ins and the distribution under test only: a broken
    plugin of that distribution fails the test, an unrelated one installed beside it does not.

It also registers the ``slow`` marker. Importing this module imports neither torch nor the
rest of the zoo: pytest loads it in every session of the environment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .support import TINY_MODEL, SyntheticVSPW, run_cli

if TYPE_CHECKING:
    from click.testing import Result

    from zoo_core.plugins import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before Python 3.11
    import tomli as tomllib

TINY_MODEL_STEPS = 4


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs of several seconds")


# -- the command line, in this process (run_cli, in .support) ------------------------------------


@pytest.fixture
def zoo_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``zoo_cli(*args, env=None, input=None)``: run ``zoo ARGS`` in this process, from ``tmp_path``.

    Returns click's ``Result``: ``exit_code``, ``output`` (what the user sees), ``stdout`` and
    ``stderr``. Each call starts with no ``ZOO_*`` variables (``env`` adds some) and a freshly
    loaded plugin registry, and leaves none of its settings behind.
    """
    monkeypatch.chdir(tmp_path)
    return run_cli


# -- data and a trained model ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_vspw(tmp_path_factory: pytest.TempPathFactory) -> SyntheticVSPW:
    """Six annotated videos of eight 64x96 frames (train 4, val 2) and one unannotated test video; read only."""
    from zoo_core.data.synth import synthesize

    summary = synthesize(tmp_path_factory.mktemp("synthetic-vspw"), videos=6, frames=8, size=(64, 96), seed=0)
    return SyntheticVSPW(
        summary.root, {k: list(v) for k, v in summary.splits.items()}, summary.frames, tuple(summary.size)
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_vspw: SyntheticVSPW) -> Path:
    """A model directory (``config.json`` + ``model.safetensors``) of :data:`TINY_MODEL`, trained by ``zoo train``.

    A few real optimisation steps on the train split of ``synthetic_vspw``; read only.
    """
    import yaml

    folder = tmp_path_factory.mktemp("tiny-model")
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val"},
        "model": TINY_MODEL,
        "train": {
            "split": "train",
            "max_iters": TINY_MODEL_STEPS,
            "batch_size": 2,
            "lr": 1e-3,
            "log_every": 1,
            "checkpoint_every": 0,
            "transforms": [{"type": "flip"}],
        },
        "runtime": {"device": "cpu", "amp": "none", "progress": False},
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    out = folder / "model"
    result = run_cli("train", folder / "pipeline.yaml", "--out", out)
    if result.exit_code != 0:
        pytest.fail(f"zoo train of the tiny model failed (exit {result.exit_code}):\n{result.output}", pytrace=False)
    return out


# -- the distribution under test and its registry ---------------------------------------------


def project_name(start: Path) -> str | None:
    """``[project] name`` of the nearest ``pyproject.toml`` in ``start`` or above it that has one."""
    for folder in [start, *start.parents]:
        path = folder / "pyproject.toml"
        if path.is_file():
            name = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {}).get("name")
            if name:
                return name
    return None


@pytest.fixture(scope="module")
def zoo_distribution(request: pytest.FixtureRequest) -> str:
    """The distribution under test: the ``[project] name`` of the nearest ``pyproject.toml`` above the test module.

    Override it with a module- or session-scoped fixture of the same name in ``conftest.py``
    when the tests are not inside the distribution's source tree.
    """
    name = project_name(Path(request.path).parent)
    if name is None:
        pytest.fail(
            f"no pyproject.toml with a [project] name above {request.path}, so the distribution under test "
            "is unknown; define a fixture `zoo_distribution` returning its name in conftest.py",
            pytrace=False,
        )
    return name


@pytest.fixture(scope="module")
def zoo_registry(zoo_distribution: str) -> Registry:
    """A strict registry of the core's built-ins and ``zoo_distribution``'s plugins, loaded for this module.

    ``zoo_registry.catalog.get(kind, name)`` is the entry (``distribution``, ``version``,
    ``summary``, ``factory``); ``zoo_registry.catalog.build(kind, name, args)`` builds the
    component as a pipeline does; ``zoo_registry.plugins`` lists the loaded plugins.
    """
    from zoo_core.errors import PluginError
    from zoo_core.plugins import load_registry

    try:
        return load_registry(strict=True, distributions=[zoo_distribution])
    except PluginError as exc:
        error = str(exc)
    pytest.fail(f"the plugins of {zoo_distribution} do not load: {error}", pytrace=False)
