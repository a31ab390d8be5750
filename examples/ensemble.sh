#!/usr/bin/env bash
# The hierarchical ensemble of the 5th place on three quickstart-sized models: train them,
# run each alone on val (their val mIoU ranks them), search the group weights on val, and
# run the ensemble with the best weights. Prints each model alone, the mean, the rows of the
# report's Table 3 and the searched ensemble. Start again with `rm -rf runs/ens-* runs/ensemble`.
#   pip install -e plugins/zoo-hierarchical-ensemble && bash examples/ensemble.sh
set -euo pipefail
cd "$(dirname "$0")/.."
iters=${ENSEMBLE_ITERS:-400}   # per model, as the quickstart; with fewer, the models differ too much to gain

[ -d data/synth ] || zoo data synth data/synth --videos 12 --frames 20

# Three models of the quickstart's architecture and recipe: two seeds, and a third seed with a smaller crop.
zoo train examples/quickstart.yaml --out runs/ens-a --set train.max_iters="$iters" --set train.seed=1
zoo train examples/quickstart.yaml --out runs/ens-b --set train.max_iters="$iters" --set train.seed=2
zoo train examples/quickstart.yaml --out runs/ens-c --set train.max_iters="$iters" --set train.seed=3 \
  --set 'train.transforms.1.size=[48, 72]'

# Each model alone on val, with the ensemble's TTA: the runs rank_by reads, and the table's first rows.
for m in a b c; do
  zoo run examples/quickstart.yaml --out "runs/ens-$m-val" --set models.0.name="ens-$m" \
    --set models.0.weights="runs/ens-$m"
done

# The plain mean of the three, for comparison.
zoo run examples/ensemble.yaml --out runs/ens-mean --set ensemble.type=mean --set 'ensemble.args={}'

# The weights of weak and aux on a 11 x 11 grid (strong stays 1.0), every point scored in one pass over val.
zoo ensemble search examples/ensemble.yaml --grid weak=0:2:0.2 --grid aux=0:2:0.2 --out runs/ens-search

# The ensemble with the best weights (runs/ens-search/best.yaml holds the whole ensemble: block).
read -r weak aux < <(python -c '
import json
best = json.load(open("runs/ens-search/search.json"))["best"]["weights"]
print(best["weak"], best["aux"])')
zoo run examples/ensemble.yaml --out runs/ensemble \
  --set ensemble.args.weights.weak="$weak" --set ensemble.args.weights.aux="$aux"

python - <<'PY'
import json

def row(label, m):
    print(f"| {label} | {100 * m['miou']:.2f} | {100 * m['mvc8']:.2f} | {100 * m['mvc16']:.2f} |")

search = json.load(open("runs/ens-search/search.json"))
scored = {tuple(p["weights"][g] for g in ("weak", "aux")): p for p in search["points"]}
print("\n| model | mIoU | mVC8 | mVC16 |\n|---|---|---|---|")
for label, run in [("ens-a alone", "runs/ens-a-val"), ("ens-b alone", "runs/ens-b-val"),
                   ("ens-c alone", "runs/ens-c-val"), ("mean of the three", "runs/ens-mean")]:
    row(label, json.load(open(f"{run}/metrics.json")))
# Table 3 of the report, from the search (exact: zoo run with these weights gives the same figures)
row("P_S (strong alone)", scored[(0.0, 0.0)])
row("P_S + 1.4 P_W", scored[(1.4, 0.0)])
row("P_S + 1.4 P_W + 1.0 P_A (the report's weights)", scored[(1.4, 1.0)])
best = search["best"]["weights"]
row(f"P_S + {best['weak']:g} P_W + {best['aux']:g} P_A (searched; zoo run)", json.load(open("runs/ensemble/metrics.json")))
PY
