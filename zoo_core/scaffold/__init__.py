"""``zoo new-plugin KIND NAME``: a complete plugin distribution to start from, one per component kind.

The files are the ``*.tmpl`` templates beside this module (``string.Template``, ``${name}``
placeholders): the shared ``pyproject.toml``, ``README.md``, ``__init__.py`` and
``plugin.py``, and per kind a small working component (``<kind>.py.tmpl``) with its tests
(``test_<kind>.py.tmpl``). The generated plugin imports only zoo-core's public API.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from ..errors import ConfigError
from ..hookspecs import KIND_HOOKS
from ..version import __version__

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
NAME_FORM = "lower-case letters and digits in words joined by single hyphens, starting with a letter (my-ensemble)"
MAX_NAME_LENGTH = 40


@dataclass(frozen=True)
class Kind:
    """What differs between the kinds: the class name's suffix, the one-line summary and how a pipeline uses it."""

    suffix: str
    summary: str
    usage: str


KINDS: dict[str, Kind] = {
    "backbone": Kind(
        "Backbone",
        "A small convolutional pyramid of stride-2 stages.",
        "In a pipeline's `model:`:\n\n```yaml\nmodel:\n  num_classes: 124\n"
        "  backbone: {type: ${name}, args: {channels: [32, 64, 96, 128]}}\n"
        "  heads: [{type: fcn, args: {channels: 64, num_convs: 1}}]\n```",
    ),
    "head": Kind(
        "Head",
        "A conv-BN-ReLU block with the image's global context added, then the classifier.",
        "In a pipeline's `model:`:\n\n```yaml\nmodel:\n  num_classes: 124\n"
        "  backbone: {type: timm, args: {model_name: resnet10t, out_indices: [1, 2, 3]}}\n"
        "  heads: [{type: ${name}, args: {channels: 64}}]\n```",
    ),
    "loss": Kind(
        "Loss",
        "Cross-entropy with label smoothing over the labelled pixels.",
        "In a pipeline's `train:`:\n\n```yaml\ntrain:\n  loss: {type: ${name}, args: {smoothing: 0.1}}\n```",
    ),
    "remapper": Kind(
        "Remapper",
        "Label values of a source dataset to VSPW train ids, by a lookup table.",
        "Build it as the core does, with the `args` of a pipeline:\n\n```python\n"
        "from zoo_core.model_dir import find_component\n\n"
        'remapper = find_component("remapper", "${name}").factory(mapping={1: 28, 2: 66}, min_labelled=0.8)\n```',
    ),
    "tta": Kind(
        "TTA",
        "Average of the original and the vertically flipped view.",
        "In a pipeline's `models:`:\n\n```yaml\nmodels:\n"
        "  - {name: mine, weights: runs/mine, tta: {type: ${name}}}\n```",
    ),
    "ensembler": Kind(
        "Ensembler",
        "The first model weighted against the mean of the others.",
        "In a pipeline of two or more models:\n\n```yaml\nensemble:\n  type: ${name}\n  args: {lead: 1.5}\n```\n\n"
        "It is a `zoo_core.ensemble.LinearEnsembler` with one weight, `lead`, so `zoo ensemble search` finds "
        "the best value on the pipeline's split:\n\n"
        "```bash\nzoo ensemble search pipeline.yaml --grid lead=0:3:0.25 --out runs/search\n```",
    ),
}
assert set(KINDS) == set(KIND_HOOKS), "a kind without a template"


def core_range(version: str = __version__) -> str:
    """``zoo-core>=X.Y,<X.Y+1`` for 0.x (a minor release may change the API), ``>=X.Y,<X+1`` from 1.0."""
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"zoo-core>={major}.{minor},<{upper}"


def check_name(name: str) -> None:
    """A :class:`ConfigError` unless ``name`` makes a valid component name, distribution and package."""
    if not NAME_PATTERN.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"NAME {name!r} is not a valid plugin name: use {NAME_FORM}, at most {MAX_NAME_LENGTH} characters"
        )
    if name == "zoo" or name.startswith("zoo-"):
        raise ConfigError(
            f"NAME {name!r} starts with 'zoo': give it without the prefix ({name.removeprefix('zoo-')!r}); "
            "the distribution is named zoo-NAME"
        )


def class_name(name: str, suffix: str) -> str:
    """``my-vote`` -> ``MyVoteEnsembler``; ``kit-ensembler`` -> ``KitEnsembler`` (no suffix twice)."""
    words = "".join(word.capitalize() for word in name.split("-"))
    if words.lower().endswith(suffix.lower()):
        words = words[: -len(suffix)]
    return words + suffix


def render(kind: str, name: str) -> dict[str, str]:
    """``{relative path: text}`` of the distribution ``zoo-NAME`` for a component of ``kind``."""
    if kind not in KINDS:
        raise ConfigError(f"KIND {kind!r} is not a component kind; choose one of: {', '.join(KINDS)}")
    check_name(name)
    spec = KINDS[kind]
    package = "zoo_" + name.replace("-", "_")
    values = {
        "name": name,
        "kind": kind,
        "dist": f"zoo-{name}",
        "package": package,
        "module": kind,
        "hook": KIND_HOOKS[kind],
        "cls": class_name(name, spec.suffix),
        "check": f"check_{kind}",
        "summary": spec.summary,
        "summary_lower": spec.summary[0].lower() + spec.summary[1:],
        "core_version": __version__,
        "core_range": core_range(),
    }
    values["usage"] = Template(spec.usage).substitute(values)
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"src/{package}/__init__.py": "init.py.tmpl",
        f"src/{package}/plugin.py": "plugin.py.tmpl",
        f"src/{package}/{kind}.py": f"{kind}.py.tmpl",
        f"tests/test_{kind}.py": f"test_{kind}.py.tmpl",
    }
    templates = resources.files(__package__)
    return {
        path: Template(templates.joinpath(t).read_text(encoding="utf-8")).substitute(values)
        for path, t in files.items()
    }


def new_plugin(kind: str, name: str, parent: str | os.PathLike[str] = ".") -> Path:
    """Write the distribution ``zoo-NAME`` into ``parent/zoo-NAME`` and return that folder.

    An existing, non-empty folder is refused and left as it was; the files are written into
    a temporary folder beside it and moved into place at once, so an interrupted call leaves
    nothing half-written.
    """
    files = render(kind, name)
    target = Path(parent) / f"zoo-{name}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(
            f"{target} already exists and is not empty; choose another --dir or NAME (nothing was written)"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".zoo-{name}-", dir=target.parent))
    except OSError as exc:
        where = target.parent
        raise ConfigError(f"--dir {where}: cannot create zoo-{name} there ({exc.strerror}); choose another") from None
    try:
        for path, text in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_text(text, encoding="utf-8")
        staging.chmod(0o777 & ~_umask())
        os.replace(staging, target)  # an empty target folder is replaced too
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
