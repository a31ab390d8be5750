"""The local hub server, driven by the real ``huggingface_hub`` client over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import zoo_environment
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo_core.hub.server import CommitReader, HubServer
from zoo_core.hub.store import Store


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    server = HubServer(tmp_path / "hub").start()
    try:
        yield server
    finally:
        server.stop()


def api(hub: HubServer, token="secret") -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def download(hub, tmp_path, repo_id, filename, revision=None, token=False) -> Path:
    return Path(
        hf_hub_download(
            repo_id, filename, revision=revision, endpoint=hub.url, cache_dir=tmp_path / "cache", token=token
        )
    )


def raw(hub, method, path, body=None, headers=None):
    """(status, headers, body) of one request, error statuses included."""
    request = urllib.request.Request(hub.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


FILES = {
    "config.json": b'{"format": "zoo-model/1"}',
    "model.safetensors": bytes(range(256)) * 40,
    "README.md": b"---\nlicense: mit\n---\n# m\n",
}


def commit_files(hub, repo_id="org/model", files=FILES, **kwargs):
    return api(hub).create_commit(
        repo_id, [CommitOperationAdd(p, d) for p, d in files.items()], commit_message="add files", **kwargs
    )


def test_create_repo_exist_ok_and_409_carries_url(hub):
    url = api(hub).create_repo("org/model")
    assert url == f"{hub.url}/org/model" and url.repo_id == "org/model"
    assert api(hub).create_repo("org/model", exist_ok=True).repo_id == "org/model"
    with pytest.raises(HfHubHTTPError) as info:
        api(hub).create_repo("org/model")
    assert info.value.response.status_code == 409
    assert info.value.response.json()["url"] == f"{hub.url}/org/model"


def test_one_commit_for_three_files_and_downloads_pinned_to_it(hub, tmp_path):
    api(hub).create_repo("org/model")
    first = commit_files(hub)
    commits = api(hub).list_repo_commits("org/model")
    assert [c.title for c in commits] == ["add files", "initial commit"]
    assert commits[0].commit_id == first.oid and len(first.oid) == 40
    info = api(hub).model_info("org/model", revision=first.oid)
    assert sorted(s.rfilename for s in info.siblings) == sorted([*FILES, ".gitattributes"])

    # a later commit on main must not change what the pinned commit serves
    commit_files(hub, files={"model.safetensors": b"newer weights"})
    pinned = download(hub, tmp_path, "org/model", "model.safetensors", revision=first.oid)
    assert pinned.read_bytes() == FILES["model.safetensors"]
    assert pinned.parent.name == first.oid
    assert download(hub, tmp_path, "org/model", "model.safetensors").read_bytes() == b"newer weights"


def test_tree_listing_and_snapshot_download(hub, tmp_path):
    """``list_repo_tree`` (one level or recursive, from a folder) and ``snapshot_download`` of a pinned commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    files = {**FILES, "extra/notes.txt": b"notes", "extra/deep/more.bin": b"\x00\x01" * 10}
    api(hub).create_repo("org/model")
    commit = commit_files(hub, files=files)
    client = api(hub)
    top = {item.path: item for item in client.list_repo_tree("org/model", revision=commit.oid)}
    assert sorted(top) == [".gitattributes", "README.md", "config.json", "extra", "model.safetensors"]
    assert isinstance(top["extra"], RepoFolder)
    assert isinstance(top["model.safetensors"], RepoFile) and top["model.safetensors"].size == len(
        FILES["model.safetensors"]
    )
    assert (
        top["config.json"].blob_id
        == hashlib.sha1(b"blob %d\0" % len(FILES["config.json"]) + FILES["config.json"]).hexdigest()
    )
    deep = sorted(item.path for item in client.list_repo_tree("org/model", path_in_repo="extra", recursive=True))
    assert deep == ["extra/deep", "extra/deep/more.bin", "extra/notes.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(client.list_repo_tree("org/model", path_in_repo="missing"))

    folder = Path(snapshot_download("org/model", revision=commit.oid, endpoint=hub.url, cache_dir=tmp_path / "cache"))
    downloaded = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert downloaded.pop(".gitattributes") and downloaded == files


def test_resolve_headers_etag_is_git_blob_sha1_and_range(hub):
    api(hub).create_repo("org/model")
    oid = commit_files(hub).oid
    data = FILES["model.safetensors"]
    blob_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # what `git hash-object` prints
    status, headers, body = raw(hub, "HEAD", "/org/model/resolve/main/model.safetensors")
    assert status == 200 and body == b""
    assert headers["ETag"] == f'"{blob_sha1}"' and headers["X-Repo-Commit"] == oid
    assert headers["Content-Length"] == str(len(data))
    status, headers, body = raw(
        hub, "GET", f"/org/model/resolve/{oid}/model.safetensors", headers={"Range": "bytes=100-"}
    )
    assert status == 206 and body == data[100:] and headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    status, _, body = raw(hub, "GET", "/org/model/resolve/main/model.safetensors", headers={"Range": "bytes=5-9"})
    assert status == 206 and body == data[5:10]


def test_error_classes_for_missing_repo_revision_and_file(hub, tmp_path):
    api(hub).create_repo("org/model")
    oid = commit_files(hub).oid
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, "org/nothing", "config.json")
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "org/model", "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "org/model", "config.json", revision="f" * 40)
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, tmp_path, "org/model", "nothing.bin", revision=oid)
    status, headers, _ = raw(hub, "HEAD", "/org/model/resolve/main/nothing.bin")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and headers["X-Repo-Commit"] == oid


