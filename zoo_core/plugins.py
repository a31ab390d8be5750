"""Plugin discovery: entry points, broken-plugin isolation, clash detection.

Every plugin is loaded and asked for its components on its own: one that fails to
import, fails pluggy's validation, or returns something that is not ``{name: factory}``
is recorded as broken (with its distribution, version and error) and everything else
keeps working. ``ZOO_STRICT_PLUGINS=1`` turns a broken plugin into an error (and imports
every ``lazy()`` component at discovery, so a module that does not import counts as broken);
``ZOO_DISABLE_PLUGIN_AUTOLOAD=1`` loads the core's built-ins only.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .catalog import Catalog, Entry, LazyFactory, _normalize, clash_message
from .errors import PluginError
from .version import __version__

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
CORE_DISTRIBUTION = "zoo-core"


@dataclass
class PluginRecord:
    name: str
    distribution: str
    version: str
    status: str  # ok | broken | clash
    error: str = ""

    def record(self) -> dict[str, str]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
        }

    def describe(self) -> str:
        return f"plugin {self.name!r} (distribution {self.distribution} {self.version})"


@dataclass
class Registry:
    manager: pluggy.PluginManager
    catalog: Catalog
    plugins: list[PluginRecord]

    def broken(self) -> list[PluginRecord]:
        return [p for p in self.plugins if p.status == "broken"]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def core_version() -> str:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


def load_registry(
    autoload: bool | None = None, strict: bool | None = None, distributions: Iterable[str] | None = None
) -> Registry:
    """Discover the built-ins and every ``zoo.plugins`` entry point.

    ``distributions`` loads the plugins of those distributions only (the built-ins always):
    a plugin's tests then check their own plugin strictly, whatever else is installed. A
    named distribution without a ``zoo.plugins`` entry point is a :class:`PluginError`.
    """
    wanted = None if distributions is None else {_normalize(d) for d in distributions} - {CORE_DISTRIBUTION}
    if autoload is None:
        autoload = wanted is not None or not env_flag("ZOO_DISABLE_PLUGIN_AUTOLOAD")
    strict_from_env = strict is None
    if strict is None:
        strict = env_flag("ZOO_STRICT_PLUGINS")

    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    catalog = Catalog()
    records: list[PluginRecord] = []

    from . import builtin

    core = PluginRecord("builtin", CORE_DISTRIBUTION, core_version(), "ok")
    _register(manager, catalog, core, lambda: builtin, strict)
    records.append(core)

    if autoload:
        for ep in sorted(metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=_entry_point_order):
            dist = getattr(ep, "dist", None)
            if wanted is not None and (dist is None or _normalize(dist.name) not in wanted):
                continue
            record = PluginRecord(ep.name, dist.name if dist else "?", dist.version if dist else "?", "ok")
            _register(manager, catalog, record, ep.load, strict)
            records.append(record)

    for entries in catalog.clashes():
        message = clash_message(entries)
        for record in records:
            if record.status != "broken" and any(_provided_by(e, record) for e in entries):
                record.status = "clash"
                record.error = "; ".join(filter(None, [record.error, message]))

    missing = sorted((wanted or set()) - {_normalize(r.distribution) for r in records})
    if missing:
        raise PluginError(
            f"no zoo.plugins entry point of distribution(s) {', '.join(missing)} is installed; "
            "install the plugin (pip install -e .) in this environment"
        )
    broken = [r for r in records if r.status == "broken"]
    if broken and strict:
        cause = "ZOO_STRICT_PLUGINS is set and these" if strict_from_env else "these"
        raise PluginError(f"{cause} plugins are broken:\n" + "\n".join(f"  {r.describe()}: {r.error}" for r in broken))
    return Registry(manager, catalog, records)


def _entry_point_order(ep: metadata.EntryPoint) -> tuple[str, str]:
    """Entry-point name, then distribution: the same order (and clash messages) on every machine."""
    dist = getattr(ep, "dist", None)
    return ep.name, dist.name if dist else ""


def _register(
    manager: pluggy.PluginManager, catalog: Catalog, record: PluginRecord, load: Any, import_lazy: bool = False
) -> None:
    """``import_lazy`` (strict mode) imports every ``lazy()`` component too, so a broken module shows now."""
    stage, plugin = "import", None
    try:
        plugin = load()
        stage = "validate"
        # Two distributions may pick the same entry-point name; pluggy needs unique names.
        manager.register(plugin, name=f"{record.distribution}:{record.name}")
        _check_hook_names(manager, plugin)
        entries = _collect(manager, plugin, record)
        stage = "import"
        for entry in entries if import_lazy else ():
            if isinstance(entry.factory, LazyFactory):
                entry.factory.resolve()
    except Exception as exc:  # a plugin's failure must not take the others down
        record.status = "broken"
        record.error = f"{stage} failed: {type(exc).__name__}: {exc}"
        if plugin is not None and manager.is_registered(plugin):
            manager.unregister(plugin)
        if env_flag("ZOO_DEBUG"):
            traceback.print_exc(file=sys.stderr)
        return
    for entry in entries:
        catalog.add(entry)


def _provided_by(entry: Entry, record: PluginRecord) -> bool:
    return entry.plugin == record.name and entry.distribution == record.distribution


def _check_hook_names(manager: pluggy.PluginManager, plugin: Any) -> None:
    """A misspelled hook would otherwise be accepted by pluggy and silently never called."""
    for caller in manager.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        if any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls()):
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("zoo_")))
            raise pluggy.PluginValidationError(plugin, f"unknown hook {caller.name!r}; the zoo's hooks are: {known}")


def _collect(manager: pluggy.PluginManager, plugin: Any, record: PluginRecord) -> list[Entry]:
    """Call this plugin's own hookimpls and check what they return."""
    entries = []
    for kind, hook_name in hookspecs.KIND_HOOKS.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            result = impl.function()
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(f"{hook_name}() must return a dict of name -> factory, got {type(result).__name__}")
            for name, factory in result.items():
                if not isinstance(name, str) or not NAME_RE.match(name):
                    raise ValueError(
                        f"{hook_name}() returned an invalid {kind} name {name!r} "
                        "(lower-case letters, digits, '-', '_' and '.')"
                    )
                if not callable(factory):
                    raise TypeError(f"{hook_name}() returned a {kind} {name!r} whose factory is not callable")
                entries.append(Entry(kind, name, factory, record.distribution, record.version, record.name))
    return entries


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def get_catalog() -> Catalog:
    return get_registry().catalog


def reset_registry() -> None:
    """Forget the loaded plugins (tests, or after installing one in-process)."""
    global _REGISTRY
    _REGISTRY = None


def warn_broken_plugins() -> None:
    """Tell the user once that some plugins were skipped, without stopping the command."""
    for record in get_registry().broken():
        print(
            f"warning: {record.describe()} is broken and was skipped: {record.error} "
            "(ZOO_STRICT_PLUGINS=1 makes this fatal)",
            file=sys.stderr,
        )
