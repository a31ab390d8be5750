"""Weights from the Hub: ``zoo pull``, sha256 verification, ``zoo.lock`` and resolving weights by name.

A card pins a repository, a full commit id and the weights' sha256. :func:`pull` downloads
``config.json`` and the weights at that commit with ``huggingface_hub`` and checks the
sha256 itself (the Hub client checks only the size): on a mismatch the file is removed
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_text
from .cards import NAME_RE, REPO_RE, SHA1_RE, SHA256_RE, Card, check_plugin, find_card
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME, read_model_config

DEFAULT_ENDPOINT = "https://huggingface.co"
LOCK_NAME = "zoo.lock"  # written next to what used the weights
LOCK_VERSION = 1
LOCK_FIELDS = ("filename", "repo_id", "revision", "sha256")
CHUNK_SIZE = 1 << 20

PathLike = Union[str, "os.PathLike[str]"]


class UnverifiedWeightsWarning(UserWarning):
    """Weights that no card or lock vouches for: their sha256 is reported and recorded instead."""


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

    ``repo_id`` and ``revision`` (the commit downloaded) are ``None``, and ``sha256`` is
    empty, for a local model directory. ``verified`` says that ``sha256`` matched the one a card or a lock gave.
    """

    name: str
    path: Path
    repo_id: Optional[str]
    revision: Optional[str]
    filename: str
    sha256: str
    verified: bool


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pull(name: str, revision: Optional[str] = None, local_dir: Optional[PathLike] = None) -> Resolved:
    """Download and verify the weights of the registry card ``name``.

    ``revision`` (a branch, tag or commit) overrides the card's; the card's sha256 then
    vouches for the file only if the bytes are the same, otherwise the pull warns with
    :class:`UnverifiedWeightsWarning`, as it does for cards marked ``verified: false``.
    ``local_dir`` puts the files there instead of the Hugging Face cache.
    """
    card = find_card(name)
    check_plugin(card)
    return _fetch(card, revision or card.hub.revision, local_dir)


