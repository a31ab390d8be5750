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
