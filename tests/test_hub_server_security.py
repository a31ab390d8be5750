"""Attacks on `zoo hub serve`, each over real HTTP on 127.0.0.1: tokens, read-only mode, header injection,
hostile paths and lengths, memory, stalled clients, and the cleaning of refused or killed uploads."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import zoo_environment
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from zoo_core.errors import ConfigError
from zoo_core.hub.server import HubServer, Tokens

WRITE_TOKEN = "write-" + "w" * 26
READ_TOKEN = "read-" + "r" * 27


@pytest.fixture
def serve(tmp_path, monkeypatch, caplog):
    """``serve(**options)`` starts a hub on tmp_path/hub; at the end, no server log record carries a traceback."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    servers = []

    def start(**options) -> HubServer:
        servers.append(HubServer(tmp_path / "hub", **options).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()], "a traceback was logged"


@pytest.fixture
def tokens(tmp_path) -> Tokens:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# the team's tokens\n\n{WRITE_TOKEN} write\n  {READ_TOKEN}   read  \n")
    return Tokens.load(path)


def api(hub: HubServer, token) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def exchange(hub: HubServer, request: bytes, timeout: float = 10) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send raw bytes, read until the server closes; returns (status, raw header lines as pairs, body)."""
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        # Sent from a thread while the answer is read: the hub may answer (and close) before the body is all sent.
        threading.Thread(target=_send_quietly, args=(connection, request), daemon=True).start()
        received = b""
        with contextlib.suppress(ConnectionResetError):  # a close with our body unread: the answer came first
            while chunk := connection.recv(1 << 16):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]
    return int(lines[0].split()[1]), headers, body


def _send_quietly(connection: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        connection.sendall(data)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n{extra}\r\n".encode()


def commit_line(path: str, data: bytes) -> bytes:
    value = {"content": base64.b64encode(data).decode(), "path": path, "encoding": "base64"}
    return json.dumps({"key": "file", "value": value}).encode() + b"\n"


HEADER_LINE = b'{"key": "header", "value": {"summary": "raw commit"}}\n'


def post(path: str, body: bytes, headers: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


def history(hub: HubServer, repo_id: str = "org/model") -> list[str]:
    return [c.title for c in api(hub, WRITE_TOKEN).list_repo_commits(repo_id)]


def temp_files(hub: HubServer) -> list[str]:
    return sorted(p.name for p in (hub.store.root / "tmp").iterdir() if p.name != "upload.key")


# --- tokens -------------------------------------------------------------------------------------


def test_token_file_scopes_are_matched_whole(tokens):
    assert tokens.scope(WRITE_TOKEN) == "write" and tokens.scope(READ_TOKEN) == "read"
    for near in (WRITE_TOKEN[:-1], WRITE_TOKEN + "x", "", READ_TOKEN.upper(), f"{WRITE_TOKEN} write"):
        assert tokens.scope(near) is None, near


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            f"{WRITE_TOKEN} write\n{READ_TOKEN} admin\n",
            "line 2: expected `TOKEN SCOPE` with SCOPE read or write, found scope 'admin'",
        ),
        (f"# comment\n\n{WRITE_TOKEN}\n", "line 3: expected `TOKEN SCOPE` with SCOPE read or write, found no scope"),
        (f"{WRITE_TOKEN} write extra\n", "line 1: expected `TOKEN SCOPE` with SCOPE read or write, found 3+ words"),
        ("short write\n", "line 1: a token is at least 16 printable ASCII characters"),
        (f"{WRITE_TOKEN} write\n{WRITE_TOKEN} read\n", "line 2: this token is already on an earlier line"),
        ("# nothing but a comment\n", "has no tokens"),
    ],
)
def test_malformed_token_file_names_the_file_and_line_but_never_the_token(tmp_path, text, problem):
    path = tmp_path / "tokens.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Tokens.load(path)
    assert str(path) in str(info.value) and problem in str(info.value)
    assert WRITE_TOKEN not in str(info.value) and READ_TOKEN not in str(info.value)


def test_serve_with_a_bad_token_file_is_a_one_line_error(tmp_path):
    (tmp_path / "tokens.txt").write_text(f"{WRITE_TOKEN} writer\n")
    command = [
        sys.executable,
        "-m",
        "zoo_core.cli",
        "hub",
        "serve",
        str(tmp_path / "hub"),
        "--port",
        "0",
        "--token-file",
        str(tmp_path / "tokens.txt"),
    ]
    result = subprocess.run(command, env=zoo_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "tokens.txt, line 1" in result.stderr and "writer" in result.stderr


def test_writes_need_a_write_token(serve, tokens, tmp_path):
    hub = serve(tokens=tokens)
    api(hub, WRITE_TOKEN).create_repo("org/model")
    api(hub, WRITE_TOKEN).create_commit("org/model", [CommitOperationAdd("a.txt", b"a")], commit_message="first")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "b.txt").write_text("b")
    attempts = {
        "create a repository": lambda client: client.create_repo("org/other"),
        "commit": lambda client: client.create_commit(
            "org/model", [CommitOperationAdd("x.txt", b"x")], commit_message="x"
        ),
        "delete a file": lambda client: client.create_commit(
            "org/model", [CommitOperationDelete("a.txt")], commit_message="rm"
        ),
        "create a branch": lambda client: client.create_branch("org/model", branch="dev"),
        "open a pull request": lambda client: client.create_pull_request("org/model", title="t"),
        "upload a folder as a pull request": lambda client: client.upload_folder(
            repo_id="org/model", folder_path=folder, create_pr=True
        ),
    }
    for what, attempt in attempts.items():
        for token, status, says in (
            (False, 401, "needs a token with write scope"),
            (READ_TOKEN, 403, "may read only"),
            ("not-a-known-token-at-all", 401, "Invalid credentials"),
        ):
            with pytest.raises(HfHubHTTPError) as info:
                attempt(api(hub, token))
            response = info.value.response
            assert response.status_code == status, (what, token)
            assert says in response.headers["X-Error-Message"], (what, token)
    assert history(hub) == ["first", "initial commit"]
    refs = api(hub, WRITE_TOKEN).list_repo_refs("org/model", include_pull_requests=True)
    assert [b.name for b in refs.branches] == ["main"] and refs.pull_requests == []
    assert not (hub.store.root / "repos" / "models" / "org" / "other").exists()
    # the write token can do all of it
    api(hub, WRITE_TOKEN).create_branch("org/model", branch="dev")
    api(hub, WRITE_TOKEN).create_commit("org/model", [CommitOperationDelete("a.txt")], commit_message="rm")
    assert history(hub)[0] == "rm"


def test_public_reads_need_no_token_but_a_private_repo_needs_a_known_one(serve, tokens, tmp_path):
    hub = serve(tokens=tokens)
    api(hub, WRITE_TOKEN).create_repo("org/public")
    api(hub, WRITE_TOKEN).create_repo("org/secret", private=True)
    for repo_id in ("org/public", "org/secret"):
        api(hub, WRITE_TOKEN).create_commit(repo_id, [CommitOperationAdd("w.bin", b"weights")], commit_message="w")

    def download(repo_id: str, token) -> bytes:
        cache = tmp_path / f"cache-{time.monotonic_ns()}"
        return Path(hf_hub_download(repo_id, "w.bin", endpoint=hub.url, cache_dir=cache, token=token)).read_bytes()

    assert download("org/public", False) == b"weights"
    assert download("org/public", "some-huggingface-co-token") == b"weights"  # a stray token does not block reads
    for token in (False, "x", "Bearer-looking-but-unknown-token"):
        with pytest.raises(RepositoryNotFoundError):
            download("org/secret", token)
        with pytest.raises(RepositoryNotFoundError):
            api(hub, token).model_info("org/secret")
    assert download("org/secret", READ_TOKEN) == b"weights"
    assert api(hub, READ_TOKEN).model_info("org/secret").private is True
    # the answer for a private repo is word for word the answer for a missing one
    secret = exchange(hub, get("/org/secret/resolve/main/w.bin", "Authorization: Bearer x\r\n"))
    missing = exchange(hub, get("/org/nothing-here/resolve/main/w.bin"))
    assert secret[0] == missing[0] == 404
    assert json.loads(secret[2])["error"].replace("secret", "?") == json.loads(missing[2])["error"].replace(
        "nothing-here", "?"
    )


def test_read_only_refuses_every_write_even_with_a_write_token(serve, tokens, tmp_path):
    with HubServer(tmp_path / "hub", tokens=tokens) as writable:
        api(writable, WRITE_TOKEN).create_repo("org/model")
        api(writable, WRITE_TOKEN).create_commit("org/model", [CommitOperationAdd("a.txt", b"a")], commit_message="a")
    hub = serve(tokens=tokens, read_only=True)
    client = api(hub, WRITE_TOKEN)
    for attempt in (
        lambda: client.create_repo("org/other"),
        lambda: client.create_commit("org/model", [CommitOperationAdd("b", b"b")], commit_message="b"),
        lambda: client.create_branch("org/model", branch="dev"),
        lambda: client.create_pull_request("org/model", title="t"),
    ):
        with pytest.raises(HfHubHTTPError) as info:
            attempt()
        assert info.value.response.status_code == 403 and "read-only" in info.value.response.headers["X-Error-Message"]
    assert history(hub) == ["a", "initial commit"]
    cache = tmp_path / "cache"
    assert (
        Path(hf_hub_download("org/model", "a.txt", endpoint=hub.url, cache_dir=cache, token=False)).read_bytes() == b"a"
    )


@pytest.mark.parametrize(
    "options, can",
    [
        ((), "can write to the hub and read its private repositories"),
        (("--read-only",), "can read every repository on the hub, the private ones too"),
    ],
)
def test_open_hub_on_another_interface_warns(tmp_path, options, can):
    command = [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(tmp_path / "hub"), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--host", "0.0.0.0", *options],
        env=zoo_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = process.stderr.readline()
        assert warning.startswith("warning: --host 0.0.0.0 without --token-file: anyone who can reach this port ")
        assert warning.rstrip().endswith(can)
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_serve_on_a_root_it_cannot_make_names_the_root(tmp_path, where):
    (tmp_path / "file").write_text("a file, not a folder")
    root = tmp_path / "file" / "hub" if where == "under a file" else Path("/proc/zoo-x")
    command = [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(root), "--port", "0"]
    result = subprocess.run(command, env=zoo_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot use {root} as the hub's root: "), lines
    assert "listen" not in lines[0] and "--port" not in lines[0]


def test_serve_without_the_extra_names_the_pip_command(tmp_path):
    code = "import sys; sys.modules['starlette'] = None; from zoo_core.cli import main; main()"
    command = [sys.executable, "-c", code, "hub", "serve", str(tmp_path / "hub"), "--port", "0"]
    result = subprocess.run(command, env=zoo_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'zoo-core[hub-server]'" in result.stderr and "starlette" in result.stderr


def validate_yaml(hub: HubServer, content) -> tuple[int, dict]:
    body = json.dumps({"content": content, "repoType": "model"}).encode()
    status, _, answer = exchange(hub, post("/api/validate-yaml", body, "Content-Type: application/json\r\n"))
    return status, json.loads(answer)


def test_validate_yaml_parses_a_bounded_metadata_block_and_reports_what_breaks_it(serve):
    hub = serve()
    huge = "---\n" + "".join(f"key{n}: value number {n}\n" for n in range(60_000)) + "---\n# card\n"  # 1.7 MB
    status, answer = validate_yaml(hub, huge)
    assert status == 413 and "metadata block is over this hub's limit of 1048576 characters" in answer["error"]
    for metadata, problem in (
        ("[" * 50_000, "not valid YAML"),  # a RecursionError in the pure-Python parser
        ("created: 2024-02-30", "day is out of range for month"),  # a ValueError from the date
        ("license: [mit", "not valid YAML"),
        ("- a list", "must be a YAML mapping"),
    ):
        status, answer = validate_yaml(hub, f"---\n{metadata}\n---\n# card\n")
        assert status == 400 and problem in answer["errors"][0]["message"], metadata
    status, answer = validate_yaml(hub, "---\nlicense: mit\n---\n" + "a long card\n" * 200_000)  # 2.4 MB of text
    assert status == 200 and answer == {"errors": [], "warnings": []}
    status, answer = validate_yaml(hub, ["---"])
    assert status == 400 and "content" in answer["error"]
    assert api(hub, "t").create_repo("org/model").repo_id == "org/model"  # still serving


def test_json_nested_too_deep_is_a_400(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    deep = b"[" * 200_000
    for path, body in (
        ("/api/repos/create", deep),
        ("/api/validate-yaml", b'{"content": ' + deep),
        ("/api/models/org/model/preupload/main", b'{"files": ' + deep),
        ("/api/models/org/model/commit/main", deep + b"\n"),
        ("/api/models/org/model/commit/main", HEADER_LINE + b'{"key": "file", "value": ' + deep + b"\n"),
    ):
        status, _, answer = exchange(hub, post(path, body, "Content-Type: application/json\r\n"))
        assert status == 400 and json.loads(answer)["error"], path
    assert history(hub) == ["initial commit"]


# --- headers and paths ----------------------------------------------------------------------------


def test_crlf_in_a_path_cannot_add_a_header(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    injected = "%0d%0aSet-Cookie:%20session=stolen%0d%0aX-Injected:%201"
    for path in (
        f"/org/model/resolve/main/file{injected}",
        f"/org/model/resolve/main{injected}/file",
        f"/org{injected}/model/resolve/main/file",
        f"/api/models/org/model/revision/main{injected}",
    ):
        status, headers, body = exchange(hub, get(path))
        names = [name for name, _ in headers]
        assert status in (400, 404) and "set-cookie" not in names and "x-injected" not in names, path
        message = dict(headers)["x-error-message"]
        assert "\\r\\nSet-Cookie: session=stolen" in message  # shown escaped, on the one header line
        assert "\r\nSet-Cookie: session=stolen" in json.loads(body)["error"]  # the JSON body keeps it as it was


def test_any_utf8_path_gets_an_answer_and_bad_utf8_a_400(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    status, headers, body = exchange(hub, get("/org/model/resolve/main/%E2%98%83.bin"))
    assert status == 404 and dict(headers)["x-error-code"] == "EntryNotFound"
    assert "☃.bin" in json.loads(body)["error"] and "\\u2603.bin" in dict(headers)["x-error-message"]
    assert exchange(hub, get("/org/%E2%98%83/resolve/main/x"))[0] == 400  # not a repository name
    assert exchange(hub, get("/api/models/%E2%98%83/%E2%98%83"))[0] == 400
    assert exchange(hub, get("/org/model/resolve/main/%FF%FE"))[0] == 400  # not UTF-8 once decoded
    assert exchange(hub, get("/org/model/resolve/main/\u2603".encode().decode("latin-1")))[0] == 400  # raw bytes
    assert exchange(hub, get("/org/model/resolve/main/%00"))[0] == 404
    assert api(hub, "t").model_info("org/model").sha  # still serving


def test_a_range_of_thousands_of_digits_is_ignored(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    api(hub, "t").create_commit("org/model", [CommitOperationAdd("a.bin", b"0123456789")], commit_message="a")
    status, _, body = exchange(hub, get("/org/model/resolve/main/a.bin", f"Range: bytes={'9' * 5000}-\r\n"))
    assert status == 200 and body == b"0123456789"  # an unusable Range is ignored, as HTTP says
    assert exchange(hub, get("/org/model/resolve/main/a.bin", "Range: bytes=2-4\r\n"))[2] == b"234"


# --- lengths, limits and memory --------------------------------------------------------------------


def test_negative_non_numeric_and_missing_lengths_are_refused(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    body = b'{"organization": "org", "name": "x"}'
    for length in ("-1", "abc", "1e3", "0x10"):
        request = f"POST /api/repos/create HTTP/1.1\r\nHost: hub\r\nContent-Length: {length}\r\n\r\n".encode() + body
        assert exchange(hub, request)[0] == 400, length
    no_length = b"POST /api/repos/create HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"
    status, headers, _ = exchange(hub, no_length)
    assert status == 411 and "Content-Length" in dict(headers)["x-error-message"]
    assert exchange(hub, no_length.replace(b"repos/create", b"models/org/model/commit/main"))[0] == 411
    assert not (hub.store.root / "repos" / "models" / "org" / "x").exists()


def test_chunked_bodies_obey_the_same_limits(serve):
    hub = serve()
    head = b"POST /api/repos/create HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b'{"organization": "org", "name": "chunked"}'
    assert exchange(hub, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))[0] == 200
    piece = b" " * (1 << 20)
    oversized = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(17)) + b"0\r\n\r\n"
    status, headers, _ = exchange(hub, head + b'%x\r\n{"a":\r\n' % 5 + oversized)
    assert status == 413 and "limit" in dict(headers)["x-error-message"]
    assert api(hub, "t").model_info("org/chunked").sha


def test_a_commit_line_over_the_limit_is_refused(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    header = json.dumps({"key": "header", "value": {"summary": "x" * (2 << 20)}}).encode() + b"\n"
    status, headers, _ = exchange(hub, post("/api/models/org/model/commit/main", header))
    assert status == 413 and "commit line 1 is over the limit" in dict(headers)["x-error-message"]
    assert history(hub) == ["initial commit"]


def rss_kib(pid: int, field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_a_50_mb_commit_line_streams_to_disk(tmp_path):
    command = [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(tmp_path / "hub"), "--port", "0"]
    server = subprocess.Popen(command, env=zoo_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        endpoint = server.stdout.readline().split("HF_ENDPOINT=")[1].strip()
        client = HfApi(endpoint=endpoint, token="t")
        client.create_repo("org/model")
        client.create_commit(
            "org/model", [CommitOperationAdd("warm-up.bin", os.urandom(1 << 20))], commit_message="warm up"
        )
        before = rss_kib(server.pid, "VmHWM")
        data = os.urandom(36 << 20)  # 48 MiB of base64 on one commit line
        client.create_commit("org/model", [CommitOperationAdd("model.safetensors", data)], commit_message="big")
        growth = rss_kib(server.pid, "VmHWM") - before
        cache = tmp_path / "cache"
        pulled = hf_hub_download("org/model", "model.safetensors", endpoint=endpoint, cache_dir=cache, token=False)
        assert Path(pulled).read_bytes() == data
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert growth < 16 << 10, f"the server's peak memory grew by {growth >> 10} MiB for a 48 MiB commit line"
    assert "Traceback" not in stderr


# --- stalled clients -------------------------------------------------------------------------------


def test_a_stalled_upload_is_cut_while_others_are_served(serve):
    hub = serve(request_timeout=1.0)
    api(hub, "t").create_repo("org/model")
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    stalled = socket.create_connection((host, int(port)), timeout=10)
    line = commit_line("model.safetensors", os.urandom(1 << 20))
    stalled.sendall(post("/api/models/org/model/commit/main", HEADER_LINE + line)[: -len(line) // 2])
    start = time.monotonic()
    for _ in range(3):  # meanwhile the hub answers others at once
        assert api(hub, "t").model_info("org/model").sha
    assert time.monotonic() - start < 1.0
    answer = b""
    while chunk := stalled.recv(1 << 16):
        answer += chunk
    waited = time.monotonic() - start
    stalled.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
    assert 0.9 < waited < 5, waited
    assert temp_files(hub) == [] and history(hub) == ["initial commit"]


def test_a_client_that_trickles_its_headers_is_dropped(serve):
    hub = serve(request_timeout=1.0)
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        start = time.monotonic()
        for piece in (b"GET /api/models/org/model HTTP/1.1\r\n", b"Host: h", b"u", b"b"):
            slow.sendall(piece)
            time.sleep(0.3)
        received = slow.recv(1 << 16)
        assert received == b"" and time.monotonic() - start < 5  # closed without an answer


def test_a_download_nobody_reads_is_dropped(serve, tmp_path):
    hub = serve(request_timeout=1.0)
    api(hub, "t").create_repo("org/model")
    data = os.urandom(16 << 20)  # more than the kernel's socket buffers hold
    api(hub, "t").create_commit("org/model", [CommitOperationAdd("big.bin", data)], commit_message="big")
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        reader.sendall(get("/org/model/resolve/main/big.bin"))
        time.sleep(2.5)  # read nothing for longer than the timeout
        received = 0
        while chunk := reader.recv(1 << 20):
            received += len(chunk)
    assert 0 < received < len(data)
    assert api(hub, "t").model_info("org/model").sha


# --- refused and killed uploads leave nothing behind ------------------------------------------------


def test_a_refused_upload_leaves_no_temporary_file_and_no_blob(serve):
    hub = serve(max_file_size=1000)
    api(hub, "t").create_repo("org/model")
    blobs = sorted(os.listdir(hub.store.blobs))
    with pytest.raises(HfHubHTTPError) as info:  # preupload already refuses it, by the size the client announces
        api(hub, "t").create_commit("org/model", [CommitOperationAdd("big.bin", b"x" * 2000)], commit_message="big")
    assert info.value.response.status_code == 413
    # a client that announces nothing: the first file lands in tmp/, the second is over the limit
    body = HEADER_LINE + commit_line("small.bin", b"s" * 500) + commit_line("big.bin", b"x" * 2000)
    status, headers, _ = exchange(hub, post("/api/models/org/model/commit/main", body))
    assert status == 413 and "over this hub's limit of 1000 bytes" in dict(headers)["x-error-message"]
    assert temp_files(hub) == [] and sorted(os.listdir(hub.store.blobs)) == blobs
    assert history(hub) == ["initial commit"]


def test_a_killed_upload_leaves_no_temporary_file(serve):
    hub = serve()
    api(hub, "t").create_repo("org/model")
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    line = commit_line("model.safetensors", os.urandom(8 << 20))
    with socket.create_connection((host, int(port)), timeout=10) as killed:
        killed.sendall(post("/api/models/org/model/commit/main", HEADER_LINE + line)[: 4 << 20])
        deadline = time.monotonic() + 10
        while not temp_files(hub) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temp_files(hub), "the upload reached the disk before the client went away"
    deadline = time.monotonic() + 10
    while temp_files(hub) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temp_files(hub) == [] and history(hub) == ["initial commit"]


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    tmp = tmp_path / "hub" / "tmp"
    tmp.mkdir(parents=True)
    for name in ("old.part", "lfs~model~org~m~" + "a" * 64, "fresh.part"):
        (tmp / name).write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for name in ("old.part", "lfs~model~org~m~" + "a" * 64):
        os.utime(tmp / name, (two_hours_ago, two_hours_ago))
    with HubServer(tmp_path / "hub"):
        assert sorted(os.listdir(tmp)) == ["fresh.part"]  # another process's upload may still be writing it


def test_stale_temporary_files_are_removed_under_the_roots_lock(tmp_path):
    """A commit claiming an LFS object holds the lock: a hub starting then must wait before it cleans tmp/."""
    from zoo_core.hub.store import Store

    store = Store(tmp_path / "hub")
    pending = store.tmp / ("lfs~model~org~m~" + "a" * 64)
    pending.write_bytes(b"uploaded an hour ago")
    two_hours_ago = time.time() - 7200
    os.utime(pending, (two_hours_ago, two_hours_ago))
    started: list[HubServer] = []
    with store.locked():
        starting = threading.Thread(target=lambda: started.append(HubServer(tmp_path / "hub")), daemon=True)
        starting.start()
        starting.join(1.0)
        assert pending.exists() and not started, "the hub cleaned tmp/ while another process held the lock"
    starting.join(30)
    assert started and not pending.exists()
    started[0].stop()


def test_fifty_stalled_uploads_do_not_stop_the_hub(serve):
    hub = serve(request_timeout=5.0)
    api(hub, "t").create_repo("org/model")
    host, port = hub.url.split("//")[1].rsplit(":", 1)
    stalled = [socket.create_connection((host, int(port)), timeout=10) for _ in range(50)]
    try:
        for connection in stalled:
            connection.sendall(post("/api/models/org/model/commit/main", HEADER_LINE + b'{"key": "fi')[:-4])
        done = threading.Event()
        threading.Thread(target=lambda: (api(hub, "t").model_info("org/model"), done.set()), daemon=True).start()
        assert done.wait(3)
    finally:
        for connection in stalled:
            connection.close()
