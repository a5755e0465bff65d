#!/usr/bin/env bash
# Stop the one-node SLURM started by scripts/slurm/start.sh: only the pids it recorded in
# STATE_DIR/pids (slurmd, then slurmctld, then munged), never daemons found by name.
#
#   scripts/slurm/stop.sh [STATE_DIR]    # default: $SCORESDE_SLURM_DIR or /tmp/scoresde-slurm
set -uo pipefail

DIR=$(realpath -m "${1:-${SCORESDE_SLURM_DIR:-/tmp/scoresde-slurm}}")
PIDS="$DIR/pids"
[ -f "$PIDS" ] || { echo "[slurm] nothing to stop: no $PIDS" >&2; exit 0; }

# Is $2 still the process we started ($1 is its name)? Guards against reused pids.
ours() { [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm")" = "$1" ]; }

stop_one() {
    local name=$1 pid=$2
    ours "$name" "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 40); do ours "$name" "$pid" || return 0; sleep 0.25; done
    echo "[slurm] $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

# Cancel jobs still queued or running on this cluster before taking it down.
if [ -f "$DIR/slurm.conf" ] && command -v scancel >/dev/null; then
    SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
fi
for name in slurmd slurmctld munged; do
    while read -r n pid; do
        [ "$n" = "$name" ] && stop_one "$name" "$pid"
    done <"$PIDS"
done
# The /etc/slurm/slurm.conf link start.sh made, if it still points at our config.
while read -r n path; do
    [ "$n" = link ] && [ "$(readlink "$path")" = "$DIR/slurm.conf" ] && rm -f "$path"
done <"$PIDS"
rm -f "$PIDS"
echo "[slurm] stopped the daemons recorded in $DIR" >&2
