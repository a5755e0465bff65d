#!/usr/bin/env bash
# Two DVC experiments on the smoke configuration in a throwaway git repository (this checkout's
# files, .test/params.yaml merged into params.yaml): the baseline and train.seed=1, then the
# `dvc exp show` table of docs/experiments.md. About 3-5 minutes on 2 cores.
#   scripts/dvc_smoke.sh [DIR]     (DIR: where to build the repository; default: a temp folder)
# Needs the project's environment active (python, snakemake and dvc on PATH).
set -euo pipefail
export DVC_NO_ANALYTICS=1
src=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$(mktemp -d)/scoresde-dvc-smoke}
mkdir -p "$dest"
if [ -n "$(ls -A "$dest")" ]; then
    echo "error: $dest is not empty; give a new or empty folder" >&2
    exit 2
fi
(cd "$src" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$dest"
cd "$dest"
python -m scoresde validate-config params.yaml .test/params.yaml --print > params.merged.yaml
mv params.merged.yaml params.yaml
git init -q
git config user.name "scoresde smoke"
git config user.email "smoke@scoresde.invalid"
git add -A
git commit -qm "smoke configuration"

echo "== repository: $dest"
time dvc exp run -n baseline
time dvc exp run -n seed1 -S train.seed=1
dvc exp show --no-pager --md --precision 4 --drop '.*' \
    --keep 'Experiment|train\.seed|.*/bpd|.*/pc_4_tweedie/fid|.*/ode-rk45_adaptive_none/fid'
