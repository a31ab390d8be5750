"""``zoo push``: publish a trained model to a Hugging Face Hub repo and print its registry card.

The upload is one commit of ``config.json``, ``model.safetensors`` and a README model card.
Before anything is sent, the model directory is loaded exactly as ``zoo pull`` users will load
it, and the card is validated; the card printed afterwards names the commit and the sha256 of
the bytes that were uploaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import ConfigError, DataError, describe_validation_error
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME, load_model_dir
from ..plugins import CORE_DISTRIBUTION, core_version
from .cards import NAME_RE, REPO_RE, Card, Metrics
from .client import file_sha256, hub_endpoint, hub_offline, transport_errors

METRICS_NAME = "metrics.json"
README_NAME = "README.md"
TAGS = ["zoo", "semantic-segmentation", "video-scene-parsing", "vspw"]
PLACEHOLDER_REVISION = "0" * 40  # lets the card be validated before the commit exists


@dataclass
class PushResult:
    repo_id: str
    commit_oid: str
    pr_revision: str | None  # refs/pr/N with create_pr
    sha256: str
    size: int
    card: Card


def push(
    run_dir: Path,
    repo_id: str,
    *,
    create_pr: bool = False,
    private: bool = False,
    revision: str | None = None,
    card_name: str | None = None,
    metrics_path: Path | None = None,
    license: str = "apache-2.0",
) -> PushResult:
    """Upload ``run_dir``'s model to ``repo_id`` in one commit; returns the commit and the filled card.

    ``metrics_path`` defaults to ``run_dir/metrics.json`` when that exists (a ``zoo run``
    directory); the split and TTA are read from the ``pipeline.json`` beside it.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    run_dir = Path(run_dir)
    if not REPO_RE.match(repo_id):
        raise ConfigError(f"--repo {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    name = card_name or repo_id.split("/")[1].lower()
    if not NAME_RE.match(name):
        raise ConfigError(f"card name {name!r}: use lower-case letters, digits, '.', '-' and '_' (set it with --name)")
    if hub_offline():
        raise ConfigError("HF_HUB_OFFLINE is set: a push needs the hub; unset it (or set HF_HUB_OFFLINE=0)")
    token = os.environ.get("HF_TOKEN") or get_token()
    if private and not token:
        raise ConfigError("--private needs a token: set HF_TOKEN (a private repo is invisible without one)")

    weights, config = _read_model(run_dir)
    config_bytes = (run_dir / CONFIG_NAME).read_bytes()  # hashed and uploaded: the card pins what was sent
    sha256, size = file_sha256(weights), weights.stat().st_size
    files = {CONFIG_NAME: hashlib.sha256(config_bytes).hexdigest(), WEIGHTS_NAME: sha256}
    if metrics_path is None and (run_dir / METRICS_NAME).is_file():
        metrics_path = run_dir / METRICS_NAME
    metrics = read_metrics(Path(metrics_path)) if metrics_path is not None else None
    card = build_card(name, repo_id, config, files, size, metrics, license, run_dir)
    readme = model_card_readme(card)

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(endpoint, repo_id, revision):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and not revision.startswith("refs/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            [
                CommitOperationAdd(CONFIG_NAME, config_bytes),
                CommitOperationAdd(WEIGHTS_NAME, weights),
                CommitOperationAdd(README_NAME, readme.encode("utf-8")),
            ],
            commit_message=f"Upload {name} with zoo push",
            commit_description=f"{WEIGHTS_NAME}: sha256 {sha256}, {size} bytes",
            revision=revision,
            create_pr=create_pr,
        )
    card = card.model_copy(update={"hub": card.hub.model_copy(update={"revision": info.oid})})
    return PushResult(repo_id, info.oid, info.pr_revision, sha256, size, card)


