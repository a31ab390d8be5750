"""The public API: the only zoo_core modules a plugin imports, each importable on its own and with ``__all__``."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# docs/api.md describes these; everything else in zoo_core is internal and may change.
PUBLIC_MODULES = (
    "zoo_core",
    "zoo_core.errors",
    "zoo_core.interfaces",
    "zoo_core.nn",
    "zoo_core.model_dir",
    "zoo_core.testing",
    "zoo_core.ensemble",
)


def private_imports(source: str, filename: str) -> list[str]:
    """``file:line: what`` for each import of a non-public zoo_core module, at any depth (functions included)."""
    found = []
    public_names = set(importlib.import_module("zoo_core").__all__)
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            if node.module == "zoo_core":  # `from zoo_core import x`: x is a public name or a public module
                modules = [f"zoo_core.{a.name}" for a in node.names if a.name not in public_names]
        else:
            continue
        for module in modules:
            if (module == "zoo_core" or module.startswith("zoo_core.")) and module not in PUBLIC_MODULES:
                found.append(f"{filename}:{node.lineno}: {module}")
    return found


def test_the_checker_finds_private_imports_anywhere():
    source = (
        "import zoo_core\nfrom zoo_core import hookimpl, nn\nfrom zoo_core.errors import ConfigError\n"
        "import zoo_core.plugins\n"
        "def build():\n    from zoo_core.components.heads import ConvBNReLU\n"
        "    from zoo_core import cli\n"
        "class Model:\n    def load(self):\n        import zoo_core.model_dir, zoo_core.hub.client as client\n"
        "from . import backbone\nfrom zoo_core_extras import thing\n"
    )
    assert private_imports(source, "x.py") == [
        "x.py:4: zoo_core.plugins",
        "x.py:6: zoo_core.components.heads",
        "x.py:7: zoo_core.cli",
        "x.py:10: zoo_core.hub.client",
    ]


def plugin_sources() -> list[Path]:
    return sorted(p for folder in ("src", "tests") for p in ROOT.glob(f"plugins/*/{folder}/**/*.py"))


def test_plugins_import_only_the_public_api():
    files = plugin_sources()
    assert {p.relative_to(ROOT).parts[1] for p in files} >= {"zoo-swin-ocr", "zoo-volo-unet-ocr"}
    found = [line for path in files for line in private_imports(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "plugins import internal modules (add what they need to a public module):\n" + "\n".join(found)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_module_imports_on_its_own_and_declares_all(module):
    # A fresh interpreter: the module must not rely on another having been imported first.
    code = (
        f"import {module} as m\nnames = m.__all__\nmissing = [n for n in names if not hasattr(m, n)]\n"
        "assert names and not missing, missing\nprint(len(names))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert int(result.stdout) >= 1


def test_docs_describe_every_public_module():
    api = (ROOT / "docs" / "api.md").read_text()
    for module in PUBLIC_MODULES:
        assert f"`{module}`" in api, module
