"""The hierarchical ensembler: the formula by hand, the contract, every bad argument, rank_by, and real runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from zoo_core.ensemble import LinearEnsembler
from zoo_core.errors import ConfigError
from zoo_core.interfaces import BindContext
from zoo_core.testing import TINY_MODEL, check_ensembler, run_cli

MODELS = ("a", "b", "c")


def bound(names=MODELS, **args):
    from zoo_hierarchical_ensemble.ensembler import HierarchicalEnsembler

    ensembler = HierarchicalEnsembler(**args)
    ensembler.bind(BindContext(model_names=tuple(names), class_names=("x", "y"), num_classes=2))
    return ensembler


def test_registered_by_this_distribution(zoo_registry):
    entry = zoo_registry.catalog.get("ensembler", "hierarchical")
    assert entry.distribution == "zoo-hierarchical-ensemble"
    built = zoo_registry.catalog.build("ensembler", "hierarchical", {"groups": {"all": ["a"]}})
    assert isinstance(built, LinearEnsembler)  # so `zoo ensemble search` can search it


def test_fuses_group_means_by_hand():
    # two classes, two pixels; strong = [a], weak = [b, c] (unequal sizes), weak weighted 1.4
    a = torch.tensor([[0.6, 0.1], [0.4, 0.9]]).view(1, 2, 1, 2)
    b = torch.tensor([[0.2, 0.5], [0.8, 0.5]]).view(1, 2, 1, 2)
    c = torch.tensor([[0.4, 0.3], [0.6, 0.7]]).view(1, 2, 1, 2)
    ensembler = bound(groups={"strong": ["a"], "weak": ["b", "c"]}, weights={"weak": 1.4})
    fused = ensembler({"a": a, "b": b, "c": c})
    # weak mean: pixel 0 (0.3, 0.7), pixel 1 (0.4, 0.6); fused = strong + 1.4 * weak
    # pixel 0: (0.6 + 0.42, 0.4 + 0.98) = (1.02, 1.38); pixel 1: (0.1 + 0.56, 0.9 + 0.84) = (0.66, 1.74)
    expected = torch.tensor([[1.02, 0.66], [1.38, 1.74]], dtype=torch.float64).view(1, 2, 1, 2)
    torch.testing.assert_close(fused, expected, rtol=0, atol=1e-6)
    assert fused.argmax(1).flatten().tolist() == [1, 1]  # model a alone says class 0 at pixel 0
    assert ensembler.weights() == {"strong": 1.0, "weak": 1.4}  # 1.0 for a group not given
    assert ensembler.term_weights({"strong": 0.5, "weak": 2.0}) == [0.5, 2.0]
    terms = ensembler.terms({"a": a, "b": b, "c": c})
    assert [t.dtype for t in terms] == [torch.float32, torch.float32]
    torch.testing.assert_close(terms[1], (b + c) / 2, rtol=0, atol=0)
    assert ensembler.args_with({"strong": 1.0, "weak": 0.8}) == {
        "groups": {"strong": ["a"], "weak": ["b", "c"]},
        "weights": {"strong": 1.0, "weak": 0.8},
    }


def test_groups_keep_the_yaml_order():
    ensembler = bound(groups={"weak": ["c", "b"], "aux": ["a"]})
    assert list(ensembler.weights()) == ["weak", "aux"]


def test_keeps_the_ensembler_contract(zoo_registry):
    factory = zoo_registry.catalog.get("ensembler", "hierarchical").factory
    groups = {"strong": ["model-a"], "weak": ["model-b", "model-c"]}
    check_ensembler(factory, name="hierarchical", model_names=["model-a", "model-b", "model-c"], groups=groups)
    ranked = {"model-a": 0.5, "model-b": 0.7, "model-c": 0.6}
    check_ensembler(
        factory, name="hierarchical", model_names=list(ranked), rank_by="val", strong_top=1, val_miou=ranked
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"groups": {"strong": ["a", "b"], "weak": ["b", "c"]}}, "groups.weak: model 'b' is also in group 'strong'"),
        ({"groups": {"strong": ["a", "a"], "weak": ["b", "c"]}}, "groups.strong: model 'a' is twice"),
        ({"groups": {"strong": ["a"], "weak": ["b"]}}, "model(s) 'c' are in no group"),
        ({"groups": {"strong": ["a"], "weak": ["b", "x"]}}, "groups.weak: no model is named 'x'; the pipeline's"),
        ({"groups": {"strong": ["a", "b", "c"], "aux": []}}, "groups.aux is empty"),
        ({"groups": {"strong": ["a", "b", "c"], "aux": "a"}}, "groups.aux must be a list of model names, got 'a'"),
        ({"groups": {"s": ["a"], "w": ["b", "c"]}, "weights": {"aux": 1.0}}, "weights.aux: no group is named 'aux'"),
        ({"groups": {"s": ["a"], "w": ["b", "c"]}, "weights": {"w": -1.4}}, "weight 'w' must be a finite number >= 0"),
        ({"groups": {"s": ["a"], "w": ["b", "c"]}, "weights": {"s": 0, "w": 0}}, "every weight is 0"),
        ({"groups": {"s": ["a", "b", "c"]}, "strong_top": 2}, "strong_top is given without rank_by"),
        ({"rank_by": "test", "strong_top": 1}, "rank_by must be one of val, got 'test'"),
        ({"rank_by": "val", "val_miou": {"a": 0.5, "b": 0.4, "c": 0.3}}, "strong_top must be a whole number >= 1"),
        ({"rank_by": "val", "strong_top": 3, "val_miou": {"a": 0.5, "b": 0.4, "c": 0.3}}, "strong_top: 3 leaves no"),
        ({"rank_by": "val", "strong_top": 1, "val_miou": {"a": 0.5, "b": 0.4}}, "model 'c' is in no group and has no"),
        ({"rank_by": "val", "strong_top": 1, "val_miou": {"a": 0.5, "b": 0.4, "c": 56.5}}, "val_miou.c must be an"),
        ({"rank_by": "val", "strong_top": 1, "val_miou": {"a": 1, "b": 0, "c": 0, "d": 0}}, "val_miou.d: 'd' is not a"),
        (
            {"rank_by": "val", "strong_top": 1, "groups": {"weak": ["c"]}, "val_miou": {"a": 0.5, "b": 0.4}},
            "groups.weak: with rank_by the strong and weak groups are formed from the val mIoU",
        ),
    ],
)
def test_bad_arguments_are_refused_in_bind(args, message):
    with pytest.raises(ConfigError) as refused:
        bound(**args)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_rank_by_val_miou_splits_strong_and_weak_in_pipeline_order_on_ties():
    ensembler = bound(
        names=("a", "b", "c", "d", "e"),
        rank_by="val",
        strong_top=2,
        val_miou={"a": 0.50, "b": 0.61, "c": 0.55, "d": 0.55},
        groups={"aux": ["e"]},
        weights={"weak": 1.4},
    )
    assert ensembler.groups == {"strong": ["b", "c"], "weak": ["d", "a"], "aux": ["e"]}  # c before d: a tie
    assert ensembler.weights() == {"strong": 1.0, "weak": 1.4, "aux": 1.0}


# -- real models, real runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_models(tmp_path_factory, synthetic_vspw, tiny_model_dir) -> dict[str, Path]:
    """The tiny model and two more trained with other seeds: models a, b, c."""
    folder = tmp_path_factory.mktemp("seeds")
    models = {"a": tiny_model_dir}
    for name, seed in (("b", 1), ("c", 2)):
        pipeline = {
            "data": {"root": str(synthetic_vspw.root), "split": "val"},
            "model": TINY_MODEL,
            "train": {
                "split": "train",
                "max_iters": 4,
                "batch_size": 2,
                "lr": 1e-3,
                "seed": seed,
                "checkpoint_every": 0,
                "transforms": [{"type": "flip"}],  # the frames as they are (the default recipe crops 480x853)
            },
            "runtime": {"device": "cpu", "amp": "none", "progress": False, "threads": 1},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(pipeline))
        result = run_cli("train", folder / f"{name}.yaml", "--out", folder / name)
        assert result.exit_code == 0, result.output
        models[name] = folder / name
    return models


def write_pipeline(path: Path, root: Path, models: dict[str, Path], ensemble: dict | None = None) -> Path:
    pipeline = {
        "data": {"root": str(root), "split": "val"},
        "models": [{"name": name, "weights": str(weights)} for name, weights in models.items()],
        "output": {"overlays": 0},
        "runtime": {"device": "cpu", "amp": "none", "progress": False, "threads": 1},
    }
    if ensemble is not None:
        pipeline["ensemble"] = ensemble
    path.write_text(yaml.safe_dump(pipeline))
    return path


@pytest.fixture(scope="module")
def own_runs(tmp_path_factory, synthetic_vspw, three_models) -> dict[str, Path]:
    """Each model's own `zoo run` on val."""
    folder = tmp_path_factory.mktemp("own-runs")
    runs = {}
    for name, weights in three_models.items():
        pipeline = write_pipeline(folder / f"{name}.yaml", synthetic_vspw.root, {name: weights})
        result = run_cli("run", pipeline, "--out", folder / name)
        assert result.exit_code == 0, result.output
        runs[name] = folder / name
    return runs


