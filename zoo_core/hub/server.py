"""``zoo hub serve``: a Hugging Face Hub-compatible server on Starlette and uvicorn (the hub-server extra).

It speaks the part of the Hub protocol that ``huggingface_hub`` uses to publish and fetch model
files: create a repo, preupload, an NDJSON commit (file contents inline, base64), the Git LFS
batch API with a signed PUT of the raw bytes (only for files of ``lfs_min_size`` bytes or more,
when that is set: ``huggingface_hub`` sends LFS files through Xet unless ``HF_HUB_DISABLE_XET=1``),
branches, pull requests (``refs/pr/N``) and ``/resolve`` downloads with ``X-Repo-Commit``, a
quoted ``ETag``, ``Content-Length`` and ``Range``. Errors carry the ``X-Error-Code`` and
``X-Error-Message`` the client turns into its exception classes.

Access: with a token file, writes need a ``write`` token and private repositories a ``read`` (or
``write``) token, sent as ``Authorization: Bearer TOKEN``; without one the hub is open, as on a
trusted network (any token then reads private repositories). Uploads stream to disk within
``max_file_size``; a client silent for ``request_timeout`` seconds is cut. See
:mod:`zoo_core.hub.store` for the files under the root.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import anyio
import uvicorn
import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError, DataError
from .store import (
    CHUNK,
    REPO_TYPES,
    SHA256_RE,
    BlobWriter,
    HubError,
    Staged,
    Store,
    check_file_path,
    check_repo_id,
    lfs_pointer,
    lfs_pointer_sha1,
)

log = logging.getLogger(__name__)

URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_MAX_FILE_SIZE = 5 << 30
DEFAULT_REQUEST_TIMEOUT = 60.0
MAX_JSON_BYTES = 16 << 20  # preupload of many files, a README to validate
MAX_LINE_BYTES = 1 << 20  # a commit line without its file contents: the header, a deletion
MAX_METADATA_CHARACTERS = 1 << 20  # a README's YAML metadata block that validate-yaml parses
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: faster, and it bounds the nesting itself
KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this (uvicorn's default)
LFS_URL_SECONDS = 3600  # an LFS upload URL is valid this long
TOKEN_RE = re.compile(r"^[\x21-\x7e]{16,}$")
READ_ONLY = "this hub is read-only (zoo hub serve --read-only): it takes no uploads or changes"
NO_XET = (
    "this hub has no Xet storage; it takes large files through Git LFS: set HF_HUB_DISABLE_XET=1 "
    "in the uploading environment"
)


def header_safe(text: str, limit: int = 1000) -> str:
    """Printable ASCII only, no space at the ends: user input in a header (a path, a revision) cannot add headers."""
    return re.sub(r"[^\x20-\x7e]", lambda m: ascii(m[0])[1:-1], text[:limit]).strip()


def _where(request: Request) -> str:
    return header_safe(f"{request.method} {request.scope['path']}")


class Tokens:
    """The tokens of ``--token-file``: one ``TOKEN SCOPE`` pair a line, scope ``read`` or ``write``."""

    def __init__(self, scopes: dict[str, str]):
        self._entries = [(token.encode(), scope) for token, scope in scopes.items()]

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read a token file; a bad line is a :class:`ConfigError` naming the file and line (never the token)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {path}: cannot read it ({exc})") from None
        scopes: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{path}, line {number}"
            if len(fields) != 2 or fields[1] not in ("read", "write"):
                found = f"scope {fields[1]!r}" if len(fields) == 2 else "no scope" if len(fields) == 1 else "3+ words"
                raise ConfigError(f"{where}: expected `TOKEN SCOPE` with SCOPE read or write, found {found}")
            if not TOKEN_RE.match(fields[0]):
                raise ConfigError(
                    f"{where}: a token is at least 16 printable ASCII characters without spaces "
                    "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            if fields[0] in scopes:
                raise ConfigError(f"{where}: this token is already on an earlier line; keep one")
            scopes[fields[0]] = fields[1]
        if not scopes:
            raise ConfigError(f"--token-file {path} has no tokens: write one `TOKEN SCOPE` pair a line")
        return cls(scopes)

    def scope(self, token: str) -> str | None:
        """``read``, ``write`` or None; compared in constant time against every token."""
        candidate = token.encode("latin-1", "replace")  # header values arrive as latin-1
        found = None
        for known, scope in self._entries:
            if hmac.compare_digest(known, candidate):
                found = scope
        return found


@dataclass(frozen=True)
class Access:
    token: str | None  # as sent
    scope: str | None  # read, write, or None (no token, or one the hub does not know)
    read_private: bool


class ClientGone(Exception):
    """The client closed the connection: nobody is left to answer."""


# --- the NDJSON commit, parsed as it arrives ------------------------------------------------------

OUTSIDE, STRING, CONTENT = "outside", "string", "content"


# Where the text between JSON strings stops, and where the text inside a string does: one search per step, so
# a run of escapes costs as much as its length (a find per character would scan to the end of the piece for each).
OUTSIDE_STOP = re.compile(rb'["\n]')
STRING_STOP = re.compile(rb'["\\\n]')


def _find_first(stops: re.Pattern[bytes], data: bytes, start: int) -> int:
    """The index of the first match of ``stops`` in ``data`` from ``start``, or -1."""
    found = stops.search(data, start)
    return found.start() if found else -1


class Base64Sink:
    """Decodes base64 text arriving in pieces into a :class:`BlobWriter`."""

    def __init__(self, writer: BlobWriter):
        self.writer = writer
        self.pending = b""  # fewer than 4 characters carried to the next piece
        self.padded = False

    def write(self, text: bytes) -> None:
        if not text:
            return
        if self.padded:
            raise HubError(400, f"{self.writer.name}: base64 padding '=' in the middle of the contents")
        data = self.pending + text if self.pending else text
        cut = len(data) - len(data) % 4
        self.pending = data[cut:]
        if cut:
            try:
                self.writer.write(base64.b64decode(data[:cut], validate=True))
            except binascii.Error:
                raise HubError(400, f"{self.writer.name}: the contents are not valid base64") from None
            self.padded = data[cut - 1 : cut] == b"="

    def finish(self) -> Staged:
        if self.pending:
            raise HubError(400, f"{self.writer.name}: the base64 contents are cut short")
        return self.writer.finish(lfs=False)


class CommitReader:
    """Parses an NDJSON commit body piece by piece; file contents go to temporary files, never whole into memory.

    Each line is kept (up to ``MAX_LINE_BYTES``) except the string that follows a ``"content"``
    key: that one is base64-decoded as it arrives into a temporary file, and a marker takes its
    place in the line kept, so the line still parses as JSON and shows where the contents were.
    """

    def __init__(self, store: Store, max_file_size: int):
        self.store, self.max_file_size = store, max_file_size
        self.marker = f"zoo-contents-{secrets.token_hex(8)}"
        self.line = bytearray()
        self.line_number = 1
        self.state = OUTSIDE
        self.carry = b""  # an escape sequence cut by the end of a piece
        self.string_start = 0
        self.last_string: tuple[int, int] | None = None  # where the last string kept starts and ends in self.line
        self.sink: Base64Sink | None = None
        self.header: dict | None = None
        self.added: dict[str, Staged] = {}
        self.deleted: list[tuple[str, bool]] = []

    def _keep(self, data: bytes) -> None:
        self.line += data
        if len(self.line) > MAX_LINE_BYTES:
            raise HubError(
                413, f"commit line {self.line_number} is over the limit of {MAX_LINE_BYTES} bytes (file contents aside)"
            )

    def feed(self, data: bytes) -> None:
        if self.carry:
            data, self.carry = self.carry + data, b""
        pos, end = 0, len(data)
        while pos < end:
            if self.state == OUTSIDE:
                stop = _find_first(OUTSIDE_STOP, data, pos)
                self._keep(data[pos : stop if stop >= 0 else end])
                if stop < 0:
                    return
                pos = stop + 1
                if data[stop] == 0x0A:
                    self._end_line()
                elif self._at_content_value():
                    if self.sink is not None:
                        raise HubError(400, f"commit line {self.line_number} has two file contents")
                    name = f"the file on commit line {self.line_number}"
                    self.sink = Base64Sink(BlobWriter(self.store, self.max_file_size, name))
                    self._keep(f'"{self.marker}"'.encode())
                    self.state = CONTENT
                else:
                    self.string_start = len(self.line)
                    self._keep(b'"')
                    self.state = STRING
                continue
            stop = _find_first(STRING_STOP, data, pos)
            text = data[pos : stop if stop >= 0 else end]
            if self.state == STRING:
                self._keep(text)
            else:
                self.sink.write(text)
            if stop < 0:
                return
            char, pos = data[stop], stop + 1
            if char == 0x5C:  # a backslash: the escaped character is part of the string
                if stop + 1 >= end:
                    self.carry = data[stop:]
                    return
                if self.state == STRING:
                    self._keep(data[stop : stop + 2])
                elif data[stop + 1] == 0x2F:  # '\/' is '/', the only escape base64 may use
                    self.sink.write(b"/")
                else:
                    raise HubError(400, f"{self.sink.writer.name}: the contents are not valid base64")
                pos = stop + 2
            elif char == 0x22:  # the closing quote
                if self.state == STRING:
                    self._keep(b'"')
                    self.last_string = (self.string_start, len(self.line))
                else:
                    self.last_string = None
                self.state = OUTSIDE
            else:
                raise HubError(400, f"commit line {self.line_number} ends inside a string: it is not JSON")

    def _at_content_value(self) -> bool:
        """Does the string starting now follow a ``"content"`` key (``"content": "...``)?"""
        if self.last_string is None:
            return False
        start, end = self.last_string
        return self.line[start:end] == b'"content"' and self.line[end:].strip() == b":"

    def _end_line(self) -> None:
        text, number, sink = bytes(self.line).strip(), self.line_number, self.sink
        self.line.clear()
        self.line_number += 1
        self.last_string, self.sink = None, None
        try:
            self._take_line(text, number, sink)
        except BaseException:
            if sink is not None:
                sink.writer.discard()
            raise

    def _take_line(self, text: bytes, number: int, sink: Base64Sink | None) -> None:
        if not text:
            return
        try:
            item = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
            raise HubError(400, f"commit line {number} is not JSON (the body must be NDJSON)") from None
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise HubError(400, f"commit line {number} must be {{'key': ..., 'value': {{...}}}}")
        key, value = item.get("key"), item["value"]
        if sink is not None and not (key == "file" and value.get("content") == self.marker):
            raise HubError(400, f"commit line {number}: 'content' belongs in the value of a 'file' line only")
        if key == "header":
            if self.header is not None:
                raise HubError(400, f"commit line {number} is a second header")
            self.header = value
        elif key == "file":
            path = check_file_path(value.get("path"))
            if sink is None or value.get("encoding") != "base64":
                raise HubError(400, f"{path}: the contents must be a base64 string (with encoding: base64)")
            self._add(path, sink.finish())
        elif key in ("deletedFile", "deletedFolder"):
            path = value.get("path")
            path = path.rstrip("/") if isinstance(path, str) and key == "deletedFolder" else path
            self.deleted.append((check_file_path(path), key == "deletedFolder"))
        elif key == "lfsFile":
            path = check_file_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")
            if not (isinstance(oid, str) and SHA256_RE.match(oid) and type(size) is int and 0 <= size):
                raise HubError(400, f"{path}: an lfsFile needs 'oid' (a sha256, lower-case hex) and 'size' (bytes)")
            self._add(path, Staged(oid, lfs_pointer_sha1(oid, size), size, None, lfs=True))
        else:
            raise HubError(400, f"commit line {number}: unsupported commit operation {key!r}")

    def _add(self, path: str, staged: Staged) -> None:
        if path in self.added:  # the later one wins, as when the client sends both
            self.added[path].discard()
        self.added[path] = staged

    def finish(self) -> None:
        if self.state != OUTSIDE or self.carry:
            raise HubError(400, f"the commit body ended inside line {self.line_number}")
        self._end_line()
        if self.header is None:
            raise HubError(400, "the commit body has no header line ({'key': 'header', 'value': {'summary': ...}})")

    def abort(self) -> None:
        """Remove every temporary file of this commit (the ones not moved into blobs/)."""
        if self.sink is not None:
            self.sink.writer.discard()
        for staged in self.added.values():
            if not staged.lfs:  # an LFS object stays in tmp/ for a retried commit (until it is stale)
                staged.discard()


# --- the web application --------------------------------------------------------------------------


class BlobResponse(Response):
    """A blob or a range of it, read in chunks; a client that stops reading for ``timeout`` seconds is dropped."""

    def __init__(self, path: Path, start: int, length: int, status: int, headers: dict, timeout: float):
        super().__init__(status_code=status, headers={**headers, "Content-Length": str(length)})
        self.path, self.start, self.length, self.timeout = path, start, length, timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async with anyio.create_task_group() as group:  # a client that hangs up stops the reading too

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await self._stream(scope, send)
            group.cancel_scope.cancel()

    async def _stream(self, scope: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD" or self.length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        with open(self.path, "rb") as f:
            f.seek(self.start)
            remaining = self.length
            while remaining > 0:
                chunk = await run_in_threadpool(f.read, min(CHUNK, remaining))
                if not chunk:
                    log.error("%s is shorter than its commit says: the hub root is damaged", self.path)
                    return
                remaining -= len(chunk)
                with anyio.move_on_after(self.timeout) as waited:
                    await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
                if waited.cancelled_caught:
                    log.warning(
                        "%s: the client read nothing for %s s; connection dropped", self.path.name, self.timeout
                    )
                    return


def _metadata_errors(content: str) -> list[dict]:
    """What is wrong with the YAML metadata block (between ``---`` lines) at the top of a README, if it has one."""
    front = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", content, re.S)
    if not front:
        return []
    if len(front[1]) > MAX_METADATA_CHARACTERS:
        raise HubError(
            413, f"the README's metadata block is over this hub's limit of {MAX_METADATA_CHARACTERS} characters"
        )
    try:
        if not isinstance(yaml.load(front[1], Loader=YAML_LOADER) or {}, dict):
            return [{"message": "the metadata block must be a YAML mapping"}]
    except RecursionError:  # the pure-Python parser on deep nesting (libyaml stops at a depth of its own)
        return [{"message": "the metadata block is not valid YAML: it is nested too deep"}]
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date like 2024-02-30, a character YAML cannot hold
        return [{"message": f"the metadata block is not valid YAML: {exc}"}]
    return []


class HubApp:
    """The ASGI application: one dispatcher over the raw path, so ``refs%2Fpr%2F1`` stays one segment."""

    def __init__(
        self,
        store: Store,
        tokens: Tokens | None = None,
        read_only: bool = False,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        lfs_min_size: int | None = None,
    ):
        self.store, self.tokens, self.read_only = store, tokens, read_only
        self.max_file_size, self.request_timeout, self.lfs_min_size = max_file_size, request_timeout, lfs_min_size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # no lifespan events (uvicorn runs with lifespan off), no websockets
            return
        request = Request(scope, receive)
        try:
            response = await self._route(request)
        except HubError as exc:
            response = self._error(request, exc)
        except ClientGone:
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.error("%s: %s", _where(request), exc)
            response = self._error(request, HubError(507, "the hub's disk is full; ask its operator to free space"))
        except asyncio.CancelledError:  # the server is shutting down and waited long enough
            log.warning("%s: cut short by the hub's shutdown", _where(request))
            response = self._error(request, HubError(503, "the hub is shutting down; retry in a moment"))
        await response(scope, receive, send)

    def _error(self, request: Request, exc: HubError) -> Response:
        headers = {**exc.headers, "X-Error-Message": str(exc)}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        if request.method not in ("GET", "HEAD"):
            headers["Connection"] = "close"  # the request body may be partly unread
        return self._json({"error": str(exc), **exc.body}, exc.status, headers)

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
        return JSONResponse(body, status, {k: header_safe(v) for k, v in (headers or {}).items()})

    # --- request plumbing ------------------------------------------------------------------------

    def _access(self, request: Request) -> Access:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        if self.tokens is None:  # an open hub: any token reads private repositories, as before tokens existed
            return Access(token, None, read_private=bool(token))
        scope = self.tokens.scope(token) if token else None
        return Access(token, scope, read_private=scope is not None)

    def _check_write(self, access: Access) -> None:
        if self.read_only:
            raise HubError(403, READ_ONLY)
        if self.tokens is None or access.scope == "write":
            return
        if access.scope == "read":
            raise HubError(403, "this token may read only: writing to this hub needs a token with write scope")
        if access.token:
            raise HubError(401, "Invalid credentials in Authorization header")
        raise HubError(
            401, "writing to this hub needs a token with write scope (Authorization: Bearer TOKEN; HF_TOKEN)"
        )

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body in pieces of about a MiB; a client silent for ``request_timeout`` seconds gets 408."""
        buffer = bytearray()
        while True:
            with anyio.move_on_after(self.request_timeout) as waited:
                message = await request.receive()
            if waited.cancelled_caught:
                log.warning("%s: no data for %s s; request cut", _where(request), self.request_timeout)
                raise HubError(408, f"the request body stalled: no data for {self.request_timeout} s")
            if message["type"] == "http.disconnect":
                raise ClientGone
            buffer += message.get("body", b"")
            more = message.get("more_body", False)
            if buffer and (len(buffer) >= CHUNK or not more):
                yield bytes(buffer)
                buffer.clear()
            if not more:
                return

    async def _stream_body(self, request: Request, consume: Callable[[bytes], None]) -> None:
        """Hand the body to ``consume`` on a worker thread, piece by piece, while the next piece is read."""
        loop = asyncio.get_running_loop()
        working: asyncio.Future | None = None
        try:
            async for piece in self._body(request):
                if working is not None:
                    await asyncio.shield(working)
                working = loop.run_in_executor(None, consume, piece)
            if working is not None:
                await asyncio.shield(working)
        finally:  # never leave the consumer running behind an error or a cancel: the caller removes its files next
            if working is not None and not working.done():
                await asyncio.wait([working])

    @staticmethod
    def _check_length(request: Request, limit: int | None) -> None:
        """A body must come with a Content-Length (checked against ``limit`` before reading) or chunked."""
        length = request.headers.get("content-length")
        if length is None:
            if "chunked" not in request.headers.get("transfer-encoding", "").lower():
                raise HubError(411, "send the request body with a Content-Length (or chunked)")
        elif limit is not None and int(length) > limit:  # h11 has checked it is a number
            raise HubError(413, f"request body of {length} bytes is over the limit of {limit}")

    async def _json_body(self, request: Request) -> dict:
        self._check_length(request, MAX_JSON_BYTES)
        data = bytearray()
        async for piece in self._body(request):
            data += piece
            if len(data) > MAX_JSON_BYTES:
                raise HubError(413, f"request body is over the limit of {MAX_JSON_BYTES} bytes")
        try:
            body = await self._run(json.loads, bytes(data or b"{}"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
            body = None
        if not isinstance(body, dict):
            raise HubError(400, "the request body must be a JSON object")
        return body

    @staticmethod
    def _base_url(request: Request) -> str:
        host = request.headers.get("host") or "{}:{}".format(*request.scope["server"][:2])
        return f"http://{host}"

    def _repo_url(self, request: Request, repo_type: str, repo_id: str) -> str:
        return f"{self._base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}"

    @staticmethod
    async def _run(function: Callable[..., Any], *args: Any) -> Any:
        """Disk work and the root's file lock happen on a worker thread: the event loop keeps serving."""
        return await run_in_threadpool(function, *args)

    # --- routing ---------------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        try:  # split before unquoting: a revision like refs%2Fpr%2F1 is one segment
            parts = [unquote_to_bytes(p).decode("utf-8") for p in raw.split(b"/")[1:]]
        except UnicodeDecodeError:
            raise HubError(400, "the request path is not UTF-8 once percent-decoded") from None
        method, access = request.method, self._access(request)
        if parts[:1] == ["api"]:
            return await self._api(request, method, access, parts[1:])
        repo_type, rest = "model", parts
        if rest[:1] in (["datasets"], ["spaces"]):
            repo_type, rest = REPO_TYPES[rest[0]], rest[1:]
        if len(rest) >= 5 and rest[1].endswith(".git") and rest[2:5] == ["info", "lfs", "objects"]:
            repo_id = check_repo_id(rest[0], rest[1][: -len(".git")])
            if method == "POST" and rest[5:] == ["batch"]:
                return await self._lfs_batch(request, access, repo_type, repo_id)
            if method == "PUT" and len(rest) == 6:
                return await self._lfs_put(request, repo_type, repo_id, rest[5])
        elif method in ("GET", "HEAD") and len(rest) >= 5 and rest[2] == "resolve":
            return await self._resolve(request, access, repo_type, check_repo_id(*rest[:2]), rest[3], rest[4:])
        raise HubError(404, f"not found: {method} {'/'.join(['', *parts])}")

    async def _api(self, request: Request, method: str, access: Access, parts: list[str]) -> Response:
        if method == "POST" and parts == ["repos", "create"]:
            return await self._create_repo(request, access)
        if method == "POST" and parts == ["validate-yaml"]:
            return await self._validate_yaml(request)
        if len(parts) < 3 or parts[0] not in REPO_TYPES:
            raise HubError(404, f"not found: {method} /api/{'/'.join(parts)} is not part of the API this hub serves")
        repo_type, repo_id = REPO_TYPES[parts[0]], check_repo_id(*parts[1:3])
        action, rest = (parts[3] if len(parts) > 3 else ""), parts[4:]
        if action in ("xet-write-token", "xet-read-token"):
            raise HubError(501, NO_XET)
        if method == "POST" and action in ("preupload", "commit", "branch", "discussions"):
            self._check_write(access)
        meta = await self._run(self.store.repo, repo_type, repo_id, access.read_private)
        route = (method, action, len(rest))
        if route in {("GET", "", 0), ("GET", "revision", 1)}:
            return await self._info(request, repo_type, repo_id, meta, rest[0] if rest else "main")
        if route == ("POST", "preupload", 1):
            return await self._preupload(request, repo_type, repo_id, meta, rest[0])
        if route == ("POST", "commit", 1):
            return await self._commit(request, repo_type, repo_id, rest[0])
        if route == ("GET", "commits", 1):
            return await self._commits(repo_type, repo_id, meta, rest[0])
        if method == "GET" and action == "tree" and rest:
            return await self._list_tree(request, repo_type, repo_id, meta, rest[0], "/".join(rest[1:]))
        if route == ("GET", "refs", 0):
            return self._refs(request, meta)
        if method == "POST" and action == "branch" and rest:
            body = await self._json_body(request)
            await self._run(self.store.create_branch, repo_type, repo_id, "/".join(rest), body.get("startingPoint"))
            return self._json({})
        if route == ("POST", "discussions", 0):
            return await self._open_pr(request, repo_type, repo_id)
        if route == ("GET", "discussions", 1):
            return self._discussion(repo_type, repo_id, meta, rest[0])
        raise HubError(404, f"not found: {method} /api/{'/'.join(parts)} is not part of the API this hub serves")

    # --- API endpoints -----------------------------------------------------------------------------

    async def _create_repo(self, request: Request, access: Access) -> Response:
        self._check_write(access)
        body = await self._json_body(request)
        for key in ("type", "organization", "name", "visibility"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise HubError(400, f"{key!r} must be a string, not {json.dumps(body[key])[:100]}")
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise HubError(400, f"unknown repository type {repo_type!r}")
        if not body.get("organization"):
            raise HubError(400, "a repository id needs an organization: ORG/NAME")
        repo_id = check_repo_id(body["organization"], body.get("name") or "")
        private = body.get("visibility", "public") != "public" or bool(body.get("private"))
        if private and not access.token:
            raise HubError(401, "creating a private repository needs a token (set HF_TOKEN)")
        url = self._repo_url(request, repo_type, repo_id)
        try:
            await self._run(self.store.create_repo, repo_type, repo_id, private)
        except HubError as exc:
            exc.body["url"] = url  # create_repo(exist_ok=True) reads the url from the 409 answer
            raise
        return self._json({"url": url, "name": repo_id, "id": repo_id})

    async def _validate_yaml(self, request: Request) -> Response:
        content = (await self._json_body(request)).get("content", "")
        if not isinstance(content, str):
            raise HubError(400, "validate-yaml expects {'content': the README's text}")
        errors = await self._run(_metadata_errors, content)
        return self._json({"errors": errors, "warnings": []}, 400 if errors else 200)

    async def _tree(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> tuple[str, dict]:
        _, oid = self.store.resolve(repo_type, repo_id, meta, revision)
        return oid, await self._run(self.store.commit, repo_type, repo_id, oid)

    async def _info(self, request: Request, repo_type: str, repo_id: str, meta: dict, revision: str) -> Response:
        oid, commit = await self._tree(repo_type, repo_id, meta, revision)
        with_blobs = request.query_params.get("blobs", "").lower() == "true"
        siblings = [
            {"rfilename": path, **(self._blob_info(e) if with_blobs else {})} for path, e in commit["tree"].items()
        ]
        info = {"id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": oid}
        info.update(private=meta["private"], disabled=False, gated=False, lastModified=commit["date"])
        info.update(createdAt=meta["created"], tags=[], downloads=0, likes=0, siblings=siblings)
        return self._json(info)

    async def _list_tree(
        self, request: Request, repo_type: str, repo_id: str, meta: dict, revision: str, folder: str
    ) -> Response:
        """The files and folders under ``folder`` at ``revision`` (``list_repo_tree``, ``snapshot_download``).

        One page: the whole listing (a model repository holds a handful of files). With
        ``recursive=true`` every level below ``folder``, otherwise its direct children only.
        """
        _, commit = await self._tree(repo_type, repo_id, meta, revision)
        recursive = request.query_params.get("recursive", "").lower() == "true"
        folder = folder.strip("/")
        prefix = f"{folder}/" if folder else ""
        below = {path[len(prefix) :]: entry for path, entry in commit["tree"].items() if path.startswith(prefix)}
        if folder and not below:
            raise HubError(404, f"{folder}: no such folder in {repo_id} at {revision}", "EntryNotFound")
        files, folders = [], {}
        for relative, entry in sorted(below.items()):
            parts = relative.split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                name = prefix + "/".join(parts[:depth])
                folders.setdefault(name, hashlib.sha1()).update(entry["sha1"].encode())
            if recursive or len(parts) == 1:
                file = {"type": "file", "oid": entry["sha1"], "size": entry["size"], "path": prefix + relative}
                if entry.get("lfs"):
                    pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
                    file["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
                files.append(file)
        listing = [{"type": "directory", "oid": h.hexdigest(), "size": 0, "path": name} for name, h in folders.items()]
        return self._json(sorted(listing + files, key=lambda item: item["path"]))

    @staticmethod
    def _blob_info(entry: dict) -> dict:
        info = {"size": entry["size"], "blobId": entry["sha1"]}
        if entry.get("lfs"):
            pointer_size = len(lfs_pointer(entry["sha256"], entry["size"]))
            info["lfs"] = {"sha256": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
        return info

    def _upload_mode(self, size: Any) -> str:
        big = self.lfs_min_size is not None and type(size) is int and size >= max(self.lfs_min_size, 1)
        return "lfs" if big else "regular"

    async def _preupload(self, request: Request, repo_type: str, repo_id: str, meta: dict, revision: str) -> Response:
        files = (await self._json_body(request)).get("files")
        if not isinstance(files, list):
            raise HubError(400, "preupload expects {'files': [{'path', 'size', 'sample'}]}")
        _, commit = await self._tree(repo_type, repo_id, meta, revision)
        answers = []
        for item in files:
            path = check_file_path(item.get("path") if isinstance(item, dict) else None)
            size = item.get("size")
            if type(size) is int and size > self.max_file_size:
                raise HubError(413, f"{path} is {size} bytes, over this hub's limit of {self.max_file_size} per file")
            mode = self._upload_mode(size)
            entry = commit["tree"].get(path)
            oid = self._known_oid(entry, mode)
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, **({"oid": oid} if oid else {})})
        return self._json({"files": answers})

    @staticmethod
    def _known_oid(entry: dict | None, mode: str) -> str | None:
        """What the client compares with its own id to skip an unchanged file: sha256 for LFS, else the git sha1."""
        if entry is None:
            return None
        if mode == "lfs":
            return entry["sha256"]
        return None if entry.get("lfs") else entry["sha1"]

    async def _commit(self, request: Request, repo_type: str, repo_id: str, revision: str) -> Response:
        self._check_length(request, None)
        reader = CommitReader(self.store, self.max_file_size)
        try:
            await self._stream_body(request, reader.feed)
            await self._run(reader.finish)
            create_pr = request.query_params.get("create_pr") == "1"
            commit = (repo_type, repo_id, revision, reader.header, reader.added, reader.deleted, create_pr)
            oid, number = await self._run(self.store.commit_files, *commit)
        finally:
            reader.abort()  # whatever was not moved into blobs/
        url = self._repo_url(request, repo_type, repo_id)
        pr_url = f"{url}/discussions/{number}" if number else None
        return self._json(
            {"success": True, "commitOid": oid, "commitUrl": f"{url}/commit/{oid}", "pullRequestUrl": pr_url}
        )

    async def _commits(self, repo_type: str, repo_id: str, meta: dict, revision: str) -> Response:
        _, oid = self.store.resolve(repo_type, repo_id, meta, revision)
        history = await self._run(lambda: list(self.store.history(repo_type, repo_id, oid)))
        fields = ("title", "message", "date")
        return self._json([{"id": o, **{k: c[k] for k in fields}, "authors": [{"user": "zoo"}]} for o, c in history])

    def _refs(self, request: Request, meta: dict) -> Response:
        def listed(prefix: str, full_name: bool) -> list[dict]:
            refs = sorted((ref, oid) for ref, oid in meta["refs"].items() if ref.startswith(prefix))
            return [
                {"name": ref if full_name else ref[len(prefix) :], "ref": ref, "targetCommit": oid} for ref, oid in refs
            ]

        answer = {"branches": listed("refs/heads/", False), "tags": [], "converts": []}
        if request.query_params.get("include_prs"):
            answer["pullRequests"] = listed("refs/pr/", True)
        return self._json(answer)

    async def _open_pr(self, request: Request, repo_type: str, repo_id: str) -> Response:
        body = await self._json_body(request)
        if not body.get("pullRequest"):
            raise HubError(400, "this hub has pull requests only, not plain discussions")
        title, description = str(body.get("title", "")), str(body.get("description", ""))
        number = await self._run(self.store.create_pr, repo_type, repo_id, title, description)
        return self._json(
            {"num": number, "url": {"web": f"{self._repo_url(request, repo_type, repo_id)}/discussions/{number}"}}
        )

    def _discussion(self, repo_type: str, repo_id: str, meta: dict, number: str) -> Response:
        found = [d for d in meta["discussions"] if str(d["num"]) == number]
        if not found:
            raise HubError(404, f"discussion {number} not found in {repo_id}")
        d = found[0]
        answer = {key: d[key] for key in ("num", "title", "status", "createdAt")}
        answer.update(isPullRequest=True, author={"name": "zoo"}, events=[], repo={"name": repo_id, "type": repo_type})
        answer.update(changes={"base": d["base"]}, filesWithConflicts=[], diff=None)
        return self._json(answer)

    # --- Git LFS: the batch API and the signed PUT of the raw bytes --------------------------------

    def _signature(self, repo_type: str, repo_id: str, oid: str, size: int, expires: int) -> str:
        message = f"{repo_type}/{repo_id}/{oid}/{size}/{expires}".encode()
        return hmac.new(self.store.upload_key(), message, hashlib.sha256).hexdigest()

    async def _lfs_batch(self, request: Request, access: Access, repo_type: str, repo_id: str) -> Response:
        self._check_write(access)
        await self._run(self.store.repo, repo_type, repo_id, True)
        body = await self._json_body(request)
        objects = body.get("objects")
        if body.get("operation") != "upload" or not isinstance(objects, list):
            raise HubError(
                400, "this hub's LFS batch API takes uploads only ({'operation': 'upload', 'objects': [...]})"
            )
        present = await self._run(self.store.repo_blobs, repo_type, repo_id)
        expires = int(time.time()) + LFS_URL_SECONDS
        url = f"{self._base_url(request)}/{URL_PREFIX[repo_type]}{repo_id}.git/info/lfs/objects"
        answers = []
        for item in objects:
            oid, size = (item.get("oid"), item.get("size")) if isinstance(item, dict) else (None, None)
            if not (isinstance(oid, str) and SHA256_RE.match(oid) and type(size) is int and size >= 0):
                error = {"code": 422, "message": "an object needs 'oid' (a sha256, lower-case hex) and 'size' (bytes)"}
                answers.append({"oid": str(oid), "size": size if type(size) is int else 0, "error": error})
            elif size > self.max_file_size:
                error = {"code": 413, "message": f"{size} bytes is over this hub's limit of {self.max_file_size}"}
                answers.append({"oid": oid, "size": size, "error": error})
            elif found := self.store.lfs_object(repo_type, repo_id, oid, present):
                if found[1] == size:
                    answers.append({"oid": oid, "size": size})  # no actions: the hub has it
                else:
                    error = {"code": 422, "message": f"object {oid} is {found[1]} bytes, not {size}"}
                    answers.append({"oid": oid, "size": size, "error": error})
            else:
                query = (
                    f"size={size}&expires={expires}&signature={self._signature(repo_type, repo_id, oid, size, expires)}"
                )
                upload = {"href": f"{url}/{oid}?{query}", "expires_in": LFS_URL_SECONDS}
                answers.append({"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload}})
        body = {"transfer": "basic", "objects": answers, "hash_algo": "sha256"}
        return JSONResponse(body, media_type="application/vnd.git-lfs+json")

    async def _lfs_put(self, request: Request, repo_type: str, repo_id: str, oid: str) -> Response:
        if self.read_only:
            raise HubError(403, READ_ONLY)
        query = request.query_params
        try:
            size, expires = int(query.get("size", "")), int(query.get("expires", ""))
        except ValueError:
            size = expires = -1
        valid = SHA256_RE.match(oid) and size >= 0 and expires >= time.time()
        expected = self._signature(repo_type, repo_id, oid, size, expires) if valid else ""
        if not (valid and hmac.compare_digest(expected.encode(), query.get("signature", "").encode())):
            raise HubError(
                403, "this LFS upload URL is not valid (expired or altered): ask the batch API for a new one"
            )
        self._check_length(request, size)
        writer = await self._run(BlobWriter, self.store, size, oid)
        try:
            await self._stream_body(request, writer.write)
            staged = await self._run(writer.finish, True)
        except BaseException:
            writer.discard()
            raise
        if staged.sha256 != oid or staged.size != size:
            staged.discard()
            raise HubError(400, f"the uploaded bytes have sha256 {staged.sha256} ({staged.size} bytes), not {oid}")
        staged.path.replace(self.store.lfs_pending_path(repo_type, repo_id, oid))
        return self._json({})

    # --- downloads -----------------------------------------------------------------------------------

    async def _resolve(
        self, request: Request, access: Access, repo_type: str, repo_id: str, revision: str, path: list[str]
    ) -> Response:
        filename = "/".join(path)
        meta = await self._run(self.store.repo, repo_type, repo_id, access.read_private)
        oid, commit = await self._tree(repo_type, repo_id, meta, revision)
        entry = commit["tree"].get(filename)
        if entry is None:  # with X-Repo-Commit the client caches that the file does not exist at this commit
            raise HubError(404, f"Entry not found: {filename} at {oid}", "EntryNotFound", {"X-Repo-Commit": oid})
        size = entry["size"]
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{entry["sha256"] if entry.get("lfs") else entry["sha1"]}"',  # as on the Hub: LFS by sha256
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename.rsplit('/', 1)[-1])}",
        }
        start, end, status = 0, size - 1, 200
        wanted = request.headers.get("range", "")
        found = re.fullmatch(r"bytes=(\d{1,18})-(\d{0,18})", wanted) if request.method == "GET" else None
        if found:
            start, end = int(found[1]), min(int(found[2] or size - 1), size - 1)
            if start >= size or end < start:
                raise HubError(
                    416,
                    f"range {wanted} is outside the file's {size} bytes",
                    headers={"Content-Range": f"bytes */{size}"},
                )
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        headers = {k: header_safe(v) for k, v in headers.items()}
        blob = self.store.blob_path(entry["sha256"])
        if not blob.is_file():
            raise HubError(500, f"the contents of {filename} ({blob.name}) are missing from the hub's root")
        return BlobResponse(blob, start, end - start + 1, status, headers, self.request_timeout)


# --- running it -------------------------------------------------------------------------------------


def _protocol(request_timeout: float) -> type[H11Protocol]:
    class DeadlineH11Protocol(H11Protocol):
        """uvicorn's h11 protocol, plus a deadline for each request line and its headers (uvicorn has none).

        A connection that has not started a new request ``request_timeout`` seconds after it
        opened, or after its last answer, is closed: a client trickling header bytes holds nothing.
        """

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_deadline()

        def _arm_deadline(self) -> None:
            cycle = self.cycle

            def expire() -> None:
                if self.cycle is cycle and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(request_timeout, expire)

    return DeadlineH11Protocol


class HubServer:
    """``HubServer(root).start()`` serves ``root`` on a background thread until :meth:`stop`.

    ``port=0`` picks a free port; :attr:`url` is the value for ``HF_ENDPOINT``. Also a context
    manager: ``with HubServer(root) as hub: ...``. :meth:`serve_forever` serves in the calling
    thread instead (``zoo hub serve``). The port is bound at construction.
    """

    def __init__(
        self,
        root: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = False,
        tokens: Tokens | None = None,
        read_only: bool = False,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        lfs_min_size: int | None = None,
        shutdown_timeout: float = 5.0,
    ):
        try:
            self.store = Store(Path(root))
            # Under the lock, as gc does: a commit may be claiming one of them. Only when there is something to
            # remove, so that serving a root this user may not write (a read-only mirror) writes nothing.
            if self.store.remove_stale_temp(dry_run=True):
                with self.store.locked():
                    for path, size in self.store.remove_stale_temp():
                        log.info("removed %s (%d bytes): an upload that never finished", path, size)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
            raise DataError(
                f"cannot use {root} as the hub's root: {exc.strerror or exc}{where}; "
                "give a folder this user may create and write"
            ) from None
        app = HubApp(self.store, tokens, read_only, max_file_size, request_timeout, lfs_min_size)
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self._socket = socket.socket(family, kind, proto)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(address)
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        bound_host, bound_port = self._socket.getsockname()[:2]
        self.url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        config = uvicorn.Config(
            app,
            http=_protocol(request_timeout),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=log_requests,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            timeout_graceful_shutdown=shutdown_timeout,
            server_header=False,
            headers=[("Server", "zoo-hub")],
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._serve_in_thread, name="zoo-hub", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the hub at {self.url} did not start")
        return self

    def _serve_in_thread(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def serve_forever(self) -> None:
        """Serve in the calling thread until SIGINT or SIGTERM (uvicorn then re-raises the signal)."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def stop(self) -> None:
        """Stop accepting, end kept-alive connections, wait for requests in flight: a stopped hub answers nothing."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=60)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
