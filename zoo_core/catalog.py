"""The catalog: (kind, name) -> factory, with the distribution that provided it."""

from __future__ import annotations

import fnmatch
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from .errors import ConfigError, PluginError
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
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def record(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "summary": self.summary,
        }


class Catalog:
    """Every registered component, clashes included (a clash is kept, and refused on use)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], list[Entry]] = {}

    def add(self, entry: Entry) -> None:
        self._entries.setdefault((entry.kind, entry.name), []).append(entry)

    def entries(self, kind: Optional[str] = None, pattern: Optional[str] = None) -> list[Entry]:
        found = []
        for (k, name), entries in sorted(self._entries.items()):
            if kind and k != kind:
                continue
            for e in entries:
                if pattern and not (fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(e.qualified_name, pattern)):
                    continue
                found.append(e)
        return found

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

    def build(self, kind: str, name: str, args: Optional[dict[str, Any]] = None, **injected: Any) -> Any:
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
                allowed = ", ".join(k for k, param in params.items()
                                    if k not in injected and param.kind is not param.VAR_POSITIONAL) or "(none)"
                raise ConfigError(f"{kind} {name!r} has no argument(s) {', '.join(unknown)}; it accepts: {allowed}")
        try:
            return entry.factory(**args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{kind} {name!r} ({entry.distribution}) rejected its arguments {args}: {exc}") from exc


def clash_message(entries: Iterable[Entry]) -> str:
    entries = list(entries)
    dists = " and ".join(f"{e.distribution} {e.version} (plugin {e.plugin!r})" for e in entries)
    return f"{entries[0].kind} {entries[0].name!r} is registered by both {dists}"


def _normalize(distribution: str) -> str:
    """PEP 503 form, so ``my_dist:x`` and ``My-Dist:x`` pick the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _parameters(factory: Callable[..., Any]) -> Optional[dict[str, inspect.Parameter]]:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return None
