"""A small Hugging Face Hub-compatible server, so an air-gapped team can run its own hub.

It speaks the part of the Hub protocol that ``huggingface_hub`` uses to publish and fetch
model files: create a repo, preupload (every file is "regular": no LFS or Xet storage), an
NDJSON commit, branches, pull requests (``refs/pr/N``) and ``/resolve`` downloads with
``X-Repo-Commit``, a quoted ``ETag`` (the git blob sha1), ``Content-Length`` and ``Range``.
Errors carry the ``X-Error-Code`` the client turns into its exception classes.

Layout under the root directory (every write is atomic)::

    blobs/<sha256>                                 file contents, content-addressed
    repos/<type>s/<org>/<name>/repo.json           {"private", "refs": {ref: commit}, "discussions", "created"}
    repos/<type>s/<org>/<name>/commits/<oid>.json  {"parent", "tree": {path: {sha256, sha1, size}}, ...}

Private repositories are visible only to requests that carry a token (``Authorization:
Bearer ...``). The server does not check whose token it is: it is a hub for a trusted network.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from ..fileio import atomic_write_bytes

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
NAME_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
OID_RE = re.compile(r"^[0-9a-f]{40}$")
MAX_JSON_BYTES = 16 << 20  # preupload of many files, a README to validate
MAX_COMMIT_BYTES = 16 << 30  # base64 file contents: a large model and its config
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An error answer: HTTP status, message, and the ``X-Error-Code`` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None,
                 body: Optional[dict] = None):
        super().__init__(message)
        self.status, self.code, self.headers, self.body = status, code, headers or {}, body or {}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def check_repo_id(org: str, name: str) -> str:
    for part in (org, name):
        if not NAME_PART_RE.match(part) or ".." in part:
            raise HubError(400, f"invalid repository name {org}/{name}: use ORG/NAME with letters, digits, "
                                "'-', '_' and '.' (no '..')")
    return f"{org}/{name}"


def check_file_path(path: Any) -> str:
    """A relative POSIX path inside the repo: no '..', no absolute path, no backslash."""
    parts = path.split("/") if isinstance(path, str) else [""]
    if (not isinstance(path, str) or len(path) > 1000 or "\\" in path or "\0" in path
            or any(part in ("", ".", "..") for part in parts)):
        raise HubError(400, f"invalid file path {path!r}: it must be relative, without '..', '.' or empty parts")
    return path


class Store:
    """Repositories, commits and blobs on disk; one lock serialises changes to refs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> dict:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob_path(sha256).exists():
            atomic_write_bytes(self.blob_path(sha256), data)
        return {"sha256": sha256, "sha1": git_blob_sha1(data), "size": len(data)}

    def _write_json(self, path: Path, data: dict) -> None:
        atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())

    def repo(self, repo_type: str, repo_id: str, authorized: bool) -> dict:
        """The repo's metadata; a private repo is "not found" without a token, as on the Hub."""
        path = self._repo_dir(repo_type, repo_id) / "repo.json"
        meta = json.loads(path.read_text()) if path.is_file() else None
        if meta is None or (meta["private"] and not authorized):
            raise HubError(404, f"Repository {repo_id} not found" + ("" if meta is None else
                           " (it may be private: send a token)"), "RepoNotFound")
        return meta

    def save_repo(self, repo_type: str, repo_id: str, meta: dict) -> None:
        self._write_json(self._repo_dir(repo_type, repo_id) / "repo.json", meta)

    def commit(self, repo_type: str, repo_id: str, oid: str) -> dict:
        return json.loads((self._repo_dir(repo_type, repo_id) / "commits" / f"{oid}.json").read_text())

    def resolve(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> tuple[Optional[str], str]:
        """A branch name, a full ref (``refs/pr/1``) or a full commit id -> (ref or None, commit id)."""
        for ref in (revision, f"refs/heads/{revision}"):
            if ref in meta["refs"]:
                return ref, meta["refs"][ref]
        if OID_RE.match(revision) and (self._repo_dir(repo_type, repo_id) / "commits" / f"{revision}.json").is_file():
            return None, revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self.lock:
            if (self._repo_dir(repo_type, repo_id) / "repo.json").is_file():
                raise HubError(409, f"You already created this {repo_type} repo")
            meta = {"private": private, "refs": {}, "discussions": [], "created": _now()}
            # Like the Hub: a new repo starts with one commit, so `main` exists.
            oid = self._write_commit(repo_type, repo_id, None, {".gitattributes": self.put_blob(GITATTRIBUTES)},
                                     "initial commit", "")
            meta["refs"]["refs/heads/main"] = oid
            self.save_repo(repo_type, repo_id, meta)

    def _write_commit(self, repo_type: str, repo_id: str, parent: Optional[str], tree: dict, title: str,
                      message: str) -> str:
        body = {"parent": parent, "tree": dict(sorted(tree.items())), "title": title, "message": message,
                "date": _now()}
        oid = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self._write_json(self._repo_dir(repo_type, repo_id) / "commits" / f"{oid}.json", body)
        return oid

    def _open_pr(self, meta: dict, title: str, description: str, base_ref: str, head: str) -> int:
        number = len(meta["discussions"]) + 1
        meta["discussions"].append({"num": number, "title": title, "description": description, "isPullRequest": True,
                                    "status": "open", "base": base_ref, "createdAt": _now()})
        meta["refs"][f"refs/pr/{number}"] = head
        return number

    def commit_files(self, repo_type: str, repo_id: str, authorized: bool, revision: str, header: dict,
                     added: dict, deleted: list[str], create_pr: bool) -> tuple[str, Optional[int]]:
        """Commit onto a branch or ``refs/pr/N`` (or a new PR based on ``revision``); returns (oid, PR number)."""
        with self.lock:
            meta = self.repo(repo_type, repo_id, authorized)
            ref, head = self.resolve(repo_type, repo_id, meta, revision)
            if ref is None or not ref.startswith(("refs/heads/", "refs/pr/")):
                raise HubError(400, f"cannot commit to {revision}: it is not a branch or a pull request ref")
            parent_commit = header.get("parentCommit")
            if create_pr:
                parent = parent_commit or head
                if parent_commit:
                    self.resolve(repo_type, repo_id, meta, parent_commit)
            else:
                if parent_commit and parent_commit != head:
                    raise HubError(412, f"A commit has happened since: parentCommit {parent_commit} is not the "
                                        f"head {head} of {revision}")
                parent = head
            tree = dict(self.commit(repo_type, repo_id, parent)["tree"])
            for path in deleted:
                if path not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del tree[path]
            tree.update(added)
            oid = self._write_commit(repo_type, repo_id, parent, tree, header.get("summary", ""),
                                     header.get("description", ""))
            number = None
            if create_pr:
                number = self._open_pr(meta, header.get("summary", ""), header.get("description", ""), ref, oid)
            else:
                meta["refs"][ref] = oid
            self.save_repo(repo_type, repo_id, meta)
            return oid, number

    def create_branch(self, repo_type: str, repo_id: str, authorized: bool, branch: str,
                      starting_point: Optional[str]) -> None:
        check_file_path(branch)  # a branch name is a path-like string: same rules
        with self.lock:
            meta = self.repo(repo_type, repo_id, authorized)
            if f"refs/heads/{branch}" in meta["refs"]:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            meta["refs"][f"refs/heads/{branch}"] = self.resolve(repo_type, repo_id, meta, starting_point or "main")[1]
            self.save_repo(repo_type, repo_id, meta)

    def create_pr(self, repo_type: str, repo_id: str, authorized: bool, title: str, description: str) -> int:
        """An open PR on ``main`` whose ref starts at main's head (the upload pipeline then commits onto it)."""
        with self.lock:
            meta = self.repo(repo_type, repo_id, authorized)
            number = self._open_pr(meta, title, description, "refs/heads/main", meta["refs"]["refs/heads/main"])
            self.save_repo(repo_type, repo_id, meta)
            return number

    def history(self, repo_type: str, repo_id: str, oid: Optional[str]) -> Iterator[tuple[str, dict]]:
        while oid:
            commit = self.commit(repo_type, repo_id, oid)
            yield oid, commit
            oid = commit["parent"]


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "zoo-hub"
    store: Store
    log_requests = False

    def log_message(self, format: str, *args: Any) -> None:
        if self.log_requests:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        self.server.open_connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_GET

    # --- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: Union[bytes, dict, list] = b"", headers: Optional[dict] = None) -> None:
        headers = dict(headers or {})
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")  # so the client does not reuse it
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _content_length(self, limit: int) -> int:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            raise HubError(411, "send the request body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise HubError(400, "Content-Length is not a number") from None
        if length > limit:
            self.close_connection = True  # the body stays unread
            raise HubError(413, f"request body of {length} bytes is over the limit of {limit}")
        return length

    def _json_body(self) -> dict:
        data = self.rfile.read(self._content_length(MAX_JSON_BYTES))
        try:
            body = json.loads(data or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            raise HubError(400, "the request body must be a JSON object")
        return body

    def _base_url(self) -> str:
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self._base_url()}/{URL_PREFIX[repo_type]}{repo_id}"

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        # Split before unquoting: a revision like refs%2Fpr%2F1 is one segment.
        parts = [unquote(p) for p in url.path.split("/")[1:]]
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        try:
            if parts[:1] == ["api"]:
                self._api(parts[1:])
            else:
                self._resolve(parts)
        except HubError as exc:
            headers = {**exc.headers, "X-Error-Message": str(exc)}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            if self.command == "POST":
                self.close_connection = True  # the request body may be partly unread
            self._send(exc.status, {"error": str(exc), **exc.body}, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer
        except Exception as exc:  # a bug or a full disk: answer and keep serving the other requests
            self.log_error("internal error on %s %s: %r", self.command, self.path, exc)
            self.close_connection = True
            self._send(500, {"error": f"internal error: {exc!r}"}, {"X-Error-Message": "internal error"})

    def log_error(self, format: str, *args: Any) -> None:
        BaseHTTPRequestHandler.log_message(self, format, *args)  # errors are shown even when requests are not

    def _api(self, parts: list[str]) -> None:
        method = self.command
        if method == "POST" and parts == ["repos", "create"]:
            return self._create_repo()
        if method == "POST" and parts == ["validate-yaml"]:
            return self._validate_yaml()
        if len(parts) < 3 or parts[0] not in REPO_TYPES:
            raise HubError(404, f"not found: {method} {self.path} is not part of the API this hub serves")
        repo_type, repo_id, action, rest = REPO_TYPES[parts[0]], check_repo_id(*parts[1:3]), parts[3:4], parts[4:]
        meta = self.store.repo(repo_type, repo_id, self.authorized)
        route = (method, action[0] if action else "", len(rest))
        if route in {("GET", "", 0), ("GET", "revision", 1)}:
            return self._info(repo_type, repo_id, meta, rest[0] if rest else "main")
        if route == ("POST", "preupload", 1):
            return self._preupload(repo_type, repo_id, meta, rest[0])
        if route == ("POST", "commit", 1):
            return self._commit(repo_type, repo_id, rest[0])
        if route == ("GET", "commits", 1):
            _, oid = self.store.resolve(repo_type, repo_id, meta, rest[0])
            history = self.store.history(repo_type, repo_id, oid)
            return self._send(200, [{"id": o, "title": c["title"], "message": c["message"], "date": c["date"],
                                     "authors": [{"user": "zoo"}]} for o, c in history])
        if route == ("GET", "refs", 0):
            return self._refs(meta)
        if method == "POST" and action == ["branch"] and rest:
            body = self._json_body()
            self.store.create_branch(repo_type, repo_id, self.authorized, "/".join(rest), body.get("startingPoint"))
            return self._send(200, {})
        if route == ("POST", "discussions", 0):
            body = self._json_body()
            if not body.get("pullRequest"):
                raise HubError(400, "this hub has pull requests only, not plain discussions")
            number = self.store.create_pr(repo_type, repo_id, self.authorized, str(body.get("title", "")),
                                          str(body.get("description", "")))
            web_url = f"{self._repo_url(repo_type, repo_id)}/discussions/{number}"
            return self._send(200, {"num": number, "url": {"web": web_url}})
        if route == ("GET", "discussions", 1):
            return self._discussion(repo_type, repo_id, meta, rest[0])
        raise HubError(404, f"not found: {method} {self.path} is not part of the API this hub serves")

    # --- API endpoints ------------------------------------------------------------------------

    def _create_repo(self) -> None:
        body = self._json_body()
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"unknown repository type {repo_type!r}")
        if not body.get("organization"):
            raise HubError(400, "a repository id needs an organization: ORG/NAME")
        repo_id = check_repo_id(str(body["organization"]), str(body.get("name", "")))
        private = body.get("visibility", "public") != "public" or bool(body.get("private"))
        if private and not self.authorized:
            raise HubError(401, "creating a private repository needs a token (set HF_TOKEN)")
        url = self._repo_url(repo_type, repo_id)
        try:
            self.store.create_repo(repo_type, repo_id, private)
        except HubError as exc:
            exc.body["url"] = url  # create_repo(exist_ok=True) reads the url from the 409 answer
            raise
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self) -> None:
        content = str(self._json_body().get("content", ""))
        front = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, re.S)
        errors = []
        if front:
            try:
                if not isinstance(yaml.safe_load(front.group(1)) or {}, dict):
                    errors.append({"message": "the metadata block must be a YAML mapping"})
            except yaml.YAMLError as exc:
                errors.append({"message": f"the metadata block is not valid YAML: {exc}"})
        self._send(400 if errors else 200, {"errors": errors, "warnings": []})

    def _info(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> None:
        _, oid = self.store.resolve(repo_type, repo_id, meta, revision)
        commit = self.store.commit(repo_type, repo_id, oid)
        with_blobs = self.query.get("blobs", "").lower() == "true"
        siblings = [{"rfilename": path, **({"size": e["size"], "blobId": e["sha1"]} if with_blobs else {})}
                    for path, e in commit["tree"].items()]
        self._send(200, {"id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
                         "sha": oid, "private": meta["private"], "disabled": False, "gated": False,
                         "lastModified": commit["date"], "createdAt": meta["created"], "tags": [], "downloads": 0,
                         "likes": 0, "siblings": siblings})

    def _preupload(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> None:
        files = self._json_body().get("files")
        if not isinstance(files, list):
            raise HubError(400, "preupload expects {'files': [{'path', 'size', 'sample'}]}")
        _, oid = self.store.resolve(repo_type, repo_id, meta, revision)
        tree = self.store.commit(repo_type, repo_id, oid)["tree"]
        answers = []
        for item in files:
            path = check_file_path(item.get("path") if isinstance(item, dict) else None)
            # "regular": the content comes inline in the commit; this hub has no LFS or Xet storage.
            answers.append({"path": path, "uploadMode": "regular", "shouldIgnore": False,
                            **({"oid": tree[path]["sha1"]} if path in tree else {})})
        self._send(200, {"files": answers})

    def _ndjson_lines(self) -> Iterator[dict]:
        remaining = self._content_length(MAX_COMMIT_BYTES)
        while remaining > 0:
            line = self.rfile.readline(remaining)
            if not line:
                raise HubError(400, "the commit body ended early")
            remaining -= len(line)
            if line.strip():
                try:
                    item = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise HubError(400, "the commit body is not NDJSON (one JSON object per line)") from None
                if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
                    raise HubError(400, "each commit line must be {'key': ..., 'value': {...}}")
                yield item

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        # Stream the body: each file is decoded and stored as its line arrives; refs change only at the end.
        header, added, deleted = {}, {}, []
        for item in self._ndjson_lines():
            key, value = item.get("key"), item["value"]
            if key == "header":
                header = value
            elif key == "file":
                path = check_file_path(value.get("path"))
                content = value.get("content", "")
                try:
                    if value.get("encoding") == "base64":
                        data = base64.b64decode(content, validate=True)
                    else:
                        data = content.encode()
                except (binascii.Error, AttributeError, TypeError, ValueError):
                    raise HubError(400, f"{path}: content must be a string (base64 with encoding: base64)") from None
                added[path] = self.store.put_blob(data)
            elif key == "deletedFile":
                deleted.append(check_file_path(value.get("path")))
            elif key == "lfsFile":
                raise HubError(400, "this hub stores files inline only (preupload answers 'regular'); "
                                    "LFS and Xet uploads are not supported")
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        create_pr = self.query.get("create_pr") == "1"
        oid, number = self.store.commit_files(repo_type, repo_id, self.authorized, revision, header, added, deleted,
                                              create_pr)
        url = self._repo_url(repo_type, repo_id)
        self._send(200, {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}",
                         "pullRequestUrl": f"{url}/discussions/{number}" if number else None})

    def _refs(self, meta: dict) -> None:
        def listed(prefix: str, full_name: bool) -> list[dict]:
            return [{"name": ref if full_name else ref[len(prefix):], "ref": ref, "targetCommit": oid}
                    for ref, oid in sorted(meta["refs"].items()) if ref.startswith(prefix)]

        answer = {"branches": listed("refs/heads/", False), "tags": [], "converts": []}
        if self.query.get("include_prs"):
            answer["pullRequests"] = listed("refs/pr/", True)
        self._send(200, answer)

    def _discussion(self, repo_type: str, repo_id: str, meta: dict, number: str) -> None:
        found = [d for d in meta["discussions"] if str(d["num"]) == number]
        if not found:
            raise HubError(404, f"discussion {number} not found in {repo_id}")
        d = found[0]
        self._send(200, {"num": d["num"], "title": d["title"], "status": d["status"], "createdAt": d["createdAt"],
                         "isPullRequest": True, "author": {"name": "zoo"}, "events": [],
                         "repo": {"name": repo_id, "type": repo_type}, "changes": {"base": d["base"]},
                         "filesWithConflicts": [], "diff": None})

    # --- downloads ------------------------------------------------------------------------------

    def _resolve(self, parts: list[str]) -> None:
        repo_type = "model"
        if parts[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if self.command not in ("GET", "HEAD") or len(parts) < 5 or parts[2] != "resolve":
            raise HubError(404, f"not found: {self.command} {self.path}")
        repo_id = check_repo_id(*parts[:2])
        revision, filename = parts[3], "/".join(parts[4:])
        meta = self.store.repo(repo_type, repo_id, self.authorized)
        _, oid = self.store.resolve(repo_type, repo_id, meta, revision)
        entry = self.store.commit(repo_type, repo_id, oid)["tree"].get(filename)
        if entry is None:  # with X-Repo-Commit the client caches that the file does not exist at this commit
            raise HubError(404, f"Entry not found: {filename} at {oid}", "EntryNotFound", {"X-Repo-Commit": oid})
        size = entry["size"]
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry["sha1"]}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename.rsplit('/', 1)[-1])}"}
        start, end, status = 0, size - 1, 200
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")) if self.command == "GET" else None
        if wanted:
            start, end = int(wanted[1]), min(int(wanted[2] or size - 1), size - 1)
            if start >= size or end < start:
                raise HubError(416, f"range {self.headers['Range']} is outside the file's {size} bytes",
                               headers={"Content-Range": f"bytes */{size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.command == "GET":
            with open(self.store.blob_path(entry["sha256"]), "rb") as f:
                f.seek(start)
                _copy(f, self.wfile, end - start + 1)


def _copy(source, target, count: int, chunk: int = 1 << 20) -> None:
    while count > 0:
        data = source.read(min(chunk, count))
        if not data:
            break
        target.write(data)
        count -= len(data)


class HubServer:
    """``HubServer(root).start()`` serves ``root`` on a background thread until :meth:`stop`.

    ``port=0`` picks a free port; :attr:`url` is the value for ``HF_ENDPOINT``. Also a
    context manager: ``with HubServer(root) as hub: ...``.
    """

    def __init__(self, root: Union[str, Path], host: str = "127.0.0.1", port: int = 0, log_requests: bool = False):
        handler = type("Handler", (HubRequestHandler,), {"store": Store(Path(root)), "log_requests": log_requests})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._server.open_connections = set()  # kept-alive client connections, closed by stop()
        self._thread: Optional[threading.Thread] = None
        host, port = self._server.server_address[:2]
        self.url = f"http://{'[%s]' % host if ':' in host else host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._server.serve_forever, name="zoo-hub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (``zoo hub serve``); Ctrl-C ends it."""
        try:
            self._server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, and end kept-alive connections too: a stopped hub answers nothing."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        for connection in list(self._server.open_connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
