"""The repositories, commits and blobs of a hub root, shared by every ``zoo hub serve`` process on it.

Layout under the root (every JSON file is written atomically)::

    blobs/<sha256>                                 file contents, content-addressed
    repos/<type>s/<org>/<name>/repo.json           {"private", "refs": {ref: commit}, "discussions", "created"}
    repos/<type>s/<org>/<name>/commits/<oid>.json  {"parent", "tree": {path: {sha256, sha1, size[, lfs]}}, ...}
    tmp/                                           uploads in progress, LFS objects waiting for their commit
    hub.lock                                       held while refs or blobs/ change
    upload.key                                     signs LFS upload URLs (made on first use)

An upload is written to ``tmp/`` and moved into ``blobs/`` under the lock, together with the
commit that references it: a refused or interrupted upload leaves nothing in ``blobs/``, and
``zoo hub gc`` (which takes the same lock) never removes a blob a commit is about to use.
This module needs no web framework: ``zoo hub gc`` works without the hub-server extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from ..errors import ConfigError, DataError
from ..fileio import atomic_write_bytes

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
NAME_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
OID_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
LOCK_NAME = "hub.lock"
UPLOAD_KEY_NAME = "upload.key"
# Temporary files not written to for this long belong to no live upload (a stalled one is cut much sooner).
STALE_TEMP_SECONDS = 3600
CHUNK = 1 << 20


class HubError(Exception):
    """An error answer: HTTP status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, body: dict | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.headers, self.body = status, code, headers or {}, body or {}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_sha1(sha256: str, size: int) -> str:
    """The git blob id of an LFS file's pointer (the Hub's ``blobId`` for it)."""
    return git_blob_sha1(lfs_pointer(sha256, size))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def check_repo_id(org: str, name: str) -> str:
    for part in (org, name):
        if not NAME_PART_RE.match(part) or ".." in part:
            raise HubError(
                400,
                f"invalid repository name {org}/{name}: use ORG/NAME with letters, digits, '-', '_' and '.' (no '..')",
            )
    return f"{org}/{name}"


