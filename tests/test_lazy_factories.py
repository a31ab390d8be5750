"""`zoo_core.lazy`: factories imported on first build, summaries read from the source, plain-text summaries."""

from __future__ import annotations

import inspect
import sys
import textwrap

import pytest

from zoo_core import lazy
from zoo_core.catalog import Catalog, Entry, LazyFactory, plain_text
from zoo_core.errors import ConfigError, PluginError
from zoo_core.plugins import load_registry

MODULES = {
    "lazypkg/__init__.py": "",
    "lazypkg/parts.py": '''
        import lazypkg_never_imported_at_listing  # would fail: proves listing does not import this module

        class Head:
            """A head of ``depth`` blocks, see :class:`~lazypkg.parts.Head` and *the paper*.

            More text.
            """

            needs_teacher = True

            def __init__(self, depth: int = 2, *, num_classes: int):
                self.depth, self.num_classes = depth, num_classes

            @classmethod
            def small(cls, num_classes: int):
                """A two-block :func:`Head`."""
                return cls(2, num_classes=num_classes)

        def no_doc():
            return 1

        from .other import Loss as Renamed
        Alias = Head
    ''',
    "lazypkg/other.py": '''
        def Loss(weight: float = 1.0):
            """A **weighted** loss (``weight``)."""
            return ("loss", weight)
    ''',
    "lazypkg/broken.py": """
        raise ImportError("needs detectron2")
    """,
}


