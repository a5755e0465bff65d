#!/usr/bin/env bash
# The whole DAG of two commits side by side: for each round, a fresh clone of each commit (the
# order swapped every round, so a drifting machine load hits both alike) runs
#   snakemake --cores CORES [--configfile CONFIG]
# and its wall and CPU time, the load average before it and the number of jobs are printed as one
# Markdown row. Each clone starts with an empty Inductor cache (.cache/inductor of the clone): the
# compiled commit pays its compilations once per DAG, as a fresh checkout does. Needs an idle
# machine; run from the repository root with the project's virtual environment:
#
#   benchmarks/dag/compare_commits.sh OLD NEW [ROUNDS] [CONFIG]
#   benchmarks/dag/compare_commits.sh main~1 main 2                                # the default DAG
#   benchmarks/dag/compare_commits.sh main~1 main 2 config/fashion_mnist_cpu.yaml  # Fashion-MNIST
#
# Environment: VENV (default .venv of this checkout), CORES (default 2), WORK (default a
# temporary folder; the clones are deleted after each run unless KEEP=1).
set -euo pipefail

old=${1:?usage: compare_commits.sh OLD NEW [ROUNDS] [CONFIG]}
new=${2:?usage: compare_commits.sh OLD NEW [ROUNDS] [CONFIG]}
rounds=${3:-2}
config=${4:-}
repo=$(git rev-parse --show-toplevel)
venv=$(cd "${VENV:-$repo/.venv}" && pwd)
cores=${CORES:-2}
work=${WORK:-$(mktemp -d -t dag-compare-XXXXXX)}
old_sha=$(git -C "$repo" rev-parse --short "$old")
new_sha=$(git -C "$repo" rev-parse --short "$new")

echo "# DAG: $old_sha vs $new_sha, ${config:-params.yaml}, snakemake --cores $cores, $(date -u +%F)"
echo "# CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
echo
echo "| round | commit | wall s | CPU s (user + sys) | jobs | load before (1, 5, 15 min) |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  if (( round % 2 )); then order="$old_sha $new_sha"; else order="$new_sha $old_sha"; fi
  for sha in $order; do
    dir="$work/$sha-$round"
    git clone --quiet --shared "$repo" "$dir"
    git -C "$dir" checkout --quiet "$sha"
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    args=(--cores "$cores")
    [[ -n "$config" ]] && args+=(--configfile "$config")
    (cd "$dir" && PATH="$venv/bin:$PATH" PYTHONPATH="$dir/src" \
      /usr/bin/time -f "%e %U %S" -o "$dir/.time" snakemake "${args[@]}" > "$dir/.snakemake.log" 2>&1)
    read -r wall user sys < "$dir/.time"
    jobs=$(grep -cE "^(local)?rule " "$dir/.snakemake.log" || true)
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')
    echo "| $round | $sha | $wall | $cpu | $jobs | $load |"
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$dir"
  done
done
