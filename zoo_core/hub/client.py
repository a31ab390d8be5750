"""Weights from the Hub: ``zoo pull``, sha256 verification, ``zoo.lock`` and resolving weights by name.

A card pins a repository, a full commit id and the sha256 of every file of the model
directory (``config.json`` decides the architecture and the class names, the weights file
the numbers). :func:`pull` downloads both at that commit with ``huggingface_hub`` and checks
each sha256 itself (the Hub client checks only the size): on a mismatch the file is removed
from the cache and nothing is returned. A cached file is used without any network access.

The ``HF_*`` settings are read at each call, not when ``huggingface_hub`` is imported:
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_TOKEN``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import posixpath
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import ConfigError, DataError, describe_validation_error
from ..fileio import atomic_write_text
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME, ModelSpec, read_model_config
from .cards import (
    NAME_RE,
    SHA1_RE,
    Card,
    CardName,
    CommitId,
    ModelFile,
    RepoId,
    Sha256,
    WeightsPath,
    check_plugin,
    discover_cards,
    find_card,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
LOCK_NAME = "zoo.lock"  # written next to what used the weights
LOCK_VERSION = 2  # 2: the sha256 of every file; 1 (still read): the weights' only
CARD_PREFIX = "card:"  # `weights: card:NAME` names a registry card even where a folder NAME exists
CHUNK_SIZE = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]


class UnverifiedWeightsWarning(UserWarning):
    """Files of a model directory that no card or lock vouches for: their sha256 is reported and recorded instead."""


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` (a mirror or a private hub), else the public Hub."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or DEFAULT_ENDPOINT


def hub_cache_dir() -> Path:
    """The Hugging Face cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@dataclass
class Resolved:
    """Weights ready to load: ``path`` holds ``config.json`` and the weights file.

    ``repo_id`` and ``revision`` (the commit downloaded) are ``None``, ``sha256`` is empty and
    ``files`` too, for a local model directory. ``sha256`` is the weights', ``files`` maps each
    downloaded file (``config.json``, ``model.safetensors``) to its sha256, ``vouched`` names those
    whose sha256 a card or a lock gave, and ``verified`` says that they are all of them.
    """

    name: str
    path: Path
    repo_id: str | None
    revision: str | None
    filename: str
    sha256: str
    verified: bool
    files: dict[str, str] = field(default_factory=dict)
    vouched: tuple[str, ...] = ()


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pull(name: str, revision: str | None = None, local_dir: PathLike | None = None) -> Resolved:
    """Download and verify the model directory of the registry card ``name``.

    ``revision`` (a branch, tag or commit) overrides the card's; the card's hashes then
    vouch for the files only if the bytes are the same, otherwise the pull warns with
    :class:`UnverifiedWeightsWarning`, as it does for cards marked ``verified: false``.
    ``local_dir`` puts the files there instead of the Hugging Face cache.
    """
    card = find_card(name)
    check_plugin(card)
    return _fetch(card, revision or card.hub.revision, local_dir)


def resolve_weights(ref: str, lock: Lock | None = None) -> Resolved:
    """``ref`` is a model directory (used as it is) or a registry card (pulled): ``card:NAME``, or a bare NAME.

    A bare name that is both a card and an existing folder is an error that says which to
    write (``card:NAME`` or ``./NAME``). When ``lock`` has an entry for the card, its
    repository, revision and file are pulled and every sha256 must be the lock's, whatever
    the card says now.
    """
    ref = str(ref)
    if ref.startswith(CARD_PREFIX):
        card = find_card(ref[len(CARD_PREFIX) :])
    else:
        path = Path(ref).expanduser()
        card = _card_named(ref) if NAME_RE.match(ref) else None  # card names have no '/': a path otherwise
        if card is not None and path.is_dir():
            raise ConfigError(
                f"weights {ref!r} names both the registry card {ref!r} and the folder {path.resolve()}; "
                f"write `card:{ref}` for the card or `./{ref}` for the folder"
            )
        if card is None:
            return _local_model_dir(ref, path)
    check_plugin(card)
    pin = lock.entries.get(card.name) if lock else None
    if pin is None:
        return _fetch(card, card.hub.revision, None)
    return _fetch(card, pin.revision, None, pin=pin, pinned_by=lock.path)


