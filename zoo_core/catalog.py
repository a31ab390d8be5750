"""The catalog: (kind, name) -> factory, with the distribution that provided it."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import importlib.machinery
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ComponentError, ConfigError, PluginError, ZooError, component_errors
from .hookspecs import KIND_HOOKS

KINDS = tuple(KIND_HOOKS)


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Callable[..., Any]
    distribution: str
    version: str
    plugin: str

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    @property
    def summary(self) -> str:
        """The first line of the factory's docstring as plain text (read from the source for a lazy factory)."""
        doc = self.factory.doc() if isinstance(self.factory, LazyFactory) else inspect.getdoc(self.factory)
        return plain_text(doc.strip().splitlines()[0]) if doc and doc.strip() else ""

    def record(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "summary": self.summary,
        }

    def describe(self) -> str:
        """How messages name the component: ``ensembler 'my-ens' (zoo-my-ens 0.1.0)``."""
        return f"{self.kind} {self.name!r} ({self.distribution} {self.version})"

    def provenance(self, where: str) -> dict[str, str]:
        """Which distribution and version provided the component named at ``where`` (a YAML path)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "where": where,
        }


class LazyFactory:
    """A factory named ``"package.module:attr"``, imported when first called.

    Hooks return it instead of the class so that discovering plugins (``zoo list``, ``zoo
    --help``) imports no component module, nor torch. Its summary is read from the module's
    source without importing it; ``inspect.signature`` and other attributes (``needs_teacher``)
    are the target's, so the catalog checks arguments as for a plain factory.
    """

    def __init__(self, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not sep or not _DOTTED.match(module) or not _DOTTED.match(attr):
            raise ValueError(f"lazy({target!r}): expected 'package.module:attr', e.g. 'my_plugin.heads:MyHead'")
        self.target, self.module, self.attr = target, module, attr
        # named like the target, as functools.wraps would, without importing it
        self.__module__, self.__qualname__, self.__name__ = module, attr, attr.rpartition(".")[2]
        self._resolved: Callable[..., Any] | None = None
        self._doc: str | None = None

    def resolve(self) -> Callable[..., Any]:
        """The target itself; a :class:`PluginError` naming it when its module does not import."""
        if self._resolved is None:
            try:
                found: Any = importlib.import_module(self.module)
                for part in self.attr.split("."):
                    found = getattr(found, part)
            except Exception as exc:
                raise PluginError(f"cannot load component {self.target}: {type(exc).__name__}: {exc}") from exc
            if not callable(found):
                raise PluginError(f"component {self.target} is not callable (a {type(found).__name__})")
            self._resolved = found
        return self._resolved

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.resolve())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # keep copy, pickle and inspect from importing the target
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def doc(self) -> str:
        """The target's docstring: from the source when it can be found there, else from the imported target."""
        if self._doc is None:
            doc = docstring_from_source(self.module, self.attr) if self._resolved is None else None
            if doc is None:
                try:
                    doc = inspect.getdoc(self.resolve()) or ""
                except PluginError:
                    doc = ""
            self._doc = doc
        return self._doc

    def __repr__(self) -> str:
        return f"lazy({self.target!r})"


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstring_from_source(module: str, attr: str, depth: int = 0) -> str | None:
    """The docstring of ``module:attr`` read with ``ast``; None when the source does not show it.

    Follows ``from x import attr`` re-exports and ``attr = other`` aliases (a few levels).
    Imports nothing, not even the parent packages of ``module``.
    """
    if depth > 5:
        return None
    try:
        origin = _source_file(module)
        tree = ast.parse(origin.read_text(encoding="utf-8")) if origin else None
    except Exception:  # an unreadable or invalid file: let the import say why
        return None
    if tree is None:
        return None
    package = module if origin.name == "__init__.py" else module.rpartition(".")[0]
    head, _, rest = attr.partition(".")
    for node in reversed(tree.body):  # the last binding wins, as at run time
        if isinstance(node, _DEFINITIONS) and node.name == head:
            for part in rest.split(".") if rest else ():
                inner = [n for n in getattr(node, "body", []) if isinstance(n, _DEFINITIONS) and n.name == part]
                if not inner:
                    return None
                node = inner[-1]
            return ast.get_docstring(node) or ""
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == head:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                    source = ".".join(base + ([node.module] if node.module else []))
                    return docstring_from_source(source, ".".join([alias.name, *([rest] if rest else [])]), depth + 1)
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Name)
            and any(isinstance(t, ast.Name) and t.id == head for t in node.targets)
        ):
            return docstring_from_source(module, ".".join([node.value.id, *([rest] if rest else [])]), depth + 1)
    return None