def predictions(run: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(run)): np.asarray(Image.open(p)) for p in sorted((run / "pred").rglob("*.png"))}


def test_zoo_run_ranks_by_each_models_own_val_run(zoo_cli, synthetic_vspw, three_models, own_runs, tmp_path):
    scores = {m: json.loads((run / "metrics.json").read_text())["miou"] for m, run in own_runs.items()}
    best = max(scores, key=scores.get)
    # strong: the best by its own val run; weak: the two others, weighted 0, so the ensemble predicts
    # exactly what the best model predicts alone, and any other choice of strong would differ
    args = {"rank_by": "val", "strong_top": 1, "runs": {m: str(r) for m, r in own_runs.items()}, "weights": {"weak": 0}}
    write_pipeline(tmp_path / "ranked.yaml", synthetic_vspw.root, three_models, {"type": "hierarchical", "args": args})
    result = zoo_cli("run", "ranked.yaml", "--out", "ranked")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "ranked" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(scores[best], abs=1e-12)
    used = [c for c in metrics["provenance"]["components"] if c["kind"] == "ensembler"]
    assert used == [{**used[0], "name": "hierarchical", "distribution": "zoo-hierarchical-ensemble"}]
    alone, grouped = predictions(own_runs[best]), predictions(tmp_path / "ranked")
    assert alone.keys() == grouped.keys() and len(alone) == 2 * 8
    assert all(np.array_equal(alone[k], grouped[k]) for k in alone)
    for other in set(MODELS) - {best}:  # the seeds give distinct models, so the check above could fail
        assert not all(np.array_equal(alone[k], v) for k, v in predictions(own_runs[other]).items())


