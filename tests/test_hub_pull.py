"""``zoo pull``, verification, ``zoo.lock`` and ``zoo_core.load`` against a real Hub mirror.

``olah`` serves git repositories made by the tests over the Hub protocol on 127.0.0.1; the
client is the real ``huggingface_hub``. Its retries are switched off in these tests only,
so that faults fail in milliseconds instead of after a 23 s backoff.
"""

from __future__ import annotations

import functools
import hashlib
import json
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from olah_mirror import OlahMirror, make_model_repo

import zoo_core
from zoo_core.errors import ConfigError, DataError
from zoo_core.hub import client
from zoo_core.hub.client import Lock, UnverifiedWeightsWarning, hub_cache_dir, pull, resolve_weights
from zoo_core.hub.command import pull_command
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.plugins import reset_registry

MODEL_CONFIG = {
    "num_classes": 3,
    "backbone": {"type": "timm", "args": {"model_name": "test_resnet", "out_indices": [1, 2]}},
    "heads": [{"type": "fcn", "args": {"channels": 8, "num_convs": 1}}],
}
CLASS_NAMES = ["road", "sky", "tree"]
REPO = "zoo-test/tiny"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    torch.manual_seed(0)
    model = build_segmentor(MODEL_CONFIG).eval()
    out = tmp_path_factory.mktemp("model")
    save_model_dir(model, MODEL_CONFIG, out, extra={"class_names": CLASS_NAMES})
    return {name: (out / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    with OlahMirror(tmp_path_factory.mktemp("olah")) as mirror:
        yield mirror


@pytest.fixture(scope="module")
def published(mirror, model_files) -> dict[str, str]:
    """REPO with two commits: the model, then the same model with other weights bytes."""
    first = make_model_repo(mirror.mirrors_dir, REPO, model_files)
    changed = bytearray(model_files["model.safetensors"])
    changed[-1] ^= 0xFF  # the last float of the last tensor: still a loadable file
    second = make_model_repo(mirror.mirrors_dir, REPO, {"model.safetensors": bytes(changed)})
    return {
        "first": first,
        "second": second,
        "first_sha": sha256(model_files["model.safetensors"]),
        "second_sha": sha256(bytes(changed)),
        "config_sha": sha256(model_files["config.json"]),
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Hub:
    """The per-test client environment: an empty cache and a card folder, pointed at an endpoint.

    ``config_sha`` is the sha256 of the published config.json, which a card pins beside the weights'.
    """

    def __init__(self, root: Path, monkeypatch, endpoint: str, config_sha: str):
        self.root, self.monkeypatch, self.config_sha = root, monkeypatch, config_sha
        self.cards = root / "cards"
        self.cards.mkdir()
        for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN", "ZOO_DISABLE_PLUGIN_AUTOLOAD"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(root / "hf-home"))
        monkeypatch.setenv("ZOO_REGISTRY_PATH", str(self.cards))

    def card(
        self,
        name: str,
        revision: str,
        sha: str = "",
        *,
        repo_id: str = REPO,
        verified: bool = True,
        filename: str = "model.safetensors",
        size: int | None = None,
        legacy: bool = False,
    ) -> str:
        """A card pinning the weights' sha256 ``sha`` and the config's; ``legacy``: the weights' only (older cards)."""
        hub = {"repo_id": repo_id, "revision": revision, "filename": filename}
        if sha and not legacy:
            hub["files"] = {"config.json": self.config_sha, "model.safetensors": sha}
        else:
            hub["sha256"] = sha
        if size:
            hub["size"] = size
        card = {
            "name": name,
            "plugin": {"distribution": "zoo-core", "min_version": "0.1"},
            "model": {"config": MODEL_CONFIG},
            "num_classes": 3,
            "class_names": CLASS_NAMES,
            "hub": hub,
            "verified": verified,
            "license": "apache-2.0",
        }
        (self.cards / f"{name}.yaml").write_text(yaml.safe_dump(card))
        return name

    def files(self) -> list[str]:
        """Every file and link in the cache, relative, without the lock and record folders."""
        cache = hub_cache_dir()
        return sorted(
            str(p.relative_to(cache))
            for p in cache.rglob("*")
            if not p.is_dir() and ".locks" not in p.parts and ".zoo-sha256" not in p.parts
        )


@pytest.fixture
def fast_fail(monkeypatch):
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(file_download, "_DEFAULT_RETRY_ON_EXCEPTIONS", ())
    monkeypatch.setattr(file_download, "_DEFAULT_RETRY_ON_STATUS_CODES", ())
    # no resuming of a broken body either (it sleeps a second per attempt)
    monkeypatch.setattr(file_download, "http_get", functools.partial(file_download.http_get, _nb_retries=0))


@pytest.fixture
def hub(tmp_path, monkeypatch, mirror, fast_fail, model_files):
    reset_registry()
    yield Hub(tmp_path, monkeypatch, mirror.endpoint, sha256(model_files["config.json"]))
    reset_registry()


# --- the happy path, the cache and offline use ------------------------------------------------


def test_pull_pinned_commit_verifies_and_the_cache_then_needs_no_server(tmp_path, monkeypatch, fast_fail, model_files):
    with OlahMirror(tmp_path / "olah") as own:  # this test stops its server
        commit = make_model_repo(own.mirrors_dir, REPO, model_files)
        hub = Hub(tmp_path, monkeypatch, own.endpoint, sha256(model_files["config.json"]))
        weights_sha = sha256(model_files["model.safetensors"])
        hub.card("tiny.test", commit, weights_sha, size=len(model_files["model.safetensors"]))
        resolved = pull("tiny.test")
    assert (resolved.name, resolved.repo_id, resolved.revision) == ("tiny.test", REPO, commit)
    assert (resolved.filename, resolved.sha256, resolved.verified) == ("model.safetensors", weights_sha, True)
    assert resolved.path == tmp_path / "hf-home" / "hub" / "models--zoo-test--tiny" / "snapshots" / commit
    for name, data in model_files.items():
        assert (resolved.path / name).read_bytes() == data

    # the server is gone: the cached, verified copy is used
    assert pull("tiny.test") == resolved
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pull("tiny.test") == resolved

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(DataError) as err:
        pull("tiny.test")
    assert str(err.value).startswith(
        f"HF_HUB_OFFLINE is set and {REPO}@{commit}/model.safetensors is not in the "
        f"cache {tmp_path / 'empty-home' / 'hub'}; unset HF_HUB_OFFLINE"
    )
    monkeypatch.delenv("HF_HUB_OFFLINE")
    started = time.monotonic()
    with pytest.raises(
        DataError,
        match=rf"cannot reach {own.endpoint} to download {REPO}@{commit}/model.safetensors"
        ".*set HF_HUB_OFFLINE=1",
    ):
        pull("tiny.test")
    assert time.monotonic() - started < 10
    assert hub.files() == []  # a failed pull leaves nothing behind


def test_a_cached_file_is_verified_again_and_a_changed_copy_is_refused(hub, published, monkeypatch):
    hub.card("tiny.test", published["first"], published["first_sha"])
    resolved = pull("tiny.test")
    with monkeypatch.context() as patched:  # an unchanged cached file is not hashed again
        patched.setattr(client, "file_sha256", lambda path: pytest.fail(f"{path} was hashed again"))
        assert pull("tiny.test") == resolved
    blob = (resolved.path / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))  # a damaged cache: same size, new modification time
    with pytest.raises(
        DataError,
        match=f"sha256 mismatch for {REPO}@{published['first']}/model.safetensors: "
        f"expected {published['first_sha']} \\(card 'tiny.test'\\), found ",
    ):
        pull("tiny.test")
    assert not blob.exists() and not (resolved.path / "model.safetensors").exists()
    assert pull("tiny.test").sha256 == published["first_sha"]  # downloaded again


def test_local_dir_gets_the_verified_files(hub, published, model_files, tmp_path):
    hub.card("tiny.test", published["first"], published["first_sha"])
    resolved = pull("tiny.test", local_dir=tmp_path / "out")
    assert resolved.path == tmp_path / "out" and resolved.verified
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == model_files["model.safetensors"]
    assert not (tmp_path / "out" / "model.safetensors").is_symlink()


def test_a_cache_that_cannot_be_written_still_serves_pull(hub, published, run_zoo):
    """A shared, read-only cache: the sha256 record is an optimisation and is skipped when it cannot be written."""
    hub.card("tiny.test", published["first"], published["first_sha"])
    resolved = pull("tiny.test")
    records = hub_cache_dir() / ".zoo-sha256"
    for record in records.iterdir():
        record.unlink()
    records.rmdir()
    records.write_text("")  # a file where the folder goes: the records cannot be written, even by root
    cache = [hub_cache_dir(), *(p for p in hub_cache_dir().rglob("*") if p.is_dir() and not p.is_symlink())]
    for folder in cache:
        folder.chmod(0o555)  # and read-only for everyone else
    try:
        result = run_zoo("pull", "tiny.test", env={"HF_HUB_OFFLINE": "1", "ZOO_REGISTRY_PATH": str(hub.cards)})
    finally:
        for folder in cache:
            folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"sha256 {published['first_sha']} (verified against card 'tiny.test')" in result.stdout
    assert f"files  {resolved.path}" in result.stdout
    assert records.read_text() == ""


# --- faults ---------------------------------------------------------------------------------


def test_one_flipped_byte_is_refused_and_removed_from_the_cache(hub, published):
    hub.card("tiny.test", published["second"], published["first_sha"])  # the card vouches for other bytes
    with pytest.raises(DataError) as err:
        pull("tiny.test")
    assert str(err.value).startswith(
        f"sha256 mismatch for {REPO}@{published['second']}/model.safetensors: expected {published['first_sha']} "
        f"(card 'tiny.test'), found {published['second_sha']}; the file was removed from the cache and nothing "
        "was loaded"
    )
    assert hub.files() == ["CACHEDIR.TAG"]


def test_size_from_the_card_is_checked(hub, published, model_files):
    hub.card("tiny.test", published["first"], published["first_sha"], size=len(model_files["model.safetensors"]) + 1)
    with pytest.raises(DataError, match="size mismatch .* expected .* bytes \\(card 'tiny.test'\\), found"):
        pull("tiny.test")
    assert hub.files() == ["CACHEDIR.TAG"]


def test_unknown_repository_file_and_revision(hub, published, mirror):
    hub.card("missing-repo", published["first"], published["first_sha"], repo_id="zoo-test/missing")
    with pytest.raises(DataError) as err:  # olah says "no such file" for a missing repository at a commit id
        pull("missing-repo")
    assert mirror.endpoint in str(err.value) and f"zoo-test/missing at revision {published['first']}" in str(err.value)
    assert "check the card's hub.repo_id" in str(err.value)

    hub.card("missing-file", published["first"], published["first_sha"], filename="sub/model.safetensors")
    with pytest.raises(
        DataError,
        match=f"no file 'sub/model.safetensors' in repository {REPO} at revision "
        f"{published['first']}; check the card's hub.repo_id and hub.filename",
    ):
        pull("missing-file")

    hub.card("tiny.test", published["first"], published["first_sha"])
    with pytest.raises(DataError, match=f"has no repository {REPO} with a revision 'no-such-branch'"):
        pull("tiny.test", revision="no-such-branch")

    hub.card("missing-commit", "0123456789abcdef0123456789abcdef01234567", published["first_sha"])
    started = time.monotonic()
    with pytest.raises(DataError, match=f"{REPO}@0123456789abcdef0123456789abcdef01234567/model.safetensors"):
        pull("missing-commit")
    assert time.monotonic() - started < 10
    assert [f for f in hub.files() if f != "CACHEDIR.TAG" and ".no_exist" not in f] == []


class CutShortProxy:
    """A TCP proxy to the mirror that passes HEAD answers whole and stops GET bodies after ``body_bytes``.

    ``clean=True`` ends the body with a normal close (an HTTP/1.0 upstream answer is
    delimited by the close); otherwise the chunked body stops mid-chunk, a broken download.
    """

    def __init__(self, upstream_port: int, body_bytes: int, clean: bool):
        self.upstream_port, self.body_bytes, self.clean = upstream_port, body_bytes, clean
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.stopping = threading.Event()
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CutShortProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.server.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            with client, socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5) as upstream:
                client.settimeout(5)
                self._relay(client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = client.recv(65536)
            if not chunk:
                return
            request += chunk
        head, _, _ = request.partition(b"\r\n\r\n")
        self.requests.append(head.decode("latin-1"))
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        is_get = lines[0].startswith(b"GET ")
        if is_get and self.clean:
            lines[0] = lines[0].rsplit(b" ", 1)[0] + b" HTTP/1.0"
        upstream.sendall(b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n")
        answer = b""
        while True:
            chunk = upstream.recv(65536)
            if not chunk:
                break
            answer += chunk
            header_end = answer.find(b"\r\n\r\n")
            if is_get and header_end >= 0 and len(answer) > header_end + 4 + self.body_bytes:
                answer = answer[: header_end + 4 + self.body_bytes]
                break
        client.sendall(answer)


@pytest.mark.parametrize("clean", [True, False], ids=["closed-early", "broken-chunk"])
def test_a_download_cut_short_leaves_nothing_partial(hub, published, mirror, monkeypatch, clean):
    hub.card("tiny.test", published["first"], published["first_sha"])
    with CutShortProxy(mirror.port, body_bytes=5000, clean=clean) as proxy:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        with pytest.raises(DataError) as err:
            pull("tiny.test")
    assert [r.split(" ", 1)[0] for r in proxy.requests] == ["HEAD", "GET"]
    assert all("authorization: bearer hf_test_token" in r.lower() for r in proxy.requests)
    assert str(err.value).startswith(
        f"the download of {REPO}@{published['first']}/model.safetensors from "
        f"http://127.0.0.1:{proxy.port} failed or was cut short: "
    )
    assert "nothing partial was kept" in str(err.value)
    assert [f for f in hub.files() if f != "CACHEDIR.TAG"] == []
    monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
    assert pull("tiny.test").verified  # and the next pull completes


# --- unverified weights and the lock ------------------------------------------------------------


def test_unverified_card_warns_and_the_lock_records_what_was_seen(hub, published, tmp_path):
    hub.card("third-party", published["first"], verified=False)
    with pytest.warns(
        UnverifiedWeightsWarning,
        match="card 'third-party' is marked verified: false .* model.safetensors has sha256 " + published["first_sha"],
    ):
        resolved = pull("third-party")
    assert (resolved.sha256, resolved.verified) == (published["first_sha"], False)
    lock = Lock()
    lock.add(resolved)
    lock.save(tmp_path / "zoo.lock")
    assert json.loads((tmp_path / "zoo.lock").read_text()) == {
        "version": 2,
        "weights": {
            "third-party": {
                "filename": "model.safetensors",
                "repo_id": REPO,
                "revision": published["first"],
                "files": {"config.json": published["config_sha"], "model.safetensors": published["first_sha"]},
            }
        },
    }
    # pinned by the lock, the same file is vouched for: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_weights("third-party", Lock.load(tmp_path / "zoo.lock")).verified


def test_another_revision_is_unverified_unless_the_bytes_match(hub, published):
    hub.card("tiny.test", published["first"], published["first_sha"])
    with pytest.warns(
        UnverifiedWeightsWarning,
        match=f"{REPO}@{published['second']}/model.safetensors is not the file card 'tiny.test' names",
    ):
        resolved = pull("tiny.test", revision="main")
    assert (resolved.revision, resolved.sha256, resolved.verified) == (
        published["second"],
        published["second_sha"],
        False,
    )
    hub.card("tiny.test", published["second"], published["second_sha"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pull("tiny.test", revision="main").verified  # the branch points at the card's commit


def test_lock_pins_revision_and_sha256(hub, published, tmp_path):
    hub.card("tiny.test", published["second"], published["second_sha"])  # the card has moved on
    pinned = {
        "repo_id": REPO,
        "revision": published["first"],
        "filename": "model.safetensors",
        "files": {"config.json": published["config_sha"], "model.safetensors": published["first_sha"]},
    }
    Lock({"tiny.test": pinned}).save(tmp_path / "zoo.lock")
    resolved = resolve_weights("tiny.test", Lock.load(tmp_path / "zoo.lock"))
    assert (resolved.revision, resolved.sha256, resolved.verified) == (published["first"], published["first_sha"], True)
    assert resolve_weights("tiny.test").revision == published["second"]  # without the lock: the card

    Lock(
        {"tiny.test": dict(pinned, files=dict(pinned["files"], **{"model.safetensors": published["second_sha"]}))}
    ).save(tmp_path / "bad.lock")
    with pytest.raises(DataError) as err:
        resolve_weights("tiny.test", Lock.load(tmp_path / "bad.lock"))
    assert (
        f"sha256 mismatch for {REPO}@{published['first']}/model.safetensors: expected {published['second_sha']} "
        f"(pinned by the lock {tmp_path / 'bad.lock'}), found {published['first_sha']}"
    ) in str(err.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("{not json", "not a readable zoo.lock"),
        ('{"version": 3, "weights": {}}', "not a zoo.lock: expected"),
        ('["not", "a", "mapping"]', "not a zoo.lock: expected"),
        (
            '{"version": 1, "weights": {"x": {"repo_id": "a/b", "revision": "main", "filename": "model.safetensors", '
            '"sha256": "' + "0" * 64 + '"}}}',
            "invalid zoo.lock; restore it or write a new one with a run\n"
            "  weights.x.revision: must be a full 40-hex commit id",
        ),
        (
            '{"version": 2, "weights": {"x": {"repo_id": "a/b", "revision": "' + "1" * 40 + '", "filename": '
            '"../../x/model.safetensors", "files": {"model.safetensors": "' + "0" * 64 + '"}}}}',
            "invalid zoo.lock; .*\n  weights.x.filename: must be model.safetensors, or a folder path",
        ),
        (
            '{"version": 2, "weights": {"x": {"repo_id": "a/b", "revision": "' + "1" * 40 + '", "filename": '
            '"model.safetensors", "files": {"config.json": "' + "0" * 64 + '"}}}}',
            "invalid zoo.lock; .*\n  weights.x: files must give the sha256 of model.safetensors",
        ),
    ],
)
def test_malformed_lock_names_the_file(tmp_path, text, problem):
    path = tmp_path / "zoo.lock"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: {problem}"):
        Lock.load(path)
    with pytest.raises(ConfigError, match=f"lock file {tmp_path / 'none.lock'} not found"):
        Lock.load(tmp_path / "none.lock")


# --- loading by name, and the command ---------------------------------------------------------


def test_zoo_load_by_name_and_by_directory_give_the_same_model(hub, published, model_files, tmp_path):
    hub.card("tiny.test", published["first"], published["first_sha"])
    by_name = zoo_core.load("tiny.test")
    for name, data in model_files.items():
        (tmp_path / name).write_bytes(data)
    by_dir = zoo_core.load(tmp_path)
    torch.manual_seed(0)
    expected = build_segmentor(MODEL_CONFIG).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(by_name.predict(images), expected.predict(images))
        assert torch.equal(by_dir.predict(images), expected.predict(images))
    local = resolve_weights(str(tmp_path))
    assert (local.repo_id, local.revision, local.sha256) == (None, None, "")
    with pytest.raises(DataError, match="weights 'runs/nothing': no such model directory"):
        zoo_core.load("runs/nothing")


def test_pull_command_prints_location_revision_and_hash(hub, published):
    hub.card("tiny.test", published["first"], published["first_sha"])
    result = CliRunner().invoke(pull_command, ["tiny.test"])
    assert result.exit_code == 0, result.output
    assert f"{REPO}@{published['first']}" in result.output
    assert f"sha256 {published['first_sha']} (verified against card 'tiny.test')" in result.output
    assert str(hub_cache_dir() / "models--zoo-test--tiny" / "snapshots" / published["first"]) in result.output

    result = CliRunner().invoke(pull_command, ["tiny.test", "--revision", "main"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "is not the file card 'tiny.test' names" in result.stderr
    assert f"sha256 {published['second_sha']} (unverified)" in result.output


def test_pull_command_records_an_unverified_card_in_the_lock(hub, published, tmp_path):
    hub.card("third-party", published["first"], verified=False)
    lock_path = tmp_path / "team.lock"
    result = CliRunner().invoke(pull_command, ["third-party", "--lock", str(lock_path)])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and f"lock   {lock_path}" in result.output
    entry = json.loads(lock_path.read_text())["weights"]["third-party"]
    assert (entry["revision"], entry["files"]) == (
        published["first"],
        {"config.json": published["config_sha"], "model.safetensors": published["first_sha"]},
    )

    local = tmp_path / "weights"
    hub.card("tiny.test", published["first"], published["first_sha"])
    result = CliRunner().invoke(pull_command, ["tiny.test", "--local-dir", str(local)])
    assert result.exit_code == 0, result.output
    entry = json.loads((local / "zoo.lock").read_text())["weights"]["tiny.test"]
    assert entry["files"]["model.safetensors"] == published["first_sha"]


# --- every file is pinned: config.json too ----------------------------------------------------------

SWAPPED = "zoo-test/swapped"


@pytest.fixture(scope="module")
def swapped(mirror, model_files) -> dict[str, str]:
    """SWAPPED with two commits: the model, then config.json with two class names swapped (the weights unchanged)."""
    original = model_files["config.json"]
    config = json.loads(original)
    config["class_names"][0], config["class_names"][1] = config["class_names"][1], config["class_names"][0]
    edited = (json.dumps(config, indent=2) + "\n").encode()
    first = make_model_repo(mirror.mirrors_dir, SWAPPED, model_files)
    second = make_model_repo(mirror.mirrors_dir, SWAPPED, {"config.json": edited})
    return {
        "first": first,
        "second": second,
        "weights_sha": sha256(model_files["model.safetensors"]),
        "config_sha": sha256(original),
        "edited_sha": sha256(edited),
    }


def test_a_card_at_the_original_commit_is_not_fooled_by_an_edited_config(hub, swapped):
    hub.card("swap.test", swapped["first"], swapped["weights_sha"], repo_id=SWAPPED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolved = pull("swap.test")
    assert resolved.verified and resolved.vouched == ("model.safetensors", "config.json")
    assert resolved.files == {"model.safetensors": swapped["weights_sha"], "config.json": swapped["config_sha"]}
    assert json.loads((resolved.path / "config.json").read_text())["class_names"] == CLASS_NAMES

    # the branch now has the edited config.json: same weights, other class names -> refused, never "verified"
    with pytest.warns(UnverifiedWeightsWarning, match=f"config.json has sha256 {swapped['edited_sha']}"):
        with pytest.raises(
            DataError,
            match=f"{SWAPPED}@{swapped['second']}/config.json: its config.json names other "
            "classes than card 'swap.test'",
        ):
            pull("swap.test", revision="main")


def test_a_config_whose_sha256_differs_from_the_card_is_refused_and_removed(hub, swapped):
    # The card pins the original config.json, the commit serves the edited one.
    hub.card("swap.test", swapped["second"], swapped["weights_sha"], repo_id=SWAPPED)
    with pytest.raises(DataError) as err:
        pull("swap.test")
    assert str(err.value).startswith(
        f"sha256 mismatch for {SWAPPED}@{swapped['second']}/config.json: expected {swapped['config_sha']} "
        f"(card 'swap.test'), found {swapped['edited_sha']}; the file was removed from the cache and nothing was "
        "loaded"
    )
    snapshot = hub_cache_dir() / "models--zoo-test--swapped" / "snapshots" / swapped["second"]
    assert not (snapshot / "config.json").exists()
    result = CliRunner().invoke(pull_command, ["swap.test"])
    assert result.exit_code != 0 and "verified" not in result.output


def test_a_changed_cached_config_is_refused(hub, published):
    hub.card("tiny.test", published["first"], published["first_sha"])
    resolved = pull("tiny.test")
    config = (resolved.path / "config.json").resolve()
    config.write_bytes(config.read_bytes().replace(b'"road"', b'"roaD"'))
    with pytest.raises(
        DataError,
        match=f"sha256 mismatch for {REPO}@{published['first']}/config.json: expected "
        f"{published['config_sha']} \\(card 'tiny.test'\\)",
    ):
        pull("tiny.test")
    assert not config.exists()
    assert pull("tiny.test").verified  # downloaded again


def test_an_older_card_pins_the_weights_only_and_warns_once_that_config_is_unverified(hub, published, swapped):
    hub.card("old.test", published["first"], published["first_sha"], legacy=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = pull("old.test")
        assert pull("old.test") == resolved
    assert [str(w.message) for w in caught] == [
        f"card 'old.test' pins only the weights' sha256, so {REPO}@{published['first']}/config.json (the architecture "
        f"and the class names) is unverified; it has sha256 {published['config_sha']}; ask its maintainers for a card "
        "with hub.files (zoo push prints one)"
    ]
    assert (resolved.verified, resolved.vouched) == (False, ("model.safetensors",))
    result = CliRunner().invoke(pull_command, ["old.test"])
    assert f"model.safetensors  sha256 {published['first_sha']} (verified against card 'old.test')" in result.output
    assert f"config.json        sha256 {published['config_sha']} (unverified)" in result.output

    # an older card is still checked against the config.json it gets: its classes must be the card's
    hub.card("old-swapped.test", swapped["second"], swapped["weights_sha"], repo_id=SWAPPED, legacy=True)
    with pytest.warns(UnverifiedWeightsWarning, match="card 'old-swapped.test' pins only the weights' sha256"):
        with pytest.raises(DataError, match="its config.json names other classes than card 'old-swapped.test'"):
            pull("old-swapped.test")


def test_a_version_1_lock_still_pins_the_weights(hub, published, tmp_path):
    hub.card("tiny.test", published["second"], published["second_sha"])
    (tmp_path / "v1.lock").write_text(
        json.dumps(
            {
                "version": 1,
                "weights": {
                    "tiny.test": {
                        "repo_id": REPO,
                        "revision": published["first"],
                        "filename": "model.safetensors",
                        "sha256": published["first_sha"],
                    }
                },
            }
        )
    )
    lock = Lock.load(tmp_path / "v1.lock")
    with pytest.warns(UnverifiedWeightsWarning, match=f"the lock {tmp_path / 'v1.lock'} pins only the weights' sha256"):
        resolved = resolve_weights("tiny.test", lock)
    assert (resolved.revision, resolved.sha256, resolved.verified) == (
        published["first"],
        published["first_sha"],
        False,
    )
    lock.add(resolved)  # rewritten as version 2, with the config's sha256 as seen
    lock.save(tmp_path / "v2.lock")
    assert Lock.load(tmp_path / "v2.lock").entries["tiny.test"].files == {
        "model.safetensors": published["first_sha"],
        "config.json": published["config_sha"],
    }


def test_a_bare_name_that_is_a_card_and_a_folder_must_say_which(hub, published, model_files, tmp_path, monkeypatch):
    hub.card("tiny.test", published["first"], published["first_sha"])
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tiny.test"
    folder.mkdir()
    for name, data in model_files.items():
        (folder / name).write_bytes(data)
    with pytest.raises(ConfigError) as err:
        resolve_weights("tiny.test")
    assert str(err.value) == (
        f"weights 'tiny.test' names both the registry card 'tiny.test' and the folder {folder}; "
        "write `card:tiny.test` for the card or `./tiny.test` for the folder"
    )
    with pytest.raises(ConfigError, match="write `card:tiny.test` for the card"):
        zoo_core.load("tiny.test")
    by_card = resolve_weights("card:tiny.test")
    assert (by_card.repo_id, by_card.verified) == (REPO, True)
    assert resolve_weights("./tiny.test").path == Path("tiny.test") and resolve_weights("./tiny.test").repo_id is None
    # a bare name that is only a folder, or only a card, works as before
    (tmp_path / "only-folder").mkdir()
    for name, data in model_files.items():
        (tmp_path / "only-folder" / name).write_bytes(data)
    assert resolve_weights("only-folder").repo_id is None
    folder.rename(tmp_path / "moved")
    assert resolve_weights("tiny.test").repo_id == REPO
    with pytest.raises(ConfigError, match="no registry card named 'nothing'"):
        resolve_weights("card:nothing")
