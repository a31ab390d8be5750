"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero.

A component raises :class:`ConfigError` for bad arguments (in its factory or in
``bind(context)``) and :class:`DataError` for unusable input. Any other exception it raises
while a pipeline runs reaches the user as a :class:`ComponentError`: one line naming the
component, its distribution and version, and where it failed (video and frame, or iteration).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ZooError",
    "ConfigError",
    "DataError",
    "PluginError",
    "ComponentError",
    "component_errors",
    "error_location",
    "describe_validation_error",
]


class ZooError(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""

    exit_code = 1


class ConfigError(ZooError):
    """A pipeline, card or argument that does not validate (exit code 2, like click's usage errors)."""

    exit_code = 2


class DataError(ZooError):
    """Input data that cannot be used: names the file, video or frame and the problem."""


class PluginError(ZooError):
    """A plugin that failed to import or validate, or a component name that is ambiguous."""


class ComponentError(ZooError):
    """A component failed while a pipeline ran (or rejected the pipeline in ``bind``), exit code 2.

    ``component`` names it (``ensembler 'my-ens' (zoo-my-ens 0.1.0)``), ``where`` says when
    (``on video 12_abc frame 00000012``, ``at iteration 40``), ``error`` is the original
    exception's type and message (a :class:`ZooError`'s message alone). The original
    exception is chained as ``__cause__``: ``ZOO_DEBUG=1`` shows its traceback.
    """

    exit_code = 2

    def __init__(self, component: str, error: BaseException | str, where: str = ""):
        self.component = component
        self.error = error if isinstance(error, str) else describe_exception(error)
        self.where = where
        super().__init__(component, self.error, where)

    def __str__(self) -> str:
        return f"{self.component} failed{' ' + self.where if self.where else ''}: {self.error}"


def describe_exception(exc: BaseException) -> str:
    """``ValueError: message``; a :class:`ZooError` is already worded for the user: its message alone."""
    if isinstance(exc, ZooError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextmanager
def component_errors(component: str, where: str = "") -> Iterator[None]:
    """Report any exception raised inside as a :class:`ComponentError` naming ``component``.

    A :class:`ComponentError` from a component called inside (a model inside a TTA policy)
    passes through unchanged: the innermost component is the one at fault.
    """
    try:
        yield
    except ComponentError as exc:
        if where and not exc.where:
            exc.where = where
        raise
    except Exception as exc:
        raise ComponentError(component, exc, where) from exc


@contextmanager
def error_location(where: str) -> Iterator[None]:
    """Add ``where`` (``on video V frame F``, ``at iteration N``) to a :class:`ComponentError` raised inside."""
    try:
        yield
    except ComponentError as exc:
        if not exc.where:
            exc.where = where
        raise


def describe_validation_error(exc, root: str = "", model=None) -> str:
    """One line per problem of a pydantic ``ValidationError``, each naming its YAML path.

    ``root`` prefixes the paths (``model``); with ``model`` (the validated class) an unknown
    key lists the allowed ones.
    """
    return "\n".join(_describe(error, root, model) for error in exc.errors())


def _describe(error: dict, root: str, model) -> str:
    loc = _yaml_path(((root,) if root else ()) + tuple(error["loc"]))
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, error["loc"][:-1]) if model is not None else []
        return f"  {loc}: unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
    if error["type"] == "missing":
        return f"  {loc}: required but missing"
    message = error["msg"].removeprefix("Value error, ")  # a validator's own words
    if isinstance(error.get("input"), dict):  # a check across a mapping's fields: repeating the mapping says nothing
        return f"  {loc}: {message}"
    return f"  {loc}: {message} (got {error.get('input')!r})"


def _yaml_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _allowed_keys(model, loc: tuple) -> list[str]:
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_of(annotation):
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