def test_create_pr_puts_the_commit_on_refs_pr_and_leaves_main(hub, tmp_path):
    api(hub).create_repo("org/model")
    main_head = commit_files(hub).oid
    pr = commit_files(hub, files={"model.safetensors": b"proposed"}, create_pr=True)
    assert pr.pr_revision == "refs/pr/1" and pr.pr_num == 1
    refs = api(hub).list_repo_refs("org/model", include_pull_requests=True)
    assert {r.ref: r.target_commit for r in refs.pull_requests} == {"refs/pr/1": pr.oid}
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_head}
    assert download(hub, tmp_path, "org/model", "model.safetensors", revision="refs/pr/1").read_bytes() == b"proposed"
    assert download(hub, tmp_path, "org/model", "model.safetensors", revision=pr.oid).read_bytes() == b"proposed"
    assert download(hub, tmp_path, "org/model", "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_upload_folder_pull_request_through_the_discussions_endpoints(hub, tmp_path):
    """With hf_xet installed, upload_folder(create_pr=True) opens the PR first, then commits onto it."""
    api(hub).create_repo("org/model")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("proposal")
    api(hub).upload_folder(repo_id="org/model", folder_path=folder, create_pr=True)
    refs = api(hub).list_repo_refs("org/model", include_pull_requests=True)
    assert [r.ref for r in refs.pull_requests] == ["refs/pr/1"]
    assert download(hub, tmp_path, "org/model", "notes.txt", revision="refs/pr/1").read_text() == "proposal"
    with pytest.raises(RemoteEntryNotFoundError):
        download(hub, tmp_path, "org/model", "notes.txt", revision=refs.branches[0].target_commit)


def test_branch_commit_and_stale_parent_refused(hub, tmp_path):
    api(hub).create_repo("org/model")
    main_head = commit_files(hub).oid
    api(hub).create_branch("org/model", branch="dev")
    with pytest.raises(HfHubHTTPError) as info:
        api(hub).create_branch("org/model", branch="dev")
    assert info.value.response.status_code == 409
    api(hub).create_branch("org/model", branch="dev", exist_ok=True)
    dev = commit_files(hub, files={"model.safetensors": b"dev weights"}, revision="dev")
    assert download(hub, tmp_path, "org/model", "model.safetensors", revision="dev").read_bytes() == b"dev weights"
    assert api(hub).model_info("org/model", revision="main").sha == main_head
    assert api(hub).list_repo_commits("org/model", revision="dev")[1].commit_id == main_head
    with pytest.raises(HfHubHTTPError) as info:
        commit_files(hub, files={"x.txt": b"x"}, revision="dev", parent_commit=main_head)
    assert info.value.response.status_code == 412 and "head" in info.value.server_message
    assert api(hub).model_info("org/model", revision="dev").sha == dev.oid
    with pytest.raises(RevisionNotFoundError):
        commit_files(hub, files={"x.txt": b"x"}, revision="not-created")


def test_private_repo_needs_a_token(hub, tmp_path):
    with pytest.raises(HfHubHTTPError) as info:
        api(hub, token=False).create_repo("org/secret", private=True)
    assert info.value.response.status_code == 401 and "token" in info.value.server_message
    api(hub).create_repo("org/secret", private=True)
    commit_files(hub, "org/secret")
    with pytest.raises(RepositoryNotFoundError):
        download(hub, tmp_path, "org/secret", "config.json", token=False)
    with pytest.raises(RepositoryNotFoundError):
        api(hub, token=False).model_info("org/secret", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        api(hub, token=False).create_commit("org/secret", [CommitOperationAdd("x", b"x")], commit_message="x")
    assert download(hub, tmp_path, "org/secret", "config.json", token="secret").read_bytes() == FILES["config.json"]
    assert api(hub).model_info("org/secret", revision="main").private is True


def test_path_traversal_is_rejected(hub):
    """The client refuses '..' itself, so send raw requests, as a hostile client would."""
    api(hub).create_repo("org/model")
    for bad in ("../outside.txt", "/etc/passwd", "a/../../b", "a//b", "a\\..\\b"):
        line = json.dumps(
            {"key": "file", "value": {"path": bad, "content": base64.b64encode(b"x").decode(), "encoding": "base64"}}
        )
        status, _, body = raw(
            hub,
            "POST",
            "/api/models/org/model/commit/main",
            body=b'{"key":"header","value":{"summary":"x"}}\n' + line.encode() + b"\n",
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert status == 400 and "invalid file path" in json.loads(body)["error"], bad
    status, _, _ = raw(
        hub,
        "POST",
        "/api/repos/create",
        body=json.dumps({"organization": "..", "name": "x"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    status, _, _ = raw(hub, "GET", "/%2E%2E/%2E%2E/resolve/main/repo.json")
    assert status == 400
    root = hub.store.root
    assert not (root.parent / "outside.txt").exists() and not (root / "repos" / "models" / "org" / "b").exists()
    assert [c.title for c in api(hub).list_repo_commits("org/model")] == ["initial commit"]


def test_oversized_body_is_refused_before_it_is_read(hub):
    connection = http.client.HTTPConnection(hub.url.split("//")[1], timeout=10)
    connection.putrequest("POST", "/api/repos/create")
    connection.putheader("Content-Length", str(17 << 20))  # announced, never sent: the answer must not wait for it
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()


def test_malformed_requests_get_a_4xx_answer_and_the_hub_keeps_serving(hub):
    api(hub).create_repo("org/model")
    json_headers = {"Content-Type": "application/json"}
    assert raw(hub, "POST", "/api/repos/create", body=b"[1, 2]", headers=json_headers)[0] == 400
    assert raw(hub, "POST", "/api/repos/create", body=b"{not json", headers=json_headers)[0] == 400
    for body in (
        b"not json\n",
        b'{"key": "file", "value": {"path": "a", "content": "***", "encoding": "base64"}}\n',
        b'{"key": "lfsFile", "value": {"path": "a", "oid": "x", "size": 1}}\n',
        b"[1]\n",
    ):
        status, _, answer = raw(
            hub,
            "POST",
            "/api/models/org/model/commit/main",
            body=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert status == 400 and json.loads(answer)["error"], body
    assert raw(hub, "GET", "/api/models/org/model/unknown-action")[0] == 404
    assert raw(hub, "GET", "/org/model/resolve/main")[0] == 404
    assert [c.title for c in api(hub).list_repo_commits("org/model")] == ["initial commit"]


def test_json_values_of_the_wrong_type_get_a_400(hub):
    api(hub).create_repo("org/model")
    json_headers = {"Content-Type": "application/json"}
    for body in (
        {"type": ["x"], "organization": "org", "name": "m"},
        {"type": {"model": 1}, "organization": "org", "name": "m"},
        {"organization": ["org"], "name": "m"},
        {"organization": "org", "name": 5},
        {"organization": "org", "name": "m", "visibility": ["private"]},
    ):
        status, _, answer = raw(hub, "POST", "/api/repos/create", json.dumps(body).encode(), json_headers)
        assert status == 400 and "must be a string" in json.loads(answer)["error"], body
    for starting_point in (5, ["main"], {"ref": "main"}, True):
        body = json.dumps({"startingPoint": starting_point}).encode()
        status, _, answer = raw(hub, "POST", "/api/models/org/model/branch/dev", body, json_headers)
        assert status == 400 and "startingPoint" in json.loads(answer)["error"], starting_point
    status, _, _ = raw(hub, "POST", "/api/models/org/model/branch/dev", b'{"startingPoint": "main"}', json_headers)
    assert status == 200
    assert [b.name for b in api(hub).list_repo_refs("org/model").branches] == ["dev", "main"]
    assert sorted(p.name for p in (hub.store.root / "repos" / "models" / "org").iterdir()) == ["model"]


def test_invalid_readme_metadata_is_refused_before_upload(hub):
    api(hub).create_repo("org/model")
    with pytest.raises(ValueError, match="Invalid metadata"):
        commit_files(hub, files={"README.md": b"---\nlicense: [mit\n---\n"})
    assert len(api(hub).list_repo_commits("org/model")) == 1


def test_stop_ends_kept_alive_connections(tmp_path):
    server = HubServer(tmp_path / "hub").start()
    client = api(server)
    client.create_repo("org/model")  # leaves a kept-alive connection in the client's pool
    server.stop()
    with pytest.raises(Exception) as info:
        client.create_repo("org/other")
    assert "connect" in type(info.value).__name__.lower() or "connect" in str(info.value).lower()


def test_serve_command_prints_the_endpoint_serves_and_stops_on_sigterm(tmp_path):
    command = [
        sys.executable,
        "-c",
        "from zoo_core.hub.command import hub_group; hub_group()",
        "serve",
        str(tmp_path / "hub"),
        "--port",
        "0",
    ]
    process = subprocess.Popen(
        command, env=zoo_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = process.stdout.readline()  # printed once the port is bound
        endpoint = process.stdout.readline().split("HF_ENDPOINT=")[1].strip()
        assert endpoint in first and endpoint.startswith("http://127.0.0.1:")
        assert HfApi(endpoint=endpoint, token="t").create_repo("org/model").repo_id == "org/model"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait(timeout=20)
    assert process.returncode == 0 and "hub stopped" in stderr and "Traceback" not in stderr
    assert (tmp_path / "hub" / "repos" / "models" / "org" / "model" / "repo.json").is_file()


def test_create_pr_with_a_branch_name_as_parent_commit(hub):
    """The client only sends commit ids as parentCommit; other clients send a branch name."""
    api(hub).create_repo("org/model")
    main_head = commit_files(hub).oid
    line = json.dumps(
        {"key": "file", "value": {"content": base64.b64encode(b"pr").decode(), "path": "pr.txt", "encoding": "base64"}}
    )
    body = json.dumps({"key": "header", "value": {"summary": "proposal", "parentCommit": "main"}}) + "\n" + line + "\n"
    status, _, answer = raw(
        hub,
        "POST",
        "/api/models/org/model/commit/main?create_pr=1",
        body=body.encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert status == 200 and json.loads(answer)["pullRequestUrl"].endswith("/discussions/1")
    commits = api(hub).list_repo_commits("org/model", revision="refs/pr/1")
    assert [c.title for c in commits][:2] == ["proposal", "add files"] and commits[1].commit_id == main_head
    assert api(hub).model_info("org/model").sha == main_head  # main is untouched


def serve_process(root: Path, *options: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "zoo_core.cli", "hub", "serve", str(root), "--port", "0", *options]
    process = subprocess.Popen(
        command, env=zoo_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.readline()
    return process, process.stdout.readline().split("HF_ENDPOINT=")[1].strip()


def test_two_processes_on_one_root_lose_no_commit(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    processes = [serve_process(tmp_path / "hub") for _ in range(2)]
    try:
        clients = [HfApi(endpoint=endpoint, token="t") for _, endpoint in processes]
        clients[0].create_repo("org/model")

        def one_commit(number: int) -> str:
            operation = CommitOperationAdd(f"file-{number}.txt", b"%d" % number)
            return clients[number % 2].create_commit("org/model", [operation], commit_message=f"commit {number}").oid

        with ThreadPoolExecutor(max_workers=12) as pool:
            oids = list(pool.map(one_commit, range(24)))  # each answered 200, else map raises
        commits = clients[1].list_repo_commits("org/model")
        assert len(commits) == 25 and sorted(c.commit_id for c in commits[:-1]) == sorted(oids)
        files = {s.rfilename for s in clients[0].model_info("org/model").siblings}
        assert files == {".gitattributes", *(f"file-{n}.txt" for n in range(24))}
    finally:
        for process, _ in processes:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
            assert "Traceback" not in stderr


def gc(root: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo_core.cli", "hub", "gc", str(root), *options],
        env=zoo_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_gc_removes_only_unreferenced_blobs(hub, tmp_path):
    api(hub).create_repo("org/model")
    commit_files(hub)
    commit_files(hub, files={"model.safetensors": b"newer weights"})  # the older blob stays: a commit names it
    root = hub.store.root
    referenced = sorted(p.name for p in (root / "blobs").iterdir())
    orphan = hashlib.sha256(b"left by a crash").hexdigest()
    (root / "blobs" / orphan).write_bytes(b"left by a crash")
    (root / "tmp" / "killed.part").write_bytes(b"x" * 100)
    hours_ago = time.time() - 7200
    os.utime(root / "tmp" / "killed.part", (hours_ago, hours_ago))

    dry = gc(root, "--dry-run")
    assert dry.returncode == 0 and f"would remove blobs/{orphan} (15 bytes)" in dry.stdout
    assert "would remove tmp/killed.part (100 bytes)" in dry.stdout and "would free 115 bytes" in dry.stdout
    assert (root / "blobs" / orphan).exists() and (root / "tmp" / "killed.part").exists()

    done = gc(root)
    assert done.returncode == 0 and f"removed blobs/{orphan}" in done.stdout and "freed 115 bytes" in done.stdout
    assert sorted(p.name for p in (root / "blobs").iterdir()) == referenced
    assert not (root / "tmp" / "killed.part").exists()
    first = api(hub).list_repo_commits("org/model")[1].commit_id
    assert (
        download(hub, tmp_path, "org/model", "model.safetensors", revision=first).read_bytes()
        == FILES["model.safetensors"]
    )
    assert "freed 0 bytes" in gc(root).stdout


def test_gc_refuses_to_guess_when_a_commit_is_unreadable(hub):
    api(hub).create_repo("org/model")
    root = hub.store.root
    (root / "blobs" / ("0" * 64)).write_bytes(b"orphan")
    commit = next((root / "repos" / "models" / "org" / "model" / "commits").iterdir())
    commit.write_text("{broken")
    result = gc(root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert commit.name in result.stderr and "nothing was removed" in result.stderr
    assert (root / "blobs" / ("0" * 64)).exists()
    assert gc(hub.store.root.parent / "not-a-hub").returncode == 2


def test_gc_dry_run_writes_nothing_and_gc_skips_folders_in_blobs(tmp_path):
    root = tmp_path / "hub"
    orphan = hashlib.sha256(b"orphan").hexdigest()
    (root / "blobs" / "not-a-blob").mkdir(parents=True)  # made by hand: nobody's blob, and not a file
    (root / "blobs" / orphan).write_bytes(b"orphan")
    dry = gc(root, "--dry-run")
    assert dry.returncode == 0 and "Traceback" not in dry.stderr
    expected = [f"would remove blobs/{orphan} (6 bytes)", "would free 6 bytes (0.0 MiB) in 1 files"]
    assert dry.stdout.splitlines() == expected
    assert sorted(p.name for p in root.iterdir()) == ["blobs"]  # no tmp/, no hub.lock
    done = gc(root)
    assert done.returncode == 0 and "Traceback" not in done.stderr and f"removed blobs/{orphan}" in done.stdout
    assert sorted(p.name for p in (root / "blobs").iterdir()) == ["not-a-blob"]


def test_gc_that_cannot_write_is_a_one_line_error(tmp_path):
    root = tmp_path / "hub"
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / ("0" * 64)).write_bytes(b"orphan")
    (root / "hub.lock").mkdir()  # the lock cannot be taken: an OSError, as a read-only root gives
    result = gc(root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: cannot collect garbage in {root}: {root / 'hub.lock'}: Is a directory; "
        "check that this user may write there, then run it again"
    )
    assert (root / "blobs" / ("0" * 64)).exists()


@pytest.fixture
def lfs_hub(tmp_path, monkeypatch):
    """A hub that takes files of 1000 bytes or more through Git LFS, and a client with Xet switched off."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with HubServer(tmp_path / "hub", lfs_min_size=1000) as server:
        yield server


def test_large_files_travel_as_raw_bytes_through_lfs(lfs_hub, tmp_path):
    hub = lfs_hub
    api(hub).create_repo("org/model")
    weights = bytes(range(256)) * 40
    oid = commit_files(hub, files={"model.safetensors": weights, "config.json": b"{}"}).oid
    sha256 = hashlib.sha256(weights).hexdigest()
    siblings = {s.rfilename: s for s in api(hub).model_info("org/model", files_metadata=True).siblings}
    assert siblings["model.safetensors"].lfs.sha256 == sha256 and siblings["config.json"].lfs is None
    status, headers, _ = raw(hub, "HEAD", "/org/model/resolve/main/model.safetensors")
    assert status == 200 and headers["ETag"] == f'"{sha256}"' and headers["X-Repo-Commit"] == oid
    assert download(hub, tmp_path, "org/model", "model.safetensors").read_bytes() == weights
    assert (hub.store.root / "blobs" / sha256).read_bytes() == weights
    # the same bytes again: the batch API answers "present", nothing is uploaded, the commit still lands
    again = commit_files(hub, files={"copy.safetensors": weights})
    assert api(hub).list_repo_commits("org/model")[0].commit_id == again.oid


def lfs_batch(hub, repo_id: str, oid: str, size: int) -> dict:
    body = json.dumps({"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]})
    status, _, answer = raw(
        hub,
        "POST",
        f"/{repo_id}.git/info/lfs/objects/batch",
        body=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    return json.loads(answer)["objects"][0]


def upload_lfs(hub, repo_id: str, data: bytes) -> str:
    """Upload ``data`` through the LFS batch API and its signed PUT; returns its sha256."""
    oid = hashlib.sha256(data).hexdigest()
    href = lfs_batch(hub, repo_id, oid, len(data))["actions"]["upload"]["href"]
    assert raw(hub, "PUT", href.split(hub.url)[1], body=data)[0] == 200
    return oid


def commit_lfs(hub, repo_id: str, files: dict[str, tuple[str, int]]) -> int:
    """Commit lfsFile lines ({path: (sha256, size)}) to main; returns the status."""
    lines = [{"key": "header", "value": {"summary": "lfs"}}]
    for path, (oid, size) in files.items():
        lines.append({"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}})
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    headers = {"Content-Type": "application/x-ndjson"}
    return raw(hub, "POST", f"/api/models/{repo_id}/commit/main", body=body, headers=headers)[0]


def test_lfs_uploads_are_signed_checked_and_scoped_to_their_repo(lfs_hub):
    hub = lfs_hub
    for repo_id in ("org/model", "org/other"):
        api(hub).create_repo(repo_id)
    data = b"w" * 2000
    oid = hashlib.sha256(data).hexdigest()
    href = lfs_batch(hub, "org/model", oid, len(data))["actions"]["upload"]["href"]
    path = href.split(hub.url)[1]
    tampered = path.replace(f"size={len(data)}", f"size={len(data) + 1}")
    assert raw(hub, "PUT", tampered, body=data + b"x")[0] == 403
    assert raw(hub, "PUT", path.replace("signature=", "signature=0"), body=data)[0] == 403
    assert raw(hub, "PUT", path.replace("signature=", "signature=%E2%98%83"), body=data)[0] == 403
    assert raw(hub, "PUT", path, body=b"v" * 2000)[0] == 400  # other bytes than the oid names
    assert sorted(p.name for p in (hub.store.root / "tmp").iterdir()) == []
    assert raw(hub, "PUT", path, body=data)[0] == 200

    assert commit_lfs(hub, "org/other", {"w.bin": (oid, len(data))}) == 400  # uploaded for org/model only
    assert commit_lfs(hub, "org/model", {"w.bin": (oid, len(data))}) == 200
    assert commit_lfs(hub, "org/other", {"w.bin": (oid, len(data))}) == 400  # now in blobs/, but not org/other's
    assert "actions" not in lfs_batch(hub, "org/model", oid, len(data))  # the hub has it: nothing to upload
    assert "actions" in lfs_batch(hub, "org/other", oid, len(data))


def test_an_lfs_file_must_have_the_size_of_the_object_the_hub_holds(lfs_hub):
    hub = lfs_hub
    api(hub).create_repo("org/model")
    data = b"w" * 2000
    oid = upload_lfs(hub, "org/model", data)
    assert commit_lfs(hub, "org/model", {"w.bin": (oid, 1)}) == 400  # waiting in tmp/, of another size
    assert commit_lfs(hub, "org/model", {"w.bin": (oid, len(data))}) == 200
    head = api(hub).model_info("org/model").sha
    for size in (1, len(data) + 1, 10**9):  # in blobs/ now: the hub's copy says how big it is
        assert commit_lfs(hub, "org/model", {"copy.bin": (oid, size)}) == 400, size
        answer = lfs_batch(hub, "org/model", oid, size)
        assert "actions" not in answer and answer["error"]["code"] == 422, size
    assert api(hub).model_info("org/model").sha == head
    assert commit_lfs(hub, "org/model", {"copy.bin": (oid, len(data))}) == 200
    for name in ("w.bin", "copy.bin"):
        status, headers, body = raw(hub, "GET", f"/org/model/resolve/main/{name}")
        assert status == 200 and headers["Content-Length"] == str(len(data)) and body == data


def test_a_commit_of_many_lfs_files_reads_the_repo_history_once(lfs_hub, monkeypatch):
    hub = lfs_hub
    api(hub).create_repo("org/model")
    files = {f"w{n}.bin": (upload_lfs(hub, "org/model", bytes([n]) * 1000), 1000) for n in range(4)}
    assert commit_lfs(hub, "org/model", dict(list(files.items())[:2])) == 200
    read = hub.store.repo_blobs
    calls = []
    monkeypatch.setattr(hub.store, "repo_blobs", lambda *args: calls.append(args) or read(*args))
    assert commit_lfs(hub, "org/model", files) == 200  # two already committed, two waiting in tmp/
    assert calls == [("model", "org/model")]
    assert sorted(s.rfilename for s in api(hub).model_info("org/model").siblings) == [".gitattributes", *files]


def test_a_client_using_xet_is_told_to_switch_it_off(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with HubServer(tmp_path / "hub", lfs_min_size=1000) as hub:
        api(hub).create_repo("org/model")
        status, headers, _ = raw(hub, "GET", "/api/models/org/model/xet-write-token/main")
        assert status == 501 and "HF_HUB_DISABLE_XET=1" in headers["X-Error-Message"]
        small = commit_files(hub, files={"config.json": b"{}"})  # under the LFS size: inline, Xet or not
        assert api(hub).model_info("org/model").sha == small.oid


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(1, 64), max_size=40))
def test_the_commit_reader_decodes_the_same_files_however_the_body_is_cut(tmp_path_factory, data, cuts):
    """Pieces of any size: escapes, quotes and base64 groups cut in two; keys in another order; '\\/' escapes."""
    summary = 'a "quoted" \\ summary with \u2603 and "content": "not a file"'
    header = json.dumps({"key": "header", "value": {"summary": summary, "content": 1}})
    escaped = base64.b64encode(data).decode().replace("/", "\\/")  # what a client escaping '/' sends
    line = '{"value": {"path": "w.bin", "encoding": "base64", "content" : "' + escaped + '"}, "key": "file"}'
    body = (header + "\n\n" + line + "\n").encode()
    reader = CommitReader(Store(tmp_path_factory.mktemp("store")), max_file_size=1 << 20)
    start = 0
    for cut in cuts:
        reader.feed(body[start : start + cut])
        start += cut
    reader.feed(body[start:])
    reader.finish()
    staged = reader.added["w.bin"]
    assert reader.header["summary"] == summary and staged.path.read_bytes() == data
    assert staged.sha256 == hashlib.sha256(data).hexdigest() and staged.size == len(data)
    assert staged.sha1 == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    reader.abort()
    assert not staged.path.exists()


def test_the_commit_reader_reads_a_line_of_escapes_in_linear_time(tmp_path):
    """A find per delimiter scanned to the end of the piece for each escape: 1 MiB of them took seconds."""
    escapes = b"\\n" * ((1 << 20) // 2 - 40)  # a commit line just under MAX_LINE_BYTES
    body = b'{"key": "header", "value": {"summary": "' + escapes + b'"}}\n'
    reader = CommitReader(Store(tmp_path / "store"), max_file_size=1 << 20)
    started = time.perf_counter()
    reader.feed(body)
    reader.finish()
    elapsed = time.perf_counter() - started
    assert reader.header["summary"] == "\n" * (len(escapes) // 2) and elapsed < 2.0, elapsed
