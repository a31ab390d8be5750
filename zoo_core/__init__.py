"""zoo-core: plugin hooks, VSPW data, official evaluation and pipelines for video scene parsing."""

from .catalog import lazy
from .hookspecs import hookimpl
from .version import __version__

__all__ = ["hookimpl", "lazy", "load", "__version__"]


def load(name_or_dir, device="cpu"):
    """The model of a registry card (pulled and verified) or of a model directory, in eval mode.

    ``config.json`` names the components and their arguments, so the class is never named
    here; the weights (safetensors) are loaded strictly.
    """
    # Imported here so that `import zoo_core` stays light for plugins.
    from .hub.client import resolve_weights
    from .model_dir import load_model_dir

    model, _ = load_model_dir(resolve_weights(str(name_or_dir)).path, device=device)
    return model