def resolve_weights(ref: str, lock: Optional["Lock"] = None) -> Resolved:
    """``ref`` is a model directory (used as it is) or a registry card name (pulled).

    When ``lock`` has an entry for the card, its repository, revision and file are pulled
    and the sha256 must be the lock's, whatever the card says now.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise DataError(f"{weights} not found: {path} is not a saved model directory "
                            f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME}); check the path or train the model again")
        return Resolved(str(ref), path, None, None, WEIGHTS_NAME, "", False)  # nothing to verify against
    if not NAME_RE.match(str(ref)):  # card names have no '/': this was meant as a directory
        raise DataError(f"weights {ref!r}: no such model directory, and not a registry card name; "
                        "train the model first (zoo train) or check the path")
    card = find_card(str(ref))
    check_plugin(card)
    pin = lock.entries.get(card.name) if lock else None
    if pin is None:
        return _fetch(card, card.hub.revision, None)
    return _fetch(card, pin["revision"], None, pin=pin, pinned_by=lock.path)


class Lock:
    """``zoo.lock``: the exact weights a run used, ``name -> {repo_id, revision, filename, sha256}``.

    Written next to a run's results; a pipeline that names a lock pulls exactly these files.
    """

    def __init__(self, entries: Optional[dict[str, dict]] = None, path: Optional[Path] = None):
        self.entries: dict[str, dict] = dict(entries or {})
        self.path = path  # where it was read from, for messages

    @classmethod
    def load(cls, path: PathLike) -> "Lock":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"lock file {path} not found; check the path, or drop `lock:` to pull what the cards "
                              "name and write a new lock") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable zoo.lock ({exc}); "
                              "restore it or write a new one with a run") from None
        weights = data.get("weights") if isinstance(data, dict) else None
        if not isinstance(weights, dict) or data.get("version") != LOCK_VERSION:
            raise ConfigError(f"{path}: not a zoo.lock: expected {{\"version\": {LOCK_VERSION}, \"weights\": {{name: "
                              "{repo_id, revision, filename, sha256}}}}; restore it or write a new one with a run")
        for name, entry in weights.items():
            problem = _lock_entry_problem(entry)
            if problem:
                raise ConfigError(f"{path}: weights.{name}: {problem}; restore the file or write a new one with a run")
        return cls(weights, path)

    def save(self, path: PathLike) -> None:
        """Write atomically, keys sorted: the same weights give the same bytes."""
        text = json.dumps({"version": LOCK_VERSION, "weights": self.entries}, indent=2, sort_keys=True)
        atomic_write_text(path, text + "\n")

    def add(self, resolved: Resolved) -> None:
        if resolved.repo_id is None:
            raise ValueError(f"{resolved.name!r} is a local model directory: only Hub weights go in a lock")
        self.entries[resolved.name] = {"repo_id": resolved.repo_id, "revision": resolved.revision,
                                       "filename": resolved.filename, "sha256": resolved.sha256}


def _lock_entry_problem(entry: object) -> str:
    if not isinstance(entry, dict) or sorted(entry) != sorted(LOCK_FIELDS):
        return f"expected exactly the fields {', '.join(LOCK_FIELDS)}"
    if not all(isinstance(entry[key], str) for key in LOCK_FIELDS):
        return "every field must be a string"
    if not REPO_RE.match(entry["repo_id"]):
        return f"repo_id {entry['repo_id']!r} is not ORG/NAME"
    if not SHA1_RE.match(entry["revision"]):
        return f"revision {entry['revision']!r} is not a full 40-hex commit id"
    if not SHA256_RE.match(entry["sha256"]):
        return f"sha256 {entry['sha256']!r} is not 64 hex digits"
    return ""


# --- downloading -------------------------------------------------------------------------------


def _fetch(card: Card, revision: str, local_dir: Optional[PathLike], pin: Optional[dict] = None,
           pinned_by: Optional[Path] = None) -> Resolved:
    hub = _Hub(pin["repo_id"] if pin else card.hub.repo_id, local_dir)
    filename = pin["filename"] if pin else card.hub.filename
    if not SHA1_RE.match(revision) and not hub.offline:
        revision = hub.commit_of(filename, revision)  # both files from one commit, even if the branch moves
    weights = hub.download(filename, revision)
    commit = hub.commit_in_path(weights) or revision
    where = f"{hub.repo_id}@{commit}/{filename}"

    card_vouches = (hub.repo_id, commit, filename) == (card.hub.repo_id, card.hub.revision, card.hub.filename)
    if pin:
        expected, vouched_by = pin["sha256"], f"pinned by the lock {pinned_by or ''}".rstrip()
    elif card_vouches and card.hub.sha256:
        expected, vouched_by = card.hub.sha256, f"card {card.name!r}"
    else:
        expected, vouched_by = None, ""

    size = weights.stat().st_size
    if card_vouches and card.hub.size and size != card.hub.size:
        _remove_download(weights)
        raise DataError(f"size mismatch for {where}: expected {card.hub.size} bytes (card {card.name!r}), "
                        f"found {size}; "
                        "the file was removed from the cache and nothing was loaded; pull again, and if it persists "
                        "the repository does not hold what the card names: tell the card's maintainers")
    found = hub.sha256(weights)
    if expected and found != expected:
        _remove_download(weights)
        raise DataError(f"sha256 mismatch for {where}: expected {expected} ({vouched_by}), found {found}; "
                        "the file was removed from the cache and nothing was loaded; pull again, and if it persists "
                        "the repository does not hold what the "
                        + ("lock pins: check the lock or write a new one" if pin else
                           "card names: tell the card's maintainers"))
    verified = bool(expected) or (bool(card.hub.sha256) and found == card.hub.sha256)
    if not verified:
        reason = (f"card {card.name!r} is marked verified: false (third-party weights), so {where} was not checked "
                  "against a published hash" if not card.hub.sha256 else
                  f"{where} is not the file card {card.name!r} names ({card.hub.repo_id}@{card.hub.revision}/"
                  f"{card.hub.filename}), so the card's sha256 does not vouch for it")
        warnings.warn(f"{reason}; it has sha256 {found}: a zoo.lock records it so that later runs get these "
                      "exact bytes", UnverifiedWeightsWarning, stacklevel=3)

    config_path = hub.download(posixpath.join(posixpath.dirname(filename), CONFIG_NAME), commit)
    config = read_model_config(config_path.parent)
    num_classes = config["model"].get("num_classes")
    if num_classes != card.num_classes:
        raise DataError(f"{where}: its {CONFIG_NAME} describes a model of {num_classes} classes, card {card.name!r} "
                        f"says {card.num_classes}; the card does not belong to this repository")
    return Resolved(card.name, weights.parent, hub.repo_id, commit, filename, found, verified)


class _Hub:
    """One repository on the endpoint, with the cache and the settings of this call."""

    def __init__(self, repo_id: str, local_dir: Optional[PathLike]):
        self.repo_id = repo_id
        self.endpoint = hub_endpoint()
        self.cache_dir = hub_cache_dir()
        self.local_dir = Path(local_dir) if local_dir is not None else None
        self.offline = hub_offline()
        self.token = os.environ.get("HF_TOKEN") or None

    def download(self, filename: str, revision: str) -> Path:
        from huggingface_hub import hf_hub_download

        with self._errors(filename, revision, downloading=True):
            return Path(hf_hub_download(self.repo_id, filename, revision=revision, endpoint=self.endpoint,
                                        cache_dir=self.cache_dir, local_dir=self.local_dir, token=self.token,
                                        local_files_only=self.offline))

    def commit_of(self, filename: str, revision: str) -> str:
        """The commit a branch or tag points to now (one HEAD request)."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        with self._errors(filename, revision, downloading=False):
            url = hf_hub_url(self.repo_id, filename, revision=revision, endpoint=self.endpoint)
            return get_hf_file_metadata(url, token=self.token).commit_hash

    def commit_in_path(self, path: Path) -> Optional[str]:
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
        """
        real = path.resolve()
        stat = real.stat()
        record = self.cache_dir / ".zoo-sha256" / hashlib.sha1(str(real).encode()).hexdigest()
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            seen = json.loads(record.read_text())
            if (seen["path"], seen["size"], seen["mtime_ns"]) == (str(real), stat.st_size, stat.st_mtime_ns):
                return seen["sha256"]
        digest = file_sha256(real)
        atomic_write_text(record, json.dumps({"path": str(real), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                              "sha256": digest}))
        return digest

    @contextlib.contextmanager
    def _errors(self, filename: str, revision: str, downloading: bool) -> Iterator[None]:
        """Turn the Hub client's exceptions into messages that say what to do."""
        from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                            LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        where = f"{self.repo_id}@{revision}/{filename}"
        repo = f"repository {self.repo_id}"
        cache = self.local_dir or self.cache_dir
        check = "check the card's hub fields (or --revision) and HF_ENDPOINT"
        try:
            yield
        except LocalEntryNotFoundError as exc:
            cause = exc.__cause__
            if self.offline or isinstance(cause, OfflineModeIsEnabled):
                raise DataError(f"HF_HUB_OFFLINE is set and {where} is not in the cache {cache}; "
                                "unset HF_HUB_OFFLINE, or pull it once online") from None
            if isinstance(cause, HfHubHTTPError) and cause.response is not None:
                raise DataError(f"{self.endpoint} answered HTTP {cause.response.status_code} for {where} and the cache "
                                f"has no copy; the revision may not exist, or the server failed: {check}, "
                                "or retry later") from None
            raise DataError(f"cannot reach {self.endpoint} to download {where}: {_reason(cause or exc)}; check "
                            f"HF_ENDPOINT and the network, or set HF_HUB_OFFLINE=1 to use the cache {cache}") from None
        except RevisionNotFoundError:
            raise DataError(f"{self.endpoint}: {repo} has no revision {revision!r}; {check}") from None
        except EntryNotFoundError:
            # Mirrors answer a missing repository at a commit id this way too.
            raise DataError(f"{self.endpoint}: no file {filename!r} in {repo} at revision {revision}; "
                            "check the card's hub.repo_id and hub.filename (was the file pushed?)") from None
        except GatedRepoError:
            raise DataError(f"{self.endpoint}: {repo} is gated; accept its terms on the Hub and set HF_TOKEN") from None
        except RepositoryNotFoundError:
            raise DataError(f"{self.endpoint} has no {repo} with a revision {revision!r} (or it is "
                            f"private: set HF_TOKEN); {check}") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise DataError(f"{self.endpoint} answered HTTP {status} for {where}: {_reason(exc)}; {check}, "
                            "or retry later") from None
        except transport_errors() as exc:
            if not downloading:
                raise DataError(f"cannot reach {self.endpoint} to resolve {where}: {_reason(exc)}; check HF_ENDPOINT "
                                "and the network, or pull a full commit id with HF_HUB_OFFLINE=1") from None
            raise DataError(f"the download of {where} from {self.endpoint} failed or was cut short: {_reason(exc)}; "
                            "nothing partial was kept; check the network and the disk space, and pull again") from None


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
