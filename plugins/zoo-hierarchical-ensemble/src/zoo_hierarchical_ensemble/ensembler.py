"""The hierarchical ensemble of the VSPW 5th place (report section 2.3): ``P = sum_g w_g * mean(P_m for m in g)``.

The models are split into named groups, each group's probabilities are averaged, and the
group means are fused with one weight per group. The report's final prediction is
``P_S + 1.4 * P_W + 1.0 * P_A`` (Table 3): S the 3 MaskFormers best on val, W the 8 others,
A 6 Swin Transformers. It is a :class:`~zoo_core.ensemble.LinearEnsembler` whose terms are
the group means and whose weights are the group names, so ``zoo ensemble search`` finds the
group weights exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo_core.ensemble import LinearEnsembler, check_weights
from zoo_core.errors import ConfigError
from zoo_core.interfaces import BindContext

# The groups `rank_by` forms: the `strong_top` best models on val, and the others.
STRONG, WEAK = "strong", "weak"
RANK_SPLITS = ("val",)
MODEL_FILES = ("config.json", "model.safetensors")


class HierarchicalEnsembler(LinearEnsembler):
    """Named groups of models, averaged within a group, weighted across groups (5th place, Table 3).

    ``groups: {strong: [m1, m2], weak: [m3, m4], aux: [m5]}`` (any number of groups, in
    this order) and ``weights: {weak: 1.4}`` (1.0 for a group not given). With ``rank_by:
    val`` and ``strong_top: K`` the models in no group are split into ``strong`` (the K best
    by their own val mIoU, from ``val_miou: {model: 0.5652}`` or ``runs: {model: RUN_DIR}``,
    the model's own ``zoo run`` on val) and ``weak`` (the others).
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[str]] | None = None,
        weights: Mapping[str, float] | None = None,
        rank_by: str | None = None,
        strong_top: int | None = None,
        val_miou: Mapping[str, float] | None = None,
        runs: Mapping[str, str] | None = None,
    ):
        self.args = {
            "groups": _mapping("groups", groups),
            "weights": _mapping("weights", weights),
            "rank_by": rank_by,
            "strong_top": strong_top,
            "val_miou": _mapping("val_miou", val_miou),
            "runs": _mapping("runs", runs),
        }
        self.groups: dict[str, list[str]] | None = None  # resolved by bind, or by the first frame
        self.model_names: list[str] | None = None
        self.val_scores: dict[str, float] = {}  # each ranked model's val mIoU, for the curious

    # -- checking the arguments against the pipeline ---------------------------------------------

    def bind(self, context: BindContext) -> None:
        """Resolve the groups against the pipeline's models; a ConfigError naming the bad value otherwise."""
        self._resolve(list(context.model_names), context.model_dirs)

    def _resolve(self, model_names: list[str], model_dirs: Sequence[Path] | None = None) -> None:
        args = self.args
        known = ", ".join(model_names) or "(none)"
        explicit: dict[str, list[str]] = {}
        owner: dict[str, str] = {}
        for group, members in args["groups"].items():
            if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
                raise ConfigError(f"groups.{group} must be a list of model names, got {members!r}")
            if not members:
                raise ConfigError(f"groups.{group} is empty; list at least one model in it, or remove the group")
            for model in members:
                if model not in model_names:
                    raise ConfigError(f"groups.{group}: no model is named {model!r}; the pipeline's models are {known}")
                if model in owner:
                    where = "twice" if owner[model] == group else f"also in group {owner[model]!r}"
                    raise ConfigError(f"groups.{group}: model {model!r} is {where}; a model belongs to one group")
                owner[model] = group
            explicit[str(group)] = list(members)

        unplaced = [m for m in model_names if m not in owner]
        if args["rank_by"] is None:
            for key in ("strong_top", "val_miou", "runs"):
                if args[key]:
                    raise ConfigError(f"{key} is given without rank_by; add rank_by: val, or remove {key}")
            if unplaced:
                raise ConfigError(
                    f"model(s) {', '.join(map(repr, unplaced))} are in no group; add each to one of "
                    f"{', '.join(explicit) or 'the groups'}, or use rank_by: val with strong_top to split them"
                )
            groups = explicit
        else:
            for name in (STRONG, WEAK):
                if name in explicit:
                    raise ConfigError(
                        f"groups.{name}: with rank_by the {STRONG} and {WEAK} groups are formed from the val mIoU; "
                        f"rename the group or list its models under no group"
                    )
            groups = {**self._rank(unplaced, model_names, model_dirs), **explicit}

        weights = args["weights"]
        unknown = [g for g in weights if g not in groups]
        if unknown:
            raise ConfigError(
                f"weights.{unknown[0]}: no group is named {unknown[0]!r}; the groups are {', '.join(groups)}"
            )
        check_weights({g: weights.get(g, 1.0) for g in groups}, "weights")
        self.groups, self.model_names = groups, list(model_names)

    def _rank(self, unplaced: list[str], model_names: list[str], model_dirs: Sequence[Path] | None) -> dict:
        """``{strong: the strong_top best by val mIoU, weak: the others}`` of the models in no group."""
        args = self.args
        if args["rank_by"] not in RANK_SPLITS:
            raise ConfigError(f"rank_by must be one of {', '.join(RANK_SPLITS)}, got {args['rank_by']!r}")
        top = args["strong_top"]
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"strong_top must be a whole number >= 1 (rank_by: val needs it), got {top!r}")
        for key in ("val_miou", "runs"):
            for model in args[key]:
                if model not in unplaced:
                    why = "is in a group already" if model in model_names else "is not a model of the pipeline"
                    raise ConfigError(f"{key}.{model}: {model!r} {why}; only the models in no group are ranked")
        dirs = dict(zip(model_names, model_dirs)) if model_dirs else {}
        scores = {}
        for model in unplaced:
            if model in args["val_miou"] and model in args["runs"]:
                raise ConfigError(f"val_miou.{model} and runs.{model} are both given; keep one")
            if model in args["runs"]:
                scores[model] = run_miou(args["runs"][model], model, dirs.get(model))
            elif model in args["val_miou"]:
                scores[model] = _fraction(f"val_miou.{model}", args["val_miou"][model])
            else:
                raise ConfigError(
                    f"model {model!r} is in no group and has no val mIoU to rank it by; "
                    f"give runs.{model}: <its own zoo run on val> or val_miou.{model}: <mIoU>, or put it in a group"
                )
        if top >= len(unplaced):
            raise ConfigError(
                f"strong_top: {top} leaves no model for the {WEAK} group ({len(unplaced)} model(s) are ranked: "
                f"{', '.join(unplaced) or 'none'}); make it smaller than {len(unplaced)}"
            )
        ranked = sorted(unplaced, key=lambda m: -scores[m])  # stable: a tie keeps the pipeline's order
        self.val_scores = scores
        return {STRONG: ranked[:top], WEAK: ranked[top:]}

    def _bound(self) -> dict[str, list[str]]:
        if self.groups is None:
            raise ConfigError(
                "hierarchical ensembler: the model names are not known yet (bind it to the pipeline first)"
            )
        return self.groups

    # -- the LinearEnsembler interface -------------------------------------------------------------

    def weights(self) -> dict[str, float]:
        return {g: float(self.args["weights"].get(g, 1.0)) for g in self._bound()}

    def terms(self, per_model: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each group's mean in group order: the float32 sum of its models in listed order, divided by their number."""
        if self.model_names is None or list(per_model) != self.model_names:
            self._resolve(list(per_model))
        means = []
        for members in self._bound().values():
            total = per_model[members[0]].float()
            for model in members[1:]:
                total = total + per_model[model].float()
            means.append(total / len(members))
        return means

    def term_weights(self, weights: Mapping[str, float]) -> list[float]:
        return [float(weights[g]) for g in self._bound()]

    def args_with(self, weights: Mapping[str, float]) -> dict[str, Any]:
        args = {k: v for k, v in self.args.items() if v not in (None, {})}
        args["weights"] = {g: float(weights[g]) for g in self._bound()}
        return args


# -- reading a model's own run -----------------------------------------------------------------------------


def run_miou(run_dir: str, model: str, model_dir: Path | None = None) -> float:
    """The mIoU of ``model``'s own finished ``zoo run`` on val in ``run_dir``; a ConfigError for any other run.

    The run must be of this model alone, on the whole val split, finished (``metrics.json``);
    with ``model_dir`` known, the weights it ran (``pipeline.json`` records their sha256) must
    be those in ``model_dir``.
    """
    where = f"runs.{model}"
    run = Path(run_dir)
    stamp = _read_json(run / "pipeline.json", where, f"point {where} at the --out of `zoo run` of {model!r} on val")
    pipeline = stamp.get("pipeline") if isinstance(stamp.get("pipeline"), dict) else {}
    data = pipeline.get("data") if isinstance(pipeline.get("data"), dict) else {}
    if data.get("split") not in RANK_SPLITS:
        raise ConfigError(
            f"{where}: {run} is a run on split {data.get('split')!r}; ranking by val needs {model!r}'s own run on val"
        )
    for key in ("videos", "max_videos"):
        if data.get(key):
            raise ConfigError(
                f"{where}: {run} scored part of val only (data.{key}: {data[key]!r}); rank on a run of the whole split"
            )
    ran = stamp.get("models") if isinstance(stamp.get("models"), dict) else {}
    if len(ran) != 1:
        raise ConfigError(
            f"{where}: {run} is a run of {len(ran)} models ({', '.join(ran) or 'none'}), not of {model!r} alone; "
            f"rank each model by its own `zoo run` on val"
        )
    if model_dir is not None:
        recorded = next(iter(ran.values())).get("files", {})
        for name in MODEL_FILES:
            now = file_sha256(Path(model_dir) / name)
            then = (recorded.get(name) or {}).get("sha256") if isinstance(recorded, dict) else None
            if then != now:
                raise ConfigError(
                    f"{where}: {run} ran other weights than model {model!r} ({name} sha256 "
                    f"{str(then)[:12]}... there, {now[:12]}... in {model_dir}); rerun `zoo run` of {model!r} on val"
                )
    metrics = _read_json(run / "metrics.json", where, "the run has not finished: rerun its `zoo run` to complete it")
    return _fraction(f"{where} ({run / 'metrics.json'}: miou)", metrics.get("miou"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path, where: str, advice: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} does not exist; {advice}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where}: {path} is unreadable ({exc}); {advice}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path} is not a JSON object; {advice}")
    return data


def _fraction(where: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ConfigError(f"{where} must be an mIoU between 0 and 1 (a fraction: 0.5652 for 56.52%), got {value!r}")
    return float(value)


def _mapping(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping ({name}: {{key: value, ...}}), got {value!r}")
    return {str(k): v for k, v in value.items()}
