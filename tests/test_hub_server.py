"""The local hub server, driven by the real ``huggingface_hub`` client over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from conftest import zoo_environment
from zoo_core.hub.server import HubServer


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
    return Path(hf_hub_download(repo_id, filename, revision=revision, endpoint=hub.url, cache_dir=tmp_path / "cache",
                                token=token))


def raw(hub, method, path, body=None, headers=None):
    """(status, headers, body) of one request, error statuses included."""
    request = urllib.request.Request(hub.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


FILES = {"config.json": b'{"format": "zoo-model/1"}', "model.safetensors": bytes(range(256)) * 40,
         "README.md": b"---\nlicense: mit\n---\n# m\n"}


def commit_files(hub, repo_id="org/model", files=FILES, **kwargs):
    return api(hub).create_commit(repo_id, [CommitOperationAdd(p, d) for p, d in files.items()],
                                  commit_message="add files", **kwargs)


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


def test_resolve_headers_etag_is_git_blob_sha1_and_range(hub):
    api(hub).create_repo("org/model")
    oid = commit_files(hub).oid
    data = FILES["model.safetensors"]
    blob_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # what `git hash-object` prints
    status, headers, body = raw(hub, "HEAD", "/org/model/resolve/main/model.safetensors")
    assert status == 200 and body == b""
    assert headers["ETag"] == f'"{blob_sha1}"' and headers["X-Repo-Commit"] == oid
    assert headers["Content-Length"] == str(len(data))
    status, headers, body = raw(hub, "GET", f"/org/model/resolve/{oid}/model.safetensors",
                                headers={"Range": "bytes=100-"})
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
        line = json.dumps({"key": "file", "value": {"path": bad, "content": base64.b64encode(b"x").decode(),
                                                     "encoding": "base64"}})
        status, _, body = raw(hub, "POST", "/api/models/org/model/commit/main",
                              body=b'{"key":"header","value":{"summary":"x"}}\n' + line.encode() + b"\n",
                              headers={"Content-Type": "application/x-ndjson"})
        assert status == 400 and "invalid file path" in json.loads(body)["error"], bad
    status, _, _ = raw(hub, "POST", "/api/repos/create", body=json.dumps({"organization": "..", "name": "x"}).encode(),
                       headers={"Content-Type": "application/json"})
    assert status == 400
    status, _, _ = raw(hub, "GET", "/%2E%2E/%2E%2E/resolve/main/repo.json")
    assert status == 400
    root = Path(hub._server.RequestHandlerClass.store.root)
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
    for body in (b"not json\n", b'{"key": "file", "value": {"path": "a", "content": "***", "encoding": "base64"}}\n',
                 b'{"key": "lfsFile", "value": {"path": "a", "oid": "x", "size": 1}}\n', b"[1]\n"):
        status, _, answer = raw(hub, "POST", "/api/models/org/model/commit/main", body=body,
                                headers={"Content-Type": "application/x-ndjson"})
        assert status == 400 and json.loads(answer)["error"], body
    assert raw(hub, "GET", "/api/models/org/model/unknown-action")[0] == 404
    assert raw(hub, "GET", "/org/model/resolve/main")[0] == 404
    assert [c.title for c in api(hub).list_repo_commits("org/model")] == ["initial commit"]


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
    command = [sys.executable, "-c", "from zoo_core.hub.command import hub_group; hub_group()",
               "serve", str(tmp_path / "hub"), "--port", "0"]
    process = subprocess.Popen(command, env=zoo_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
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