def _read_model(run_dir: Path) -> tuple[Path, dict]:
    """The weights file and config.json, after loading the directory as a user will."""
    if not run_dir.is_dir():
        raise DataError(
            f"{run_dir} is not a directory; give the run directory of `zoo train` (it holds "
            f"{CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    for needed in (CONFIG_NAME, WEIGHTS_NAME):
        if not (run_dir / needed).is_file():
            raise DataError(
                f"{run_dir / needed} not found: push the directory `zoo train --out` wrote "
                f"(it holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    _, config = load_model_dir(run_dir)  # what a puller will do: format, plugins, strict keys
    return run_dir / WEIGHTS_NAME, config


def read_metrics(path: Path) -> Metrics:
    """The card metrics from a ``zoo run`` ``metrics.json`` (fractions; None when not computed)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read the metrics: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); give the metrics.json `zoo run` wrote") from None
    if not isinstance(data, dict) or "miou" not in data:
        raise DataError(f"{path} has no 'miou': it is not a metrics.json written by `zoo run`")
    split, tta = "unspecified", "identity"
    stamp = path.parent / "pipeline.json"  # `zoo run` writes it beside metrics.json
    if stamp.is_file():
        try:
            pipeline = json.loads(stamp.read_text())["pipeline"]
            models, split = pipeline["models"], pipeline["data"]["split"]
            tta = models[0]["tta"]["type"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise DataError(
                f"{stamp} is not the pipeline.json of a `zoo run`; it should describe the run whose metrics are {path}"
            ) from None
        if len(models) != 1:
            raise ConfigError(
                f"{path} holds the metrics of an ensemble of {len(models)} models, not of one model; "
                "give --metrics of a run with this model alone"
            )
    values = {
        "miou" if tta == "identity" else "miou_tta": data["miou"],
        "mvc8": data.get("mvc8"),
        "mvc16": data.get("mvc16"),
    }
    try:
        return Metrics(split=split, **values)
    except ValidationError as exc:
        raise DataError(f"{path}: metrics must be fractions in 0..1: {exc.errors()[0]['msg']}") from None


def build_card(
    name: str,
    repo_id: str,
    config: dict,
    files: dict[str, str],
    size: int,
    metrics: Metrics | None,
    license: str,
    run_dir: Path,
) -> Card:
    model = config["model"]
    if "class_names" not in config:
        raise DataError(
            f"{run_dir / CONFIG_NAME} has no class_names; a card needs them: re-save the model with `zoo train`"
        )
    distribution = _plugin_distribution(config, run_dir)
    version = core_version() if distribution == CORE_DISTRIBUTION else metadata.version(distribution)
    data = {
        "name": name,
        "summary": _summary(model),
        "plugin": {"distribution": distribution, "min_version": version},
        "model": {"config": model},
        "num_classes": model["num_classes"],
        "class_names": config["class_names"],
        "hub": {
            "repo_id": repo_id,
            "revision": PLACEHOLDER_REVISION,
            "filename": WEIGHTS_NAME,
            "files": files,
            "size": size,
        },
        "metrics": metrics.model_dump() if metrics else None,
        "recipe": config.get("train") or "",
        "license": license,
    }
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"the card for {run_dir} does not validate:\n{describe_validation_error(exc, '', Card)}"
        ) from None


def _plugin_distribution(config: dict, run_dir: Path) -> str:
    """The one distribution besides zoo-core whose components the model uses, else zoo-core."""
    others = [d for d in config.get("plugins", {}) if re.sub(r"[-_.]+", "-", d).lower() != CORE_DISTRIBUTION]
    if len(others) > 1:
        raise ConfigError(
            f"{run_dir / CONFIG_NAME}: the model uses components of several plugins "
            f"({', '.join(others)}), but a card names one plugin distribution; "
            "package them as one plugin"
        )
    return others[0] if others else CORE_DISTRIBUTION


def _summary(model: dict) -> str:
    backbone = model["backbone"]
    name = backbone.get("args", {}).get("model_name")
    heads = " -> ".join(h["type"] for h in model["heads"])
    return f"{backbone['type']}{f' {name}' if name else ''} backbone, {heads} head(s), {model['num_classes']} classes"


def model_card_readme(card: Card) -> str:
    """README.md for the Hub: a ``huggingface_hub.ModelCard`` whose metadata names the library, tags,
    datasets, license and, with metrics, the model-index; its body says how to pull and run the model."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    shown = []
    if card.metrics:
        labels = {"miou": "mIoU", "miou_tta": "mIoU (TTA)", "mvc8": "mVC8", "mvc16": "mVC16"}
        shown = [(labels[k], k, v) for k, v in card.metrics.model_dump().items() if k in labels and v is not None]
    results = [
        EvalResult(
            task_type="image-segmentation",
            task_name="Video scene parsing",
            dataset_type="vspw",
            dataset_name="VSPW",
            dataset_split=card.metrics.split,
            metric_type=key,
            metric_name=label,
            metric_value=round(value, 6),
        )
        for label, key, value in shown
    ]
    metadata = ModelCardData(
        library_name="zoo",
        license=card.license,
        tags=TAGS,
        datasets=["vspw"],
        pipeline_tag="image-segmentation",
        model_name=card.name if results else None,
        eval_results=results or None,
    )
    requirement = f"{card.plugin.distribution}>={card.plugin.min_version}"
    body = f"""
# {card.name}

A video scene parsing model for the zoo toolkit: {card.summary}. The architecture (components and
their arguments) is in `{CONFIG_NAME}`; the weights are `{WEIGHTS_NAME}` (sha256 `{card.hub.weights_sha256}`,
{card.hub.size} bytes).

## Use

Add the registry card that `zoo push` printed to `registry/` or to a folder in `ZOO_REGISTRY_PATH`, then:

```bash
pip install '{requirement}'
zoo pull {card.name}
```

and name it in a pipeline (`zoo run pipeline.yaml`):

```yaml
models:
  - name: {card.name}
    weights: {card.name}
```

or in Python: `model = zoo_core.load("{card.name}")`.
"""
    if shown:
        rows = "\n".join(f"| {label} | {100 * value:.2f} |" for label, _, value in shown)
        body += f"\n## Results ({card.metrics.split} split, %)\n\n| metric | value |\n|---|---|\n{rows}\n"
    if card.recipe:
        recipe = card.recipe if isinstance(card.recipe, str) else yaml.safe_dump(card.recipe, sort_keys=False).strip()
        body += f"\n## Training recipe\n\n```yaml\n{recipe}\n```\n"
    return str(ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}"))


@contextlib.contextmanager
def _hub_errors(endpoint: str, repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn the Hub client's errors into messages that say what to check."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"the hub at {endpoint}"
    try:
        yield
    except RepositoryNotFoundError:
        raise DataError(
            f"{where} has no repository {repo_id} that this token can see; check --repo, "
            "and for a private repo set HF_TOKEN to a token with access"
        ) from None
    except RevisionNotFoundError:
        raise DataError(f"{where}: revision {revision!r} not found in {repo_id}; check --revision") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code
        said = exc.server_message or exc.response.reason_phrase
        if status in (401, 403):
            raise DataError(
                f"{where} refused the upload to {repo_id} ({status}: {said}); set HF_TOKEN to "
                "a token with write access to the organization"
            ) from None
        if status in (404, 405, 501) and not exc.response.headers.get("X-Error-Code"):
            raise DataError(
                f"{where} does not answer the Hub API ({status} for {exc.response.url}); check that "
                "HF_ENDPOINT names a Hugging Face Hub (e.g. a `zoo hub serve` URL)"
            ) from None
        raise DataError(f"{where} refused the push to {repo_id} ({status}: {said})") from None
    except json.JSONDecodeError:
        raise DataError(
            f"{where} answered with something that is not Hub JSON; check that HF_ENDPOINT names a "
            "Hugging Face Hub (e.g. a `zoo hub serve` URL)"
        ) from None
    except ValueError as exc:  # the client's own checks, e.g. README metadata
        raise ConfigError(f"push to {repo_id} refused before upload: {exc}") from None
    except transport_errors() as exc:
        raise DataError(
            f"cannot reach {where} ({type(exc).__name__}: {exc}); start the hub server or fix "
            "HF_ENDPOINT (unset, it means https://huggingface.co)"
        ) from None
