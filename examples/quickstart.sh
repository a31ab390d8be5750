#!/usr/bin/env bash
# The quickstart, published: train the quickstart model, push it to a hub served on this
# machine, pull it back by its card name into a fresh cache, and run the pipeline with it.
#   bash examples/quickstart.sh        (from anywhere; paths are relative to the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d data/synth ] || zoo data synth data/synth --videos 12 --frames 20
zoo train examples/quickstart.yaml --out runs/quickstart-model

# A hub of our own on a free port of 127.0.0.1; it prints its URL once it listens.
mkdir -p runs/quickstart-registry
zoo hub serve runs/quickstart-hub --port 0 > runs/quickstart-hub.log 2>&1 &
hub_pid=$!
trap 'kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "HF_ENDPOINT=" runs/quickstart-hub.log && break
  kill -0 "$hub_pid" 2>/dev/null || { cat runs/quickstart-hub.log >&2; exit 1; }
  sleep 0.1
done
HF_ENDPOINT=$(sed -n 's/.*HF_ENDPOINT=//p' runs/quickstart-hub.log)
[ -n "$HF_ENDPOINT" ] || { echo "the hub did not start in 30 s: see runs/quickstart-hub.log" >&2; exit 1; }
export HF_ENDPOINT

# One commit (config.json, model.safetensors, README.md); the printed card names it by commit and
# the sha256 of each file.
zoo push runs/quickstart-model --repo local/quickstart --card-out runs/quickstart-registry/quickstart.yaml

# Pull by card name into an empty cache, then run with the pulled weights (zoo.lock records them).
export ZOO_REGISTRY_PATH="$PWD/runs/quickstart-registry"
rm -rf runs/quickstart-cache
export HF_HOME="$PWD/runs/quickstart-cache"
zoo pull quickstart
zoo run examples/quickstart.yaml --out runs/quickstart --set models.0.weights=card:quickstart
