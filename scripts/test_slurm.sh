#!/usr/bin/env bash
# `make test-slurm`: the smoke DAG through a real one-node SLURM, checked against a local run.
#
#  1. start munged + slurmctld + slurmd (scripts/slurm/start.sh; installs slurm-wlm and munge
#     from Debian when missing, so it needs root and apt)
#  2. scripts/slurm/preflight.py: the profile's partitions exist, job state via squeue works
#  3. the smoke config locally (`--cores 2`) and through `--profile profiles/slurm`, each in
#     a clean copy of the repository (git ls-files plus the .venv), and the same rows and
#     columns in reports/metrics.csv and reports/likelihood.csv
#  4. a job that fails on the cluster (a corrupt checkpoint) leaves no output and its error
#     names the SLURM log; a profile naming a partition that does not exist fails with one
#     error naming it, from the preflight and from sbatch itself
#  5. stops the daemons it started (by pid; also on failure)
#
# Exit status 0 only when all of it holds. Environment: VENV (default ./.venv),
# SCORESDE_SLURM_DIR (cluster state, default a fresh /tmp dir), KEEP=1 keeps the run copies.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=$(realpath "${VENV:-$ROOT/.venv}")
CONFIG=.test/params.yaml
STATE=${SCORESDE_SLURM_DIR:-$(mktemp -d /tmp/scoresde-slurm.XXXXXX)}
WORK=$(mktemp -d /tmp/scoresde-test-slurm.XXXXXX)
STATUS=1

say() { printf '\n== %s\n' "$*" >&2; }
fail() { echo "test-slurm: FAILED: $*" >&2; exit 1; }

finish() {
    bash "$ROOT/scripts/slurm/stop.sh" "$STATE" || true
    if [ "$STATUS" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
        [ -z "${SCORESDE_SLURM_DIR:-}" ] && rm -rf "$STATE"
    else
        echo "test-slurm: runs kept in $WORK, cluster logs in $STATE" >&2
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

[ -x "$VENV/bin/snakemake" ] || fail "no Snakemake in $VENV (run \`make venv\` first)"
export PATH="$VENV/bin:$PATH"

copy_repo() {  # a clean copy of the working tree: tracked and untracked-but-not-ignored files
    mkdir -p "$1"
    git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$1"
    ln -s "$VENV" "$1/.venv"
}

smk() {  # smk DIR LOGFILE ARGS...: snakemake in a copy, its own src/ first on the path
    local dir=$1 logfile=$2; shift 2
    (cd "$dir" && PYTHONPATH="$dir/src" snakemake "$@") >"$logfile" 2>&1
}

say "starting a one-node SLURM in $STATE"
bash scripts/slurm/start.sh "$STATE"
export SLURM_CONF="$STATE/slurm.conf"

say "preflight of profiles/slurm"
python scripts/slurm/preflight.py profiles/slurm || fail "preflight of profiles/slurm"

say "smoke run, local (--cores 2)"
copy_repo "$WORK/local"
start=$(date +%s)
smk "$WORK/local" "$WORK/local.log" --cores 2 --configfile "$CONFIG" \
    || { tail -n 40 "$WORK/local.log" >&2; fail "local smoke run (log: $WORK/local.log)"; }
local_s=$(($(date +%s) - start))

say "smoke run through SLURM (--profile profiles/slurm)"
copy_repo "$WORK/slurm"
start=$(date +%s)
smk "$WORK/slurm" "$WORK/slurm.log" --profile profiles/slurm --configfile "$CONFIG" \
    || { tail -n 60 "$WORK/slurm.log" >&2; fail "SLURM smoke run (log: $WORK/slurm.log)"; }
slurm_s=$(($(date +%s) - start))
jobs=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.log" || true)
[ "$jobs" -gt 0 ] || fail "no job went through sbatch (log: $WORK/slurm.log)"

say "same tables as the local run"
python scripts/slurm/compare_reports.py "$WORK/local/reports" "$WORK/slurm/reports" \
    || fail "reports differ between the local and the SLURM run"

say "a job that fails on the cluster"
target=$(cd "$WORK/slurm" && find samples -name '*.pt' | sort | head -n1)
[ -n "$target" ] || fail "the SLURM run wrote no samples"
IFS=/ read -r _ dataset sde _ <<<"$target"
: >"$WORK/slurm/checkpoints/$dataset/$sde/best.pt"  # corrupt: load_checkpoint must refuse it
if smk "$WORK/slurm" "$WORK/fail.log" --profile profiles/slurm --configfile "$CONFIG" \
    --force "$target"; then
    fail "a job with a corrupt checkpoint succeeded (log: $WORK/fail.log)"
fi
[ ! -e "$WORK/slurm/$target" ] || fail "the failed job left $target behind"
slurm_log=$(grep -o "$WORK/slurm/logs/slurm/rule_sample/[^ ,)]*\.log" "$WORK/fail.log" | head -n1 || true)
if [ -z "$slurm_log" ] || [ ! -s "$slurm_log" ]; then
    fail "the error does not name an existing SLURM log (log: $WORK/fail.log)"
fi
echo "failed as it should; no $target left; SLURM log: ${slurm_log#"$WORK/slurm/"}" >&2

say "a profile with a partition that does not exist"
mkdir -p "$WORK/badprofile"
sed 's/^\(  slurm_partition:\).*/\1 nosuch/' profiles/slurm/config.yaml >"$WORK/badprofile/config.yaml"
if python scripts/slurm/preflight.py "$WORK/badprofile" 2>"$WORK/preflight.err"; then
    fail "preflight accepted partition 'nosuch'"
fi
grep -q "partition 'nosuch' does not exist" "$WORK/preflight.err" || fail "unclear preflight error"
cat "$WORK/preflight.err" >&2
if smk "$WORK/slurm" "$WORK/badpartition.log" --profile "$WORK/badprofile" \
    --configfile "$CONFIG" --force reports/metrics.csv; then
    fail "a run on partition 'nosuch' succeeded (log: $WORK/badpartition.log)"
fi
# the workflow's onstart preflight refuses the run before any sbatch, naming the partition
grep -q "partition 'nosuch' does not exist" "$WORK/badpartition.log" \
    || fail "the run's error does not name the partition (log: $WORK/badpartition.log)"
if grep -q "Submitted batch job\|Job .* has been submitted" "$WORK/badpartition.log"; then
    fail "jobs were submitted before the partition was checked (log: $WORK/badpartition.log)"
fi
echo "snakemake: $(grep -m1 -o "SLURM partition 'nosuch' does not exist[^.]*" "$WORK/badpartition.log")" >&2

STATUS=0
say "test-slurm passed: smoke DAG ($jobs SLURM jobs) in ${slurm_s}s through SLURM, ${local_s}s locally"