def _card_named(name: str) -> Card | None:
    return next((source.card for source in discover_cards() if source.card.name == name), None)


def _local_model_dir(ref: str, path: Path) -> Resolved:
    if not path.is_dir():
        raise DataError(
            f"weights {ref!r}: no such model directory, and not a registry card name; "
            "train the model first (zoo train) or check the path (zoo list --weights shows the cards)"
        )
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise DataError(
            f"{weights} not found: {path} is not a saved model directory "
            f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME}); check the path or train the model again"
        )
    return Resolved(ref, path, None, None, WEIGHTS_NAME, "", False)  # nothing to verify against


# --- zoo.lock ----------------------------------------------------------------------------------


class LockEntry(BaseModel):
    """One card's weights in a lock: where they were pulled from and the sha256 of each file.

    ``files`` always holds the weights; an entry read from a version-1 lock lacks ``config.json``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_id: RepoId
    revision: CommitId
    filename: WeightsPath
    files: dict[ModelFile, Sha256]

    @model_validator(mode="after")
    def _pins_the_weights(self) -> LockEntry:
        if WEIGHTS_NAME not in self.files:
            raise ValueError(f"files must give the sha256 of {WEIGHTS_NAME}")
        return self


class _LockFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[2]
    weights: dict[CardName, LockEntry]


class _LockEntryV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: RepoId
    revision: CommitId
    filename: WeightsPath
    sha256: Sha256


class _LockFileV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    weights: dict[CardName, _LockEntryV1]


class Lock:
    """``zoo.lock``: the exact files a run used, ``name -> {repo_id, revision, filename, files: {name: sha256}}``.

    Written next to a run's results; a pipeline that names a lock pulls exactly these files.
    A version-1 lock (the weights' sha256 only) is still read.
    """

    def __init__(self, entries: dict[str, LockEntry | dict] | None = None, path: Path | None = None):
        self.entries: dict[str, LockEntry] = {
            name: LockEntry.model_validate(entry) for name, entry in (entries or {}).items()
        }
        self.path = path  # where it was read from, for messages

    @classmethod
    def load(cls, path: PathLike) -> Lock:
        path = Path(path)
        redo = "restore it or write a new one with a run"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"lock file {path} not found; check the path, or drop `lock:` to pull what the cards "
                "name and write a new lock"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable zoo.lock ({exc}); {redo}") from None
        version = data.get("version") if isinstance(data, dict) else None
        if version not in (1, LOCK_VERSION) or not isinstance(data.get("weights"), dict):
            raise ConfigError(
                f'{path}: not a zoo.lock: expected {{"version": {LOCK_VERSION}, "weights": {{name: '
                "{repo_id, revision, filename, files: {file: sha256}}}}}; " + redo
            )
        schema = _LockFile if version == LOCK_VERSION else _LockFileV1
        try:
            lock = schema.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_error(exc, "", schema)
            raise ConfigError(f"{path}: invalid zoo.lock; {redo}\n{problems}") from None
        if isinstance(lock, _LockFileV1):
            return cls(
                {
                    name: LockEntry(
                        repo_id=e.repo_id, revision=e.revision, filename=e.filename, files={WEIGHTS_NAME: e.sha256}
                    )
                    for name, e in lock.weights.items()
                },
                path,
            )
        return cls(lock.weights, path)

    def save(self, path: PathLike) -> None:
        """Write atomically, keys sorted: the same weights give the same bytes."""
        weights = {name: entry.model_dump() for name, entry in self.entries.items()}
        text = json.dumps({"version": LOCK_VERSION, "weights": weights}, indent=2, sort_keys=True)
        atomic_write_text(path, text + "\n")

    def add(self, resolved: Resolved) -> None:
        if resolved.repo_id is None:
            raise ValueError(f"{resolved.name!r} is a local model directory: only Hub weights go in a lock")
        self.entries[resolved.name] = LockEntry(
            repo_id=resolved.repo_id, revision=resolved.revision, filename=resolved.filename, files=resolved.files
        )


# --- downloading -------------------------------------------------------------------------------

_warned_config_unpinned: set[tuple[str, str]] = set()  # (who pins, what): warned once per process


def _fetch(
    card: Card, revision: str, local_dir: PathLike | None, pin: LockEntry | None = None, pinned_by: Path | None = None
) -> Resolved:
    hub = _Hub(pin.repo_id if pin else card.hub.repo_id, local_dir)
    filename = pin.filename if pin else card.hub.filename
    if not SHA1_RE.match(revision) and not hub.offline:
        revision = hub.commit_of(filename, revision)  # every file from one commit, even if the branch moves
    weights = hub.download(filename, revision)
    commit = hub.commit_in_path(weights) or revision
    where = f"{hub.repo_id}@{commit}"

    card_vouches = (hub.repo_id, commit, filename) == (card.hub.repo_id, card.hub.revision, card.hub.filename)
    if pin:
        expected, vouched_by = dict(pin.files), f"pinned by the lock {pinned_by or ''}".rstrip()
    elif card_vouches:
        expected, vouched_by = card.hub.hashes(), f"card {card.name!r}"
    else:
        expected, vouched_by = {}, ""

    if card_vouches and card.hub.size and weights.stat().st_size != card.hub.size:
        size = weights.stat().st_size
        _remove_download(weights)
        raise DataError(
            f"size mismatch for {where}/{filename}: expected {card.hub.size} bytes (card {card.name!r}), "
            f"found {size}; the file was removed from the cache and nothing was loaded; pull again, and "
            "if it persists the repository does not hold what the card names: tell the card's maintainers"
        )
    # The weights are checked before config.json is asked for: a bad download stops at the first file.
    found = {
        WEIGHTS_NAME: _verified_sha256(
            hub, weights, expected.get(WEIGHTS_NAME), f"{where}/{filename}", vouched_by, pin is not None
        )
    }
    config_file = posixpath.join(posixpath.dirname(filename), CONFIG_NAME)
    config_path = hub.download(config_file, commit)
    found[CONFIG_NAME] = _verified_sha256(
        hub, config_path, expected.get(CONFIG_NAME), f"{where}/{config_file}", vouched_by, pin is not None
    )

    # Another revision than the card's is vouched for by the card's hashes when its bytes are the same.
    vouching = expected or card.hub.hashes()
    vouched = tuple(name for name, sha in found.items() if vouching.get(name) == sha)
    verified = len(vouched) == len(found)
    if not verified:
        _warn_unverified(
            card, found, vouching, f"{where}/{filename}", f"{where}/{config_file}", pinned_by if pin else None
        )
    _check_config_fits_card(card, config_path, f"{where}/{config_file}")
    return Resolved(
        card.name, weights.parent, hub.repo_id, commit, filename, found[WEIGHTS_NAME], verified, found, vouched
    )


def _verified_sha256(hub: _Hub, path: Path, expected: str | None, where: str, vouched_by: str, pinned: bool) -> str:
    """The file's sha256; a mismatch with ``expected`` removes the file from the cache and is an error."""
    found = hub.sha256(path)
    if expected and found != expected:
        _remove_download(path)
        raise DataError(
            f"sha256 mismatch for {where}: expected {expected} ({vouched_by}), found {found}; "
            "the file was removed from the cache and nothing was loaded; pull again, and if it persists "
            "the repository does not hold what the "
            + ("lock pins: check the lock or write a new one" if pinned else "card names: tell the card's maintainers")
        )
    return found


def _warn_unverified(
    card: Card, found: dict[str, str], vouching: dict[str, str], weights_at: str, config_at: str, pinned_by: Path | None
) -> None:
    """Say which files nothing vouched for, and their sha256 (a lock records them so later runs get these bytes)."""
    if set(vouching) == {WEIGHTS_NAME} and vouching[WEIGHTS_NAME] == found[WEIGHTS_NAME]:
        # an older card or lock: it pins the weights only; said once per card or lock and repository
        who = f"the lock {pinned_by}" if pinned_by else f"card {card.name!r}"
        if (who, config_at) in _warned_config_unpinned:
            return
        _warned_config_unpinned.add((who, config_at))
        remedy = (
            "write a new lock with a run"
            if pinned_by
            else "ask its maintainers for a card with hub.files (zoo push prints one)"
        )
        warnings.warn(
            f"{who} pins only the weights' sha256, so {config_at} (the architecture and the class names) "
            f"is unverified; it has sha256 {found[CONFIG_NAME]}; {remedy}",
            UnverifiedWeightsWarning,
            stacklevel=4,
        )
        return
    if not vouching:
        reason = (
            f"card {card.name!r} is marked verified: false (third-party weights), so {weights_at} and "
            f"{CONFIG_NAME} were not checked against published hashes"
        )
    else:
        reason = (
            f"{weights_at} is not the file card {card.name!r} names ({card.hub.repo_id}@{card.hub.revision}/"
            f"{card.hub.filename}), so the card's hashes do not vouch for it"
        )
    shown = ", ".join(f"{name} has sha256 {sha}" for name, sha in found.items() if vouching.get(name) != sha)
    warnings.warn(
        f"{reason}; {shown}: a zoo.lock records them so that later runs get these exact bytes",
        UnverifiedWeightsWarning,
        stacklevel=4,
    )


def _check_config_fits_card(card: Card, config_path: Path, where: str) -> None:
    """config.json must describe the card's model and classes (whatever vouched for it, this costs nothing)."""
    config = read_model_config(config_path.parent)
    try:
        model = ModelSpec.parse(config["model"])
    except ConfigError as exc:
        raise DataError(f"{where} does not describe a model: {exc}") from None
    problem = ""
    if model.num_classes != card.num_classes:
        problem = f"describes a model of {model.num_classes} classes, card {card.name!r} says {card.num_classes}"
    elif model != card.model.config:
        problem = f"describes another architecture than card {card.name!r} (its model.config)"
    elif config.get("class_names") is not None and config["class_names"] != card.class_names:
        problem = f"names other classes than card {card.name!r} (or in another order)"
    if problem:
        raise DataError(
            f"{where}: its {CONFIG_NAME} {problem}; the card does not belong to these files: tell the "
            "card's maintainers"
        )


class _Hub:
    """One repository on the endpoint, with the cache and the settings of this call."""

    def __init__(self, repo_id: str, local_dir: PathLike | None):
        self.repo_id = repo_id
        self.endpoint = hub_endpoint()
        self.cache_dir = hub_cache_dir()
        self.local_dir = Path(local_dir) if local_dir is not None else None
        self.offline = hub_offline()
        self.token = os.environ.get("HF_TOKEN") or None

    def download(self, filename: str, revision: str) -> Path:
        from huggingface_hub import hf_hub_download

        with self._errors(filename, revision, downloading=True):
            return Path(
                hf_hub_download(
                    self.repo_id,
                    filename,
                    revision=revision,
                    endpoint=self.endpoint,
                    cache_dir=self.cache_dir,
                    local_dir=self.local_dir,
                    token=self.token,
                    local_files_only=self.offline,
                )
            )

    def commit_of(self, filename: str, revision: str) -> str:
        """The commit a branch or tag points to now (one HEAD request)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        with self._errors(filename, revision, downloading=False):
            url = hf_hub_url(self.repo_id, filename, revision=revision, endpoint=self.endpoint)
            return get_hf_file_metadata(url, token=self.token).commit_hash

    def commit_in_path(self, path: Path) -> str | None:
        """The commit of a cached file: ``<cache>/models--org--name/snapshots/<commit>/<filename>``."""
        if self.local_dir is not None:
            return None
        snapshots = self.cache_dir / ("models--" + self.repo_id.replace("/", "--")) / "snapshots"
        try:
            return path.relative_to(snapshots).parts[0]
        except ValueError:
            return None

    def sha256(self, path: Path) -> str:
        """The file's sha256, hashed again only if its size or modification time changed since the last pull.

        The record is kept in the cache, keyed by the file's real path (a blob, or a ``local_dir`` copy).
        It only saves time: a cache the user cannot write to (a read-only shared cache) goes without.
        """
        real = path.resolve()
        stat = real.stat()
        record = self.cache_dir / ".zoo-sha256" / hashlib.sha1(str(real).encode()).hexdigest()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            seen = json.loads(record.read_text())
            if (seen["path"], seen["size"], seen["mtime_ns"]) == (str(real), stat.st_size, stat.st_mtime_ns):
                return seen["sha256"]
        digest = file_sha256(real)
        with contextlib.suppress(OSError):
            atomic_write_text(
                record,
                json.dumps({"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}),
            )
        return digest

    @contextlib.contextmanager
    def _errors(self, filename: str, revision: str, downloading: bool) -> Iterator[None]:
        """Turn the Hub client's exceptions into messages that say what to do."""
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = f"{self.repo_id}@{revision}/{filename}"
        repo = f"repository {self.repo_id}"
        cache = self.local_dir or self.cache_dir
        check = "check the card's hub fields (or --revision) and HF_ENDPOINT"
        try:
            yield
        except LocalEntryNotFoundError as exc:
            cause = exc.__cause__
            if self.offline or isinstance(cause, OfflineModeIsEnabled):
                raise DataError(
                    f"HF_HUB_OFFLINE is set and {where} is not in the cache {cache}; "
                    "unset HF_HUB_OFFLINE, or pull it once online"
                ) from None
            if isinstance(cause, HfHubHTTPError) and cause.response is not None:
                raise DataError(
                    f"{self.endpoint} answered HTTP {cause.response.status_code} for {where} and the cache "
                    f"has no copy; the revision may not exist, or the server failed: {check}, "
                    "or retry later"
                ) from None
            raise DataError(
                f"cannot reach {self.endpoint} to download {where}: {_reason(cause or exc)}; check "
                f"HF_ENDPOINT and the network, or set HF_HUB_OFFLINE=1 to use the cache {cache}"
            ) from None
        except RevisionNotFoundError:
            raise DataError(f"{self.endpoint}: {repo} has no revision {revision!r}; {check}") from None
        except EntryNotFoundError:
            # Mirrors answer a missing repository at a commit id this way too.
            raise DataError(
                f"{self.endpoint}: no file {filename!r} in {repo} at revision {revision}; "
                "check the card's hub.repo_id and hub.filename (was the file pushed?)"
            ) from None
        except GatedRepoError:
            raise DataError(f"{self.endpoint}: {repo} is gated; accept its terms on the Hub and set HF_TOKEN") from None
        except RepositoryNotFoundError:
            raise DataError(
                f"{self.endpoint} has no {repo} with a revision {revision!r} (or it is private: set HF_TOKEN); {check}"
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise DataError(
                f"{self.endpoint} answered HTTP {status} for {where}: {_reason(exc)}; {check}, or retry later"
            ) from None
        except transport_errors() as exc:
            if not downloading:
                raise DataError(
                    f"cannot reach {self.endpoint} to resolve {where}: {_reason(exc)}; check HF_ENDPOINT "
                    "and the network, or pull a full commit id with HF_HUB_OFFLINE=1"
                ) from None
            raise DataError(
                f"the download of {where} from {self.endpoint} failed or was cut short: {_reason(exc)}; "
                "nothing partial was kept; check the network and the disk space, and pull again"
            ) from None


def transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and I/O errors of whichever HTTP library this ``huggingface_hub`` uses."""
    errors: list[type[BaseException]] = [OSError]  # requests' errors are OSErrors; so is a size mismatch
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(importlib.import_module(module), name))
    return tuple(errors)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _remove_download(path: Path) -> None:
    """Drop a downloaded file: the snapshot link and the blob it points to, or a plain copy."""
    if path.is_symlink():
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
    else:
        path.unlink(missing_ok=True)
