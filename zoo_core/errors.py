"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


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
    return f"  {loc}: {error['msg']} (got {error.get('input')!r})"


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