def _source_file(module: str) -> Path | None:
    """The ``.py`` file of ``module``, found package by package without importing any of them."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: finding it imports nothing
    for i in range(len(rest)):
        locations = spec.submodule_search_locations if spec else None
        if not locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join([top, *rest[: i + 1]]), list(locations))
    origin = Path(spec.origin) if spec and spec.origin else None
    return origin if origin and origin.suffix == ".py" else None


_ROLE = re.compile(r":(?:[\w-]+:)+`([^`]+)`")  # :class:`~a.B`, :py:func:`f`, :ref:`title <target>`
_LITERAL = re.compile(r"``(.+?)``")
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")  # `default role`, `a link <url>`_
_STRONG = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")


def _role_text(match: re.Match) -> str:
    text = match.group(1).strip()
    titled = re.fullmatch(r"(.+?)\s*<[^>]*>", text)
    if titled:
        return titled.group(1)
    if text.startswith("~"):
        return text[1:].rpartition(".")[2]
    return text.lstrip("!")


def plain_text(line: str) -> str:
    """A docstring line without reST/Sphinx markup: ``code``, :class:`~a.B`, *emphasis*, **strong**."""
    line = _ROLE.sub(_role_text, line)
    line = _LITERAL.sub(r"\1", line)
    line = _INTERPRETED.sub(lambda m: re.sub(r"\s*<[^>]*>$", "", m.group(1)), line)
    line = _STRONG.sub(r"\1", line)
    line = _EMPHASIS.sub(r"\1", line)
    line = re.sub(r"\\(.)", r"\1", line)  # reST escapes
    return re.sub(r"::$", ":", line)


class Catalog:
    """Every registered component, clashes included (a clash is kept, and refused on use)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[Entry]] = {}

    def add(self, entry: Entry) -> None:
        self._entries.setdefault((entry.kind, entry.name), []).append(entry)

    def entries(self, kind: str | None = None, pattern: str | None = None) -> list[Entry]:
        """Components of ``kind``; ``pattern`` (a shell wildcard) matches a component's name or
        ``distribution:name``, or its plugin's or distribution's name (then all its components)."""
        found = []
        for (k, _), entries in sorted(self._entries.items()):
            if kind and k != kind:
                continue
            found += [e for e in entries if not pattern or _matches(e, pattern)]
        return found

    def provenance(self, specs: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
        """``{kind, name, distribution, version, where}`` of each ``(where, kind, name)``, in order."""
        return [self.get(kind, name).provenance(where) for where, kind, name in specs]

    def names(self, kind: str) -> list[str]:
        return sorted(name for (k, name) in self._entries if k == kind)

    def clashes(self) -> list[list[Entry]]:
        return [entries for entries in self._entries.values() if len(entries) > 1]

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name`` or ``distribution:name``; a clear error otherwise."""
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r}; choose one of: {', '.join(KINDS)}")
        dist, _, short = name.rpartition(":")
        entries = self._entries.get((kind, short), [])
        if dist:
            entries = [e for e in entries if _normalize(e.distribution) == _normalize(dist)]
        if not entries:
            choices = ", ".join(self.names(kind)) or "(none installed)"
            raise ConfigError(f"unknown {kind} {name!r}; installed {kind}s: {choices}")
        if len(entries) > 1:
            choices = " or ".join(f"'{e.qualified_name}'" for e in entries)
            raise PluginError(f"{clash_message(entries)}; write {choices} to pick one")
        return entries[0]

    def build(self, kind: str, name: str, args: dict[str, Any] | None = None, **injected: Any) -> Any:
        """Call the factory with the YAML ``args`` plus the ``injected`` ones it accepts."""
        entry = self.get(kind, name)
        args = dict(args or {})
        params = _parameters(entry.factory)
        accepts_any = params is None or any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key, value in injected.items():
            if accepts_any or key in params:
                args.setdefault(key, value)
        if params is not None and not accepts_any:
            unknown = sorted(set(args) - set(params))
            if unknown:
                allowed = (
                    ", ".join(
                        k for k, param in params.items() if k not in injected and param.kind is not param.VAR_POSITIONAL
                    )
                    or "(none)"
                )
                raise ConfigError(f"{kind} {name!r} has no argument(s) {', '.join(unknown)}; it accepts: {allowed}")
        try:
            return entry.factory(**args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind} {name!r} ({entry.distribution}) rejected its arguments {args}: {exc}") from exc
        except ZooError:
            raise
        except Exception as exc:  # a component's own failure: one line naming it, not a traceback
            raise ComponentError(entry.describe(), exc, "while being built") from exc


def bind_component(component: Any, label: str, context: Any) -> None:
    """Call the component's optional ``bind(context)`` (a :class:`~zoo_core.interfaces.BindContext`).

    Whatever it raises becomes a :class:`ComponentError` naming ``label`` and the YAML path of
    its arguments, so the user sees one line, before any model is loaded.
    """
    bind = getattr(component, "bind", None)
    if callable(bind):
        with component_errors(label, f"checking {context.where}.args" if context.where else "in bind()"):
            bind(context)


def clash_message(entries: Iterable[Entry]) -> str:
    entries = list(entries)
    dists = " and ".join(f"{e.distribution} {e.version} (plugin {e.plugin!r})" for e in entries)
    return f"{entries[0].kind} {entries[0].name!r} is registered by both {dists}"


def _matches(entry: Entry, pattern: str) -> bool:
    names = (entry.name, entry.qualified_name)
    return any(fnmatch.fnmatchcase(text, pattern) for text in names) or plugin_matches(
        entry.plugin, entry.distribution, pattern
    )


def plugin_matches(plugin: str, distribution: str, pattern: str) -> bool:
    """Whether ``pattern`` (a wildcard) names the plugin or its distribution (in any PEP 503 spelling)."""
    return fnmatch.fnmatchcase(plugin, pattern) or fnmatch.fnmatchcase(_normalize(distribution), _normalize(pattern))


def _normalize(distribution: str) -> str:
    """PEP 503 form, so ``my_dist:x`` and ``My-Dist:x`` pick the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return None


def lazy(target: str) -> LazyFactory:
    """A factory for a hook's ``{name: factory}`` that imports ``"package.module:attr"`` only when called."""
    return LazyFactory(target)
