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
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from ..errors import ConfigError, describe_validation_error
from ..model_spec import CONFIG_NAME, WEIGHTS_NAME, ModelSpec

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
# model.safetensors, or folders (no '.', '..' or hidden ones) ending in /model.safetensors
WEIGHTS_PATH_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.\-]*/)*model\.safetensors$")


def _matching(regex: re.Pattern, problem: str) -> Any:
    """A string type that must match ``regex``; a mismatch says ``problem`` (pydantic's own message shows the regex)."""

    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(problem)
        return value

    return Annotated[str, AfterValidator(check), WithJsonSchema({"type": "string", "pattern": regex.pattern})]


CardName = _matching(NAME_RE, "lower-case letters, digits, '.', '-' and '_' only")
RepoId = _matching(REPO_RE, "must be ORG/NAME")
CommitId = _matching(SHA1_RE, "must be a full 40-hex commit id (lower case), not a branch or a short id")
Sha256 = _matching(SHA256_RE, "must be 64 lower-case hex digits")
Sha256OrEmpty = _matching(
    re.compile(r"^([0-9a-f]{64})?$"), "must be 64 lower-case hex digits (or empty with verified: false)"
)
WeightsPath = _matching(
    WEIGHTS_PATH_RE,
    "must be model.safetensors, or a folder path ending in /model.safetensors (config.json sits beside it)",
)
# The files of a model directory; both are pinned, since config.json decides the architecture and the class names.
ModelFile = Literal["config.json", "model.safetensors"]
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRequirement(_Strict):
    """The distribution whose components the model is built from, and its minimum version."""

    distribution: str
    min_version: str = "0"


class CardModel(_Strict):
    preset: str | None = None  # a plugin's named preset (e.g. swin-l), when the model comes from one
    config: ModelSpec  # what build_segmentor gets: num_classes, backbone, heads


class HubFile(_Strict):
    """Where the model directory is on the Hub, and the sha256 of each of its files.

    ``files`` pins every file (``config.json`` and ``model.safetensors``, the names in the
    folder of ``filename``). Older cards give ``sha256``, the weights' hash only: they still
    load, but their ``config.json`` is not verified.
    """

    repo_id: RepoId
    revision: CommitId  # a full 40-hex commit: a branch or tag can move, a commit cannot
    filename: WeightsPath = WEIGHTS_NAME
    files: dict[ModelFile, Sha256] | None = None
    sha256: Sha256OrEmpty | None = None  # older cards: the weights' sha256 only
    size: int | None = Field(None, gt=0)  # of the weights file

    @model_validator(mode="after")
    def _one_way_to_pin(self) -> HubFile:
        if self.files is not None and self.sha256:
            raise ValueError(
                "give hub.files (the sha256 of every file) or the older hub.sha256 (the weights' only), "
                "not both: drop hub.sha256"
            )
        if self.files is not None and sorted(self.files) != sorted(MODEL_FILES):
            raise ValueError(f"hub.files must give the sha256 of both {CONFIG_NAME} and {WEIGHTS_NAME}")
        return self

    def hashes(self) -> dict[str, str]:
        """``{file name: sha256}`` of what the card vouches for: both files, the weights only (older cards), or none."""
        if self.files is not None:
            return dict(self.files)
        return {WEIGHTS_NAME: self.sha256} if self.sha256 else {}

    @property
    def weights_sha256(self) -> str:
        return self.hashes().get(WEIGHTS_NAME, "")


class Metrics(_Strict):
    """Fractions in 0..1 on ``split``; ``miou_tta`` is with the card's test-time augmentation."""

    split: str
    miou: float | None = Field(None, ge=0, le=1)
    miou_tta: float | None = Field(None, ge=0, le=1)
    mvc8: float | None = Field(None, ge=0, le=1)
    mvc16: float | None = Field(None, ge=0, le=1)


class Card(_Strict):
    name: CardName
    summary: str = ""
    plugin: PluginRequirement
    model: CardModel
    num_classes: int = Field(ge=1, le=255)
    class_names: list[str]
    hub: HubFile
    verified: bool = True
    metrics: Metrics | None = None
    recipe: str | dict[str, Any] = ""  # a recipe name or file, or the training settings themselves
    license: str
    paper: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Card:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}")
        if self.model.config.num_classes != self.num_classes:
            raise ValueError(
                f"model.config.num_classes is {self.model.config.num_classes} but num_classes is {self.num_classes}"
            )
        if self.verified and not self.hub.hashes():
            raise ValueError(
                "hub.files is empty: set it (zoo push prints it), or mark the card `verified: false` "
                "(only for third-party weights whose hash is not known in advance)"
            )
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
        raise ConfigError(f"{origin}: invalid registry card\n{describe_validation_error(exc, '', Card)}") from None


def load_card_file(path: Any, origin: str | None = None) -> Card:
    """Read and validate a card file (a path, or a resource of the shipped registry)."""
    origin = origin or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read card: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{origin}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the card as UTF-8"
        ) from None
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
            origin = f"registry/{entry.name}"
            sources.append(CardSource(load_card_file(entry, origin), f"{origin} (zoo-core)"))

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
            raise ConfigError(
                f"registry card {source.card.name!r} is defined twice: in "
                f"{seen[source.card.name].origin} and in {source.origin}; rename or remove one"
            )
        seen[source.card.name] = source
    return sources


def find_card(name: str) -> Card:
    cards = {s.card.name: s.card for s in discover_cards()}
    if name not in cards:
        close = fnmatch.filter(cards, f"*{name}*")
        known = ", ".join(sorted(cards)) or "(none)"
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known cards: {known}"
        raise ConfigError(f"no registry card named {name!r}{hint} (add a card to a folder in ZOO_REGISTRY_PATH)")
    return cards[name]


def check_plugin(card: Card) -> None:
    """The card's plugin distribution must be installed at its minimum version or newer."""
    requirement = card.plugin
    try:
        installed = metadata.version(requirement.distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"card {card.name!r} needs the plugin {requirement.distribution}>={requirement.min_version}; "
            f"install it: pip install '{requirement.distribution}>={requirement.min_version}'"
        ) from None
    if _version(installed, f"installed {requirement.distribution}") < _version(
        requirement.min_version, f"card {card.name!r}: plugin.min_version"
    ):
        raise ConfigError(
            f"card {card.name!r} needs {requirement.distribution}>={requirement.min_version}, "
            f"{installed} is installed; upgrade it: pip install -U '{requirement.distribution}>="
            f"{requirement.min_version}'"
        )


def _version(text: str, what: str) -> Version:
    """``text`` as a PEP 440 version (``1.2``, ``1.2.0rc1``, ``1.2.post1``), ordered as pip orders them."""
    try:
        return Version(text)
    except InvalidVersion:
        raise ConfigError(f"{what}: {text!r} is not a version (PEP 440, e.g. 1.2.0)") from None