def test_zoo_run_refuses_bad_groups_before_any_frame(zoo_cli, synthetic_vspw, three_models, tmp_path):
    ensemble = {"type": "hierarchical", "args": {"groups": {"strong": ["a"], "weak": ["b", "a"]}}}
    write_pipeline(tmp_path / "bad.yaml", synthetic_vspw.root, three_models, ensemble)
    result = zoo_cli("run", "bad.yaml", "--out", "out")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if not line.startswith("warning: ")] == [
        "error: ensembler 'hierarchical' (zoo-hierarchical-ensemble 0.1.0) failed checking ensemble.args: "
        "groups.weak: model 'a' is also in group 'strong'; a model belongs to one group"
    ]
    assert not (tmp_path / "out").exists()


def edited_run(run: Path, to: Path, edit) -> Path:
    shutil.copytree(run, to)
    stamp = json.loads((to / "pipeline.json").read_text())
    edit(stamp)
    (to / "pipeline.json").write_text(json.dumps(stamp))
    return to


def test_runs_of_another_split_subset_or_several_models_are_refused(own_runs, tmp_path):
    from zoo_hierarchical_ensemble.ensembler import run_miou

    train = edited_run(own_runs["a"], tmp_path / "train", lambda s: s["pipeline"]["data"].update(split="train"))
    part = edited_run(own_runs["a"], tmp_path / "part", lambda s: s["pipeline"]["data"].update(max_videos=1))
    two = edited_run(own_runs["a"], tmp_path / "two", lambda s: s["models"].update(b=s["models"]["a"]))
    unfinished = edited_run(own_runs["a"], tmp_path / "unfinished", lambda s: None)
    (unfinished / "metrics.json").unlink()
    cases = [
        (train, "is a run on split 'train'; ranking by val needs 'a''s own run on val"),
        (part, "scored part of val only (data.max_videos: 1)"),
        (two, "is a run of 2 models (a, b), not of 'a' alone"),
        (unfinished, "metrics.json does not exist; the run has not finished"),
        (tmp_path / "nowhere", "pipeline.json does not exist; point runs.a at the --out of `zoo run`"),
    ]
    for run, message in cases:
        with pytest.raises(ConfigError, match="^runs.a: ") as refused:
            run_miou(str(run), "a")
        assert message in str(refused.value)
    assert run_miou(str(own_runs["a"]), "a") == json.loads((own_runs["a"] / "metrics.json").read_text())["miou"]


def test_a_run_of_other_weights_is_refused(three_models, own_runs):
    from zoo_hierarchical_ensemble.ensembler import HierarchicalEnsembler

    runs = {"a": str(own_runs["b"]), "b": str(own_runs["a"]), "c": str(own_runs["c"])}  # a and b swapped
    ensembler = HierarchicalEnsembler(rank_by="val", strong_top=1, runs=runs)
    context = BindContext(MODELS, ("x",), 1, model_dirs=tuple(three_models[m] for m in MODELS))
    with pytest.raises(ConfigError, match="^runs.a: .* ran other weights than model 'a' \\("):
        ensembler.bind(context)
    runs.update(a=str(own_runs["a"]), b=str(own_runs["b"]))
    HierarchicalEnsembler(rank_by="val", strong_top=1, runs=runs).bind(context)