def check_file_path(path: Any) -> str:
    """A relative POSIX path inside the repo: no '..', no absolute path, no backslash, no control character."""
    parts = path.split("/") if isinstance(path, str) else [""]
    if (
        not isinstance(path, str)
        or len(path) > 1000
        or "\\" in path
        or any(ord(c) < 32 or c == "\x7f" for c in path)
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise HubError(400, f"invalid file path {path!r}: it must be relative, without '..', '.' or empty parts")
    return path


@dataclass
class Staged:
    """File contents ready to be committed: a file in ``tmp/`` (or already in ``blobs/``) and its hashes."""

    sha256: str
    sha1: str  # the git blob id: of the contents, or of the LFS pointer for an LFS file
    size: int
    path: Path | None  # None: the blob is already in blobs/
    lfs: bool = False

    def entry(self) -> dict:
        return {"sha256": self.sha256, "sha1": self.sha1, "size": self.size, **({"lfs": True} if self.lfs else {})}

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class BlobWriter:
    """Streams file contents into a temporary file of the store, hashing them as they come, within a size limit."""

    def __init__(self, store: Store, max_size: int, name: str):
        self.store, self.max_size, self.name = store, max_size, name
        self.path, self._file = store.new_temp()
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_size:
            raise HubError(413, f"{self.name} is over this hub's limit of {self.max_size} bytes per file")
        self._sha256.update(data)
        self._file.write(data)

    def finish(self, lfs: bool) -> Staged:
        """Flush to disk; a regular file also gets its git blob sha1 (which needs the size first: a second pass)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._sha256.hexdigest()
        if lfs:
            return Staged(sha256, lfs_pointer_sha1(sha256, self.size), self.size, self.path, lfs=True)
        sha1 = hashlib.sha1(b"blob %d\0" % self.size)
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK):
                sha1.update(chunk)
        return Staged(sha256, sha1.hexdigest(), self.size, self.path)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class Store:
    """Repositories, commits and blobs on disk; a file lock on the root serialises every change to refs."""

    def __init__(self, root: Path, create: bool = True):
        """``create=False`` makes no folder (``zoo hub gc --dry-run`` writes nothing)."""
        self.root = Path(root)
        self.blobs, self.tmp = self.root / "blobs", self.root / "tmp"
        if create:
            for folder in (self.blobs, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        self._upload_key: bytes | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads (each acquisition opens its own descriptor of the lock file)."""
        with FileLock(self.root / LOCK_NAME):
            yield

    def new_temp(self) -> tuple[Path, BinaryIO]:
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        return Path(name), os.fdopen(fd, "wb")

    def upload_key(self) -> bytes:
        """The secret that signs LFS upload URLs, shared by every process serving this root."""
        if self._upload_key is None:
            path = self.root / UPLOAD_KEY_NAME
            if not path.is_file():
                fd, name = tempfile.mkstemp(dir=self.tmp)  # readable by the owner only
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
                with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                    os.link(name, path)
                os.unlink(name)
            self._upload_key = path.read_bytes()
        return self._upload_key

    def lfs_pending_path(self, repo_type: str, repo_id: str, sha256: str) -> Path:
        """Where an LFS object uploaded for this repo waits for the commit that adds it."""
        return self.tmp / f"lfs~{repo_type}~{repo_id.replace('/', '~')}~{sha256}"

    def remove_stale_temp(self, max_age: float = STALE_TEMP_SECONDS, dry_run: bool = False) -> list[tuple[Path, int]]:
        """Temporary files of uploads that were killed (or never committed), untouched for ``max_age`` seconds."""
        removed = []
        deadline = time.time() - max_age
        for path in sorted(self.tmp.iterdir()) if self.tmp.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):  # another process may be cleaning too
                info = path.stat()
                if path.is_file() and info.st_mtime < deadline:
                    if not dry_run:
                        path.unlink()
                    removed.append((path, info.st_size))
        return removed

    def collect_garbage(self, dry_run: bool = False) -> list[tuple[Path, int]]:
        """Remove the blobs no commit references, and stale temporary files; returns (path, size) of each.

        A dry run takes no lock (taking it creates the lock file): it writes nothing.
        """
        if not self.blobs.is_dir():
            raise ConfigError(
                f"{self.root} is not a hub root (it has no blobs/ folder); give the folder `zoo hub serve` serves"
            )
        try:
            with contextlib.nullcontext() if dry_run else self.locked():
                return self._collect_garbage(dry_run)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise DataError(
                f"cannot collect garbage in {self.root}: {where}{exc.strerror or exc}; "
                "check that this user may write there, then run it again"
            ) from None

    def _collect_garbage(self, dry_run: bool) -> list[tuple[Path, int]]:
        referenced: set[str] = set()
        for commit_file in sorted((self.root / "repos").glob("*/*/*/commits/*.json")):
            try:
                referenced.update(entry["sha256"] for entry in json.loads(commit_file.read_bytes())["tree"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise DataError(
                    f"{commit_file}: not a readable commit, so the blobs it names are unknown; "
                    "restore it from a backup before collecting garbage (nothing was removed)"
                ) from None
        removed = []
        for blob in sorted(self.blobs.iterdir()):
            info = blob.lstat()
            if blob.name not in referenced and stat.S_ISREG(info.st_mode):  # a folder here is nobody's blob
                removed.append((blob, info.st_size))
                if not dry_run:
                    blob.unlink()
        return removed + self.remove_stale_temp(dry_run=dry_run)

    # --- repositories and commits ------------------------------------------------------------

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def blob_path(self, sha256: str) -> Path:
        return self.blobs / sha256

    def _write_json(self, path: Path, data: dict) -> None:
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())

    def repo(self, repo_type: str, repo_id: str, can_read_private: bool) -> dict:
        """The repo's metadata; a private repo is "not found" without read access, as on the Hub (same message)."""
        path = self._repo_dir(repo_type, repo_id) / "repo.json"
        meta = json.loads(path.read_bytes()) if path.is_file() else None
        if meta is None or (meta["private"] and not can_read_private):
            raise HubError(
                404, f"Repository {repo_id} not found (if it is private, send a token with read access)", "RepoNotFound"
            )
        return meta

    def save_repo(self, repo_type: str, repo_id: str, meta: dict) -> None:
        self._write_json(self._repo_dir(repo_type, repo_id) / "repo.json", meta)

    def commit(self, repo_type: str, repo_id: str, oid: str) -> dict:
        return json.loads((self._repo_dir(repo_type, repo_id) / "commits" / f"{oid}.json").read_bytes())

    def resolve(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> tuple[str | None, str]:
        """A branch name, a full ref (``refs/pr/1``) or a full commit id -> (ref or None, commit id)."""
        for ref in (revision, f"refs/heads/{revision}"):
            if ref in meta["refs"]:
                return ref, meta["refs"][ref]
        if OID_RE.match(revision) and (self._repo_dir(repo_type, repo_id) / "commits" / f"{revision}.json").is_file():
            return None, revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def repo_blobs(self, repo_type: str, repo_id: str) -> set[str]:
        """The sha256 of every file in any commit of the repo."""
        found: set[str] = set()
        for commit_file in (self._repo_dir(repo_type, repo_id) / "commits").glob("*.json"):
            found.update(entry["sha256"] for entry in json.loads(commit_file.read_bytes())["tree"].values())
        return found

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self.locked():
            if (self._repo_dir(repo_type, repo_id) / "repo.json").is_file():
                raise HubError(409, f"You already created this {repo_type} repo")
            # Like the Hub: a new repo starts with one commit, so `main` exists.
            blob = self.blob_path(hashlib.sha256(GITATTRIBUTES).hexdigest())
            if not blob.exists():
                atomic_write_bytes(blob, GITATTRIBUTES)
            entry = Staged(blob.name, git_blob_sha1(GITATTRIBUTES), len(GITATTRIBUTES), None).entry()
            oid = self._write_commit(repo_type, repo_id, None, {".gitattributes": entry}, "initial commit", "")
            meta = {"private": private, "refs": {"refs/heads/main": oid}, "discussions": [], "created": _now()}
            self.save_repo(repo_type, repo_id, meta)

    def _write_commit(
        self, repo_type: str, repo_id: str, parent: str | None, tree: dict, title: str, message: str
    ) -> str:
        body = {"parent": parent, "tree": dict(sorted(tree.items())), "title": title, "message": message}
        body["date"] = _now()
        oid = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self._write_json(self._repo_dir(repo_type, repo_id) / "commits" / f"{oid}.json", body)
        return oid

    def _open_pr(self, meta: dict, title: str, description: str, base_ref: str, head: str) -> int:
        number = len(meta["discussions"]) + 1
        pr = {"num": number, "title": title, "description": description, "isPullRequest": True, "status": "open"}
        meta["discussions"].append({**pr, "base": base_ref, "createdAt": _now()})
        meta["refs"][f"refs/pr/{number}"] = head
        return number

    def lfs_object(self, repo_type: str, repo_id: str, sha256: str, present: set[str]) -> tuple[Path, int] | None:
        """Where the repo has this LFS object, and its size: uploaded and waiting in tmp/, or in blobs/ when one
        of its commits has it (``present``: :meth:`repo_blobs`); None if it has not."""
        places = [self.lfs_pending_path(repo_type, repo_id, sha256)]
        if sha256 in present:
            places.append(self.blob_path(sha256))
        for path in places:
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                if stat.S_ISREG(info.st_mode):
                    return path, info.st_size
        return None

    def _claim_lfs(self, repo_type: str, repo_id: str, staged: Staged, present: set[str]) -> None:
        """An LFS file of a commit: its size must be the stored object's, which ``/resolve`` then announces."""
        found = self.lfs_object(repo_type, repo_id, staged.sha256, present)
        if found is None:
            raise HubError(
                400,
                f"LFS object {staged.sha256} ({staged.size} bytes) was not uploaded to {repo_id}: "
                "upload it through the LFS batch API first",
            )
        path, size = found
        if size != staged.size:
            raise HubError(400, f"LFS object {staged.sha256} is {size} bytes, not the {staged.size} the commit says")
        if path != self.blob_path(staged.sha256):
            staged.path = path

    def _adopt(self, staged: Staged) -> None:
        """Move an upload into blobs/ (or drop it when the same contents are already there)."""
        if staged.path is None:
            return
        target = self.blob_path(staged.sha256)
        if target.exists():
            staged.path.unlink(missing_ok=True)
        else:
            os.replace(staged.path, target)
        staged.path = None

    def commit_files(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        header: dict,
        added: dict[str, Staged],
        deleted: list[tuple[str, bool]],
        create_pr: bool,
    ) -> tuple[str, int | None]:
        """Commit onto a branch or ``refs/pr/N`` (or a new PR based on ``revision``); returns (oid, PR number).

        ``deleted`` holds (path, is_folder). Everything is checked before anything changes; the
        uploads move into blobs/ only when the commit is sure to be written.
        """
        with self.locked():
            meta = self.repo(repo_type, repo_id, can_read_private=True)
            ref, head = self.resolve(repo_type, repo_id, meta, revision)
            if ref is None or not ref.startswith(("refs/heads/", "refs/pr/")):
                raise HubError(400, f"cannot commit to {revision}: it is not a branch or a pull request ref")
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and not isinstance(parent_commit, str):
                raise HubError(400, "parentCommit must be a commit id or a branch name")
            if create_pr:  # a PR starts from its parent, which may be a commit id or a branch name
                parent = self.resolve(repo_type, repo_id, meta, parent_commit)[1] if parent_commit else head
            else:
                if parent_commit and self._resolve_or_none(repo_type, repo_id, meta, parent_commit) != head:
                    raise HubError(
                        412, f"A commit has happened since: parentCommit {parent_commit} is not the head of {revision}"
                    )
                parent = head
            tree = dict(self.commit(repo_type, repo_id, parent)["tree"])
            for path, is_folder in deleted:
                inside = (
                    [p for p in tree if p.startswith(path.rstrip("/") + "/")] if is_folder else [path] * (path in tree)
                )
                if not inside:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del tree[p]
            claimed = [staged for staged in added.values() if staged.lfs and staged.path is None]
            present = self.repo_blobs(repo_type, repo_id) if claimed else set()  # read every commit once
            for staged in claimed:
                self._claim_lfs(repo_type, repo_id, staged, present)
            for staged in added.values():
                self._adopt(staged)
            tree.update({path: staged.entry() for path, staged in added.items()})
            title, message = str(header.get("summary", "")), str(header.get("description", ""))
            oid = self._write_commit(repo_type, repo_id, parent, tree, title, message)
            number = None
            if create_pr:
                number = self._open_pr(meta, title, message, ref, oid)
            else:
                meta["refs"][ref] = oid
            self.save_repo(repo_type, repo_id, meta)
            return oid, number

    def _resolve_or_none(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> str | None:
        try:
            return self.resolve(repo_type, repo_id, meta, revision)[1]
        except HubError:
            return None

    def create_branch(self, repo_type: str, repo_id: str, branch: str, starting_point: Any) -> None:
        check_file_path(branch)  # a branch name is a path-like string: same rules
        if starting_point is not None and not isinstance(starting_point, str):
            raise HubError(400, "startingPoint must be a branch name or a commit id")
        with self.locked():
            meta = self.repo(repo_type, repo_id, can_read_private=True)
            if f"refs/heads/{branch}" in meta["refs"]:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            meta["refs"][f"refs/heads/{branch}"] = self.resolve(repo_type, repo_id, meta, starting_point or "main")[1]
            self.save_repo(repo_type, repo_id, meta)

    def create_pr(self, repo_type: str, repo_id: str, title: str, description: str) -> int:
        """An open PR on ``main`` whose ref starts at main's head (the upload pipeline then commits onto it)."""
        with self.locked():
            meta = self.repo(repo_type, repo_id, can_read_private=True)
            number = self._open_pr(meta, title, description, "refs/heads/main", meta["refs"]["refs/heads/main"])
            self.save_repo(repo_type, repo_id, meta)
            return number

    def history(self, repo_type: str, repo_id: str, oid: str | None) -> Iterator[tuple[str, dict]]:
        while oid:
            commit = self.commit(repo_type, repo_id, oid)
            yield oid, commit
            oid = commit["parent"]
