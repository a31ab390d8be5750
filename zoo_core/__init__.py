"""zoo-core: plugin hooks, VSPW data, official evaluation and pipelines for video scene parsing."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (the one import a plugin needs)

__all__ = ["hookimpl", "__version__"]
