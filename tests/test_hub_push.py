"""`zoo push`: one commit of config.json + model.safetensors + README, and a card that validates."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import HfApi, hf_hub_download

from zoo_core.errors import ConfigError, DataError
from zoo_core.hub.cards import parse_card
from zoo_core.hub.command import push_command
from zoo_core.hub.push import push
from zoo_core.hub.server import HubServer
from zoo_core.model_dir import build_segmentor, save_model_dir
from zoo_core.plugins import core_version

SMALL_MODEL = {
    "num_classes": 3,
    "backbone": {"type": "timm", "args": {"model_name": "resnet10t", "out_indices": [0, 1]}},
    "heads": [
        {"type": "fcn", "args": {"in_index": [0, 1], "input_transform": "resize_concat", "channels": 8, "num_convs": 1}}
    ],
}
TRAIN = {"max_iters": 6, "batch_size": 2, "lr": 0.001}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    save_model_dir(
        build_segmentor(SMALL_MODEL), SMALL_MODEL, out, extra={"class_names": ["sky", "road", "tree"], "train": TRAIN}
    )
    return out


@pytest.fixture
def run_dir(saved_model, tmp_path) -> Path:
    """A fresh copy per test, so a test may add metrics or damage files."""
    return Path(shutil.copytree(saved_model, tmp_path / "run"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    server = HubServer(tmp_path / "hub").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    try:
        yield server
    finally:
        server.stop()


def listing(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def write_run_metrics(run_dir: Path, tta: str = "flip", models: int = 1, split: str = "val") -> None:
    """What `zoo run` leaves beside its metrics: metrics.json and pipeline.json."""
    (run_dir / "metrics.json").write_text(json.dumps({"miou": 0.5, "mvc8": 0.75, "mvc16": None, "pixel_acc": 0.9}))
    pipeline = {
        "data": {"root": "data", "split": split},
        "models": [{"name": f"m{i}", "weights": "w", "tta": {"type": tta, "args": {}}} for i in range(models)],
    }
    (run_dir / "pipeline.json").write_text(json.dumps({"fingerprint": "x", "pipeline": pipeline}))


def test_push_makes_one_commit_and_prints_a_card_that_validates(hub, run_dir, tmp_path):
    before = listing(run_dir)
    card_out = tmp_path / "cards" / "tiny.yaml"
    result = CliRunner().invoke(push_command, [str(run_dir), "--repo", "Org/Tiny-Model", "--card-out", str(card_out)])
    assert result.exit_code == 0, result.output

    card = parse_card(yaml.safe_load(result.stdout), "printed card")
    assert card_out.read_text() == result.stdout
    weights = (run_dir / "model.safetensors").read_bytes()
    assert card.name == "tiny-model" and card.hub.repo_id == "Org/Tiny-Model"
    assert card.hub.files == {
        "config.json": hashlib.sha256((run_dir / "config.json").read_bytes()).hexdigest(),
        "model.safetensors": hashlib.sha256(weights).hexdigest(),
    }
    assert card.hub.size == len(weights) and "sha256:" not in result.stdout  # every file pinned, not the weights alone
    assert card.plugin.distribution == "zoo-core" and card.plugin.min_version == core_version()
    assert card.model.config.config() == SMALL_MODEL and card.class_names == ["sky", "road", "tree"]
    assert card.num_classes == 3 and card.metrics is None and card.recipe["max_iters"] == 6

    api = HfApi(endpoint=hub.url)
    commits = api.list_repo_commits("Org/Tiny-Model")
    assert len(commits) == 2 and commits[1].title == "initial commit"  # the push is one commit
    assert commits[0].commit_id == card.hub.revision
    files = {s.rfilename for s in api.model_info("Org/Tiny-Model", revision=card.hub.revision).siblings}
    assert files == {".gitattributes", "config.json", "model.safetensors", "README.md"}
    pulled = hf_hub_download(
        "Org/Tiny-Model",
        "model.safetensors",
        revision=card.hub.revision,
        endpoint=hub.url,
        cache_dir=tmp_path / "cache",
    )
    assert Path(pulled).read_bytes() == weights
    assert listing(run_dir) == before, "push must not write into the run directory"


def test_readme_front_matter_carries_the_run_metrics(hub, run_dir, tmp_path):
    write_run_metrics(run_dir, tta="flip")
    result = push(run_dir, "org/tiny", license="mit")
    assert result.card.metrics.model_dump(exclude_none=True) == {"split": "val", "miou_tta": 0.5, "mvc8": 0.75}

    readme = Path(
        hf_hub_download(
            "org/tiny", "README.md", revision=result.commit_oid, endpoint=hub.url, cache_dir=tmp_path / "cache"
        )
    ).read_text()
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["library_name"] == "zoo" and front["license"] == "mit" and front["datasets"] == ["vspw"]
    assert front["tags"] == ["zoo", "semantic-segmentation", "video-scene-parsing", "vspw"]
    (entry,) = front["model-index"]
    assert entry["name"] == "tiny" and entry["results"][0]["dataset"]["split"] == "val"
    assert {m["type"]: m["value"] for m in entry["results"][0]["metrics"]} == {"miou_tta": 0.5, "mvc8": 0.75}
    assert "zoo pull tiny" in readme and result.sha256 in readme and "| mVC8 | 75.00 |" in readme


def test_metrics_without_tta_are_plain_miou_and_an_ensemble_is_refused(hub, run_dir):
    write_run_metrics(run_dir, tta="identity", split="train")
    metrics = push(run_dir, "org/tiny", card_name="tiny.plain").card.metrics
    assert (metrics.split, metrics.miou, metrics.miou_tta) == ("train", 0.5, None)

    write_run_metrics(run_dir, models=2)
    with pytest.raises(ConfigError, match="ensemble of 2 models"):
        push(run_dir, "org/tiny")


def test_create_pr_and_new_branch(hub, run_dir):
    api = HfApi(endpoint=hub.url)
    first = push(run_dir, "org/tiny")
    write_run_metrics(run_dir)  # a changed README, so there is something to propose
    proposal = push(run_dir, "org/tiny", create_pr=True)
    assert proposal.pr_revision == "refs/pr/1" and proposal.card.hub.revision == proposal.commit_oid
    assert api.model_info("org/tiny", revision="main").sha == first.commit_oid

    experiment = push(run_dir, "org/tiny", revision="experiment")
    assert api.model_info("org/tiny", revision="experiment").sha == experiment.commit_oid
    assert api.list_repo_commits("org/tiny", revision="experiment")[1].commit_id == first.commit_oid


def test_private_push_needs_a_token_and_hides_the_repo(hub, run_dir, monkeypatch):
    with pytest.raises(ConfigError, match="HF_TOKEN"):
        push(run_dir, "org/secret", private=True)
    monkeypatch.setenv("HF_TOKEN", "team-token")
    result = push(run_dir, "org/secret", private=True)
    assert HfApi(endpoint=hub.url, token="t").model_info("org/secret", revision="main").private
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(DataError, match="no repository org/secret.*HF_TOKEN"):
        push(run_dir, "org/secret")  # a 4xx from the hub, explained
    assert result.card.hub.revision == result.commit_oid


def test_server_down_is_a_clear_error_and_writes_nothing(run_dir, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    before = listing(run_dir)
    card_out = tmp_path / "card.yaml"
    result = CliRunner().invoke(push_command, [str(run_dir), "--repo", "org/tiny", "--card-out", str(card_out)])
    assert isinstance(result.exception, DataError)
    assert "cannot reach the hub at " + endpoint in str(result.exception) and "HF_ENDPOINT" in str(result.exception)
    assert listing(run_dir) == before and not card_out.exists()


def test_offline_mode_is_refused_before_any_request(run_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE"):
        push(run_dir, "org/tiny")


def test_an_endpoint_that_is_not_a_hub_is_named(run_dir, monkeypatch):
    class NotAHub(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotAHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(DataError, match="does not answer the Hub API.*HF_ENDPOINT"):
            push(run_dir, "org/tiny")
    finally:
        server.shutdown()
        server.server_close()


def test_bad_run_directories_are_refused_before_any_upload(hub, run_dir, tmp_path):
    with pytest.raises(ConfigError, match="ORG/NAME"):
        push(run_dir, "no-organization")
    with pytest.raises(ConfigError, match="card name"):
        push(run_dir, "org/tiny", card_name="Has Spaces")
    with pytest.raises(DataError, match="not a directory"):
        push(tmp_path / "nowhere", "org/tiny")

    weights = run_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a copy cut short
    with pytest.raises(DataError, match="truncated or corrupt"):
        push(run_dir, "org/tiny")
    weights.unlink()
    with pytest.raises(DataError, match="model.safetensors not found"):
        push(run_dir, "org/tiny")
    assert not (hub.store.root / "repos").exists(), "nothing may reach the hub"
