"""Registry cards: one YAML file per published weight set, validated against :class:`Card`.

Cards come from three places, in this order: the ``registry/`` folder shipped with
zoo-core, installed plugins (the ``zoo_registry_cards`` hook) and every directory listed
in ``ZOO_REGISTRY_PATH`` (``os.pathsep``-separated). A card that fails the schema is an
error naming its file and field; a name given by two sources is an error naming both.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from importlib import metadata
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRequirement(_Strict):
    """The distribution whose components the model is built from, and its minimum version."""

    distribution: str
    min_version: str = "0"


class CardModel(_Strict):
    preset: Optional[str] = None  # a plugin's named preset (e.g. swin-l), when the model comes from one
    config: dict[str, Any]  # the build_segmentor config: num_classes, backbone, heads


class HubFile(_Strict):
    repo_id: str
    revision: str  # a full 40-hex commit: a branch or tag can move, a commit cannot
    filename: str = "model.safetensors"
    sha256: str = ""  # empty only with `verified: false`
    size: Optional[int] = Field(None, gt=0)

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not REPO_RE.match(value):
            raise ValueError("must be ORG/NAME")
        return value

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        parts = value.split("/")
        # The model is rebuilt from the config.json beside the weights, and only safetensors are loaded.
        if parts[-1] != "model.safetensors" or "" in parts or ".." in parts:
            raise ValueError("must be model.safetensors, or a folder path ending in /model.safetensors "
                             "(config.json sits beside it)")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not SHA1_RE.match(value):
            raise ValueError("must be a full 40-hex commit id (lower case), not a branch or a short id")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if value and not SHA256_RE.match(value):
            raise ValueError("must be 64 lower-case hex digits (or empty with verified: false)")
        return value


class Metrics(_Strict):
    """Fractions in 0..1 on ``split``; ``miou_tta`` is with the card's test-time augmentation."""

    split: str
    miou: Optional[float] = Field(None, ge=0, le=1)
    miou_tta: Optional[float] = Field(None, ge=0, le=1)
    mvc8: Optional[float] = Field(None, ge=0, le=1)
    mvc16: Optional[float] = Field(None, ge=0, le=1)


class Card(_Strict):
    name: str
    summary: str = ""
    plugin: PluginRequirement
    model: CardModel
    num_classes: int = Field(ge=1, le=255)
    class_names: list[str]
    hub: HubFile
    verified: bool = True
    metrics: Optional[Metrics] = None
    recipe: Union[str, dict[str, Any]] = ""  # a recipe name or file, or the training settings themselves
    license: str
    paper: Optional[str] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("lower-case letters, digits, '.', '-' and '_' only")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Card":
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        if self.verified and not self.hub.sha256:
            raise ValueError("hub.sha256 is empty: set it, or mark the card `verified: false` "
                             "(only for third-party weights whose hash is not known in advance)")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


@dataclass(frozen=True)
class CardSource:
    card: Card
    origin: str  # a file path, or "plugin <distribution>"


def parse_card(data: Any, origin: str) -> Card:
    """Validate one card; errors name ``origin`` and each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a card must be a mapping of fields (name, plugin, model, hub, ...)")
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(card)"
            detail = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            lines.append(f"  {where}: {detail}")
        raise ConfigError(f"{origin}: invalid registry card\n" + "\n".join(lines)) from None


def load_card_file(path: Any, origin: Optional[str] = None) -> Card:
    """Read and validate a card file (a path, or a resource of the shipped registry)."""
    origin = origin or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read card: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    return parse_card(data, origin)


def _card_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"} and not p.name.startswith("."))


def discover_cards() -> list[CardSource]:
    """Every card: shipped, from plugins, from ``ZOO_REGISTRY_PATH``; duplicate names are an error."""
    sources: list[CardSource] = []
    shipped = resources.files("zoo_core.registry")
    for entry in sorted(shipped.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            sources.append(CardSource(load_card_file(entry, f"registry/{entry.name}"), f"registry/{entry.name} (zoo-core)"))

    from ..plugins import get_registry

    manager = get_registry().manager
    for impl in manager.hook.zoo_registry_cards.get_hookimpls():
        dist = manager.get_name(impl.plugin).split(":")[0]  # plugins are registered as distribution:name
        for item in impl.function() or []:
            origin = f"a card of plugin {dist}"
            card = load_card_file(Path(item)) if isinstance(item, (str, os.PathLike)) else parse_card(item, origin)
            sources.append(CardSource(card, f"{item} ({dist})" if isinstance(item, (str, os.PathLike)) else origin))

    for folder in filter(None, os.environ.get("ZOO_REGISTRY_PATH", "").split(os.pathsep)):
        directory = Path(folder)
        if not directory.is_dir():
            raise ConfigError(f"ZOO_REGISTRY_PATH names {directory}, which is not a directory")
        sources += [CardSource(load_card_file(p), str(p)) for p in _card_files(directory)]

    seen: dict[str, CardSource] = {}
    for source in sources:
        if source.card.name in seen:
            raise ConfigError(f"registry card {source.card.name!r} is defined twice: in {seen[source.card.name].origin} "
                              f"and in {source.origin}; rename or remove one")
        seen[source.card.name] = source
    return sources


def find_card(name: str) -> Card:
    cards = {s.card.name: s.card for s in discover_cards()}
    if name not in cards:
        close = fnmatch.filter(cards, f"*{name}*")
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known cards: {', '.join(sorted(cards)) or '(none)'}"
        raise ConfigError(f"no registry card named {name!r}{hint} (add a card to a folder in ZOO_REGISTRY_PATH)")
    return cards[name]


def check_plugin(card: Card) -> None:
    """The card's plugin distribution must be installed at its minimum version or newer."""
    requirement = card.plugin
    try:
        installed = metadata.version(requirement.distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"card {card.name!r} needs the plugin {requirement.distribution}>={requirement.min_version}; "
                          f"install it: pip install '{requirement.distribution}>={requirement.min_version}'") from None
    if _version_key(installed) < _version_key(requirement.min_version):
        raise ConfigError(f"card {card.name!r} needs {requirement.distribution}>={requirement.min_version}, "
                          f"{installed} is installed; upgrade it: pip install -U '{requirement.distribution}>="
                          f"{requirement.min_version}'")


def _version_key(version: str) -> tuple:
    try:
        from packaging.version import Version

        return (Version(version),)
    except Exception:  # packaging missing or a non-PEP 440 string: compare numerically
        return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-+]", version))