@pytest.fixture
def lazypkg(tmp_path, monkeypatch):
    for name, text in MODULES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    # the module the parts import at the top, so that building works once imported
    (tmp_path / "lazypkg_never_imported_at_listing.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [m for m in sys.modules if m.startswith("lazypkg")]:
        del sys.modules[name]


def entry(factory, name="x", kind="head") -> Entry:
    return Entry(kind, name, factory, "lazy-dist", "1.0", "lazy")


def test_summary_is_read_from_the_source_without_importing(lazypkg):
    assert entry(lazy("lazypkg.parts:Head")).summary == "A head of depth blocks, see Head and the paper."
    assert entry(lazy("lazypkg.parts:Head.small")).summary == "A two-block Head."
    assert entry(lazy("lazypkg.parts:Alias")).summary == entry(lazy("lazypkg.parts:Head")).summary
    assert entry(lazy("lazypkg.parts:Renamed")).summary == "A weighted loss (weight)."  # a re-export
    assert entry(lazy("lazypkg.parts:no_doc")).summary == ""
    assert "lazypkg.parts" not in sys.modules and "lazypkg_never_imported_at_listing" not in sys.modules
    assert "lazypkg.other" not in sys.modules and "lazypkg" not in sys.modules  # nor its package


def test_build_checks_the_arguments_of_the_target(lazypkg):
    catalog = Catalog()
    catalog.add(entry(lazy("lazypkg.parts:Head"), "deep"))
    catalog.add(entry(lazy("lazypkg.parts:Head.small"), "small"))
    catalog.add(entry(lazy("lazypkg.parts:Renamed"), "weighted", kind="loss"))
    with pytest.raises(ConfigError) as err:
        catalog.build("head", "deep", {"dept": 3}, num_classes=5)
    assert "no argument(s) dept" in str(err.value) and "it accepts: depth" in str(err.value)
    head = catalog.build("head", "deep", {"depth": 3}, num_classes=5, in_channels=[8])  # in_channels not accepted
    assert type(head).__name__ == "Head" and (head.depth, head.num_classes) == (3, 5)
    assert catalog.build("head", "small", num_classes=4).depth == 2
    assert catalog.build("loss", "weighted", {"weight": 0.5}) == ("loss", 0.5)
    with pytest.raises(ConfigError, match="rejected its arguments"):  # num_classes is required
        catalog.build("head", "deep", {})


def test_a_lazy_factory_behaves_as_its_target(lazypkg):
    factory = lazy("lazypkg.parts:Head")
    assert callable(factory) and isinstance(factory, LazyFactory) and repr(factory) == "lazy('lazypkg.parts:Head')"
    assert (factory.__module__, factory.__qualname__, factory.__name__) == ("lazypkg.parts", "Head", "Head")
    assert lazy("lazypkg.parts:Head.small").__name__ == "small"
    assert "lazypkg.parts" not in sys.modules  # creating and inspecting the reference imports nothing
    assert list(inspect.signature(factory).parameters) == ["depth", "num_classes"]
    assert factory.needs_teacher is True  # class attributes are the target's
    assert factory.resolve() is sys.modules["lazypkg.parts"].Head
    assert entry(factory).summary.startswith("A head of depth blocks")  # from the docstring once imported


def test_a_target_that_does_not_import_is_a_plugin_error(lazypkg):
    catalog = Catalog()
    catalog.add(entry(lazy("lazypkg.broken:Head"), "broken"))
    catalog.add(entry(lazy("lazypkg.parts:Missing"), "missing"))
    with pytest.raises(PluginError, match=r"cannot load component lazypkg.broken:Head: ImportError: needs detectron2"):
        catalog.build("head", "broken")
    with pytest.raises(PluginError, match=r"lazypkg.parts:Missing: AttributeError"):
        catalog.build("head", "missing")
    # listing still works: no summary rather than a crash
    assert entry(lazy("lazypkg.broken:Head")).summary == "" and entry(lazy("nosuchpkg.mod:X")).summary == ""


@pytest.mark.parametrize("target", ["lazypkg.parts", "lazypkg.parts:", ":Head", "lazypkg parts:Head", "a.b:1x"])
def test_a_malformed_target_is_refused_at_once(target):
    with pytest.raises(ValueError, match="expected 'package.module:attr'"):
        lazy(target)


def test_plain_factories_still_work():
    def factory(size: int = 1):
        """A *plain* factory, no ``lazy``."""
        return size

    catalog = Catalog()
    catalog.add(entry(factory, "plain"))
    assert catalog.get("head", "plain").summary == "A plain factory, no lazy."
    assert catalog.build("head", "plain", {"size": 3}) == 3
    with pytest.raises(ConfigError, match="no argument"):
        catalog.build("head", "plain", {"depth": 3})


@pytest.mark.parametrize(
    "text, plain",
    [
        ("Uses ``num_convs`` blocks", "Uses num_convs blocks"),
        ("See :class:`~zoo_core.interfaces.LossContext`.", "See LossContext."),
        ("See :class:`zoo_core.interfaces.LossContext`.", "See zoo_core.interfaces.LossContext."),
        (":py:func:`f` and :ref:`the guide <guide-label>`", "f and the guide"),
        ("*emphasis*, **strong** and 2*3*4 stay", "emphasis, strong and 2*3*4 stay"),
        ("`default role` and `a link <https://example.org>`_", "default role and a link"),
        ("Example::", "Example:"),
        ("Plain text: nothing to do (a * b).", "Plain text: nothing to do (a * b)."),
    ],
)
def test_plain_text(text, plain):
    assert plain_text(text) == plain


def test_every_installed_summary_read_from_source_equals_the_imported_docstring():
    """The source reading and the import agree for the built-ins and the repository's plugins."""
    registry = load_registry(autoload=True)
    lazies = [e for e in registry.catalog.entries() if isinstance(e.factory, LazyFactory)]
    assert {e.distribution for e in lazies} >= {"zoo-core"} and len(lazies) >= 17
    for e in lazies:
        from_source = e.summary
        imported = inspect.getdoc(e.factory.resolve()).strip().splitlines()[0]
        assert from_source == plain_text(imported) and from_source, e.qualified_name
        assert not any(mark in from_source for mark in ("``", ":class:", ":func:")), from_source


def test_a_strict_registry_imports_lazy_components(tmp_path, monkeypatch):
    """Discovery imports no lazy component, so strict mode (plugin tests) imports them to find a broken one."""
    for name in ("ZOO_STRICT_PLUGINS", "ZOO_DISABLE_PLUGIN_AUTOLOAD", "ZOO_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "halfbroken").mkdir()
    (tmp_path / "halfbroken" / "__init__.py").write_text("")
    (tmp_path / "halfbroken" / "parts.py").write_text('import no_such_dependency\n\nclass Head:\n    """A head."""\n')
    (tmp_path / "halfbroken" / "plugin.py").write_text(
        "from zoo_core import hookimpl, lazy\n\n@hookimpl\ndef zoo_heads():\n"
        "    return {'half': lazy('halfbroken.parts:Head')}\n"
    )
    info = tmp_path / "halfbroken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halfbroken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo.plugins]\nhalf = halfbroken.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = load_registry(distributions=["halfbroken"], strict=False)
        record = next(p for p in registry.plugins if p.distribution == "halfbroken")
        assert record.status == "ok" and registry.catalog.get("head", "half").summary == "A head."
        with pytest.raises(PluginError) as err:
            load_registry(distributions=["halfbroken"], strict=True)
        assert "halfbroken" in str(err.value)
        assert "cannot load component halfbroken.parts:Head: ModuleNotFoundError" in str(err.value)
    finally:
        for name in [m for m in sys.modules if m.startswith("halfbroken")]:
            del sys.modules[name]
