#!/usr/bin/env bash
# Start a throwaway one-node SLURM cluster on this machine, for `make test-slurm`.
#
#   scripts/slurm/start.sh [STATE_DIR]      # default: $SCORESDE_SLURM_DIR or /tmp/scoresde-slurm
#   source STATE_DIR/env.sh                  # points sbatch/squeue/sinfo at it (SLURM_CONF)
#   scripts/slurm/stop.sh [STATE_DIR]        # stops exactly the daemons started here
#
# Installs Debian's slurm-wlm and munge when they are missing (needs root and apt), then
# writes STATE_DIR/slurm.conf (accounting off, MinJobAge long enough for `squeue` to report
# finished jobs, one partition holding this node), starts munged (own key and socket),
# slurmctld and slurmd in the foreground of background jobs, records their pids in
# STATE_DIR/pids and waits until the node is idle. Nothing outside STATE_DIR is changed
# apart from the package installation; an existing system munged or SLURM is left alone.
#
# Environment: SCORESDE_SLURM_PARTITION (partition name, default "main", the one
# profiles/slurm asks for), SCORESDE_SLURM_PORT (slurmctld port, default 6817; slurmd uses
# the next one), SCORESDE_SLURM_NO_INSTALL=1 (fail instead of installing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$(realpath -m "${1:-${SCORESDE_SLURM_DIR:-/tmp/scoresde-slurm}}")
PARTITION=${SCORESDE_SLURM_PARTITION:-main}
CTLD_PORT=${SCORESDE_SLURM_PORT:-6817}
SLURMD_PORT=$((CTLD_PORT + 1))
ETC_CONF=/etc/slurm/slurm.conf
MIN_JOB_AGE=900  # seconds finished jobs stay visible to squeue (plugin needs >= 3x its poll delay)

die() { echo "scripts/slurm/start.sh: error: $*" >&2; exit 1; }
log() { echo "[slurm] $*" >&2; }

[ "$(id -u)" = 0 ] || die "must run as root (slurmd launches jobs and apt installs packages)"

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
    [ ${#missing[@]} = 0 ] && return 0
    [ "${SCORESDE_SLURM_NO_INSTALL:-0}" = 1 ] && die "SLURM is not installed (missing: ${missing[*]})"
    command -v apt-get >/dev/null || die "SLURM is not installed (missing: ${missing[*]}) and apt-get is unavailable"
    log "installing slurm-wlm and munge (missing: ${missing[*]})"
    # Keep the packages' init scripts from starting system daemons: we start our own below.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge; } >"$DIR/apt.log" 2>&1 || rc=$?
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install slurm-wlm munge failed (log: $DIR/apt.log)"; }
}

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

record() { echo "$1 $2" >>"$DIR/pids"; }

wait_for() {  # wait_for SECONDS DESCRIPTION LOGFILE COMMAND...
    local seconds=$1 what=$2 logfile=$3; shift 3
    for _ in $(seq "$((seconds * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    [ -f "$logfile" ] && tail -n 20 "$logfile" >&2
    bash "$HERE/stop.sh" "$DIR" >&2 || true
    die "$what did not come up within ${seconds}s (log: $logfile)"
}

node_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null | head -n1)" = idle ]; }

mkdir -p "$DIR"
chmod 755 "$DIR"
if [ -f "$DIR/pids" ]; then
    while read -r name pid; do
        pid_alive "$pid" && die "$name (pid $pid) from an earlier start is still running; run scripts/slurm/stop.sh $DIR"
    done <"$DIR/pids"
fi
install_packages
for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    port_busy "$port" && die "port $port is in use (another SLURM?); set SCORESDE_SLURM_PORT"
done
rm -rf "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/pids" "$DIR"/*.log
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chmod 700 "$DIR/munge"
: >"$DIR/pids"

# munge: a private key and socket, so a system munged (if any) is untouched.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
SOCKET="$DIR/munge/munge.socket"
munged --foreground --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" \
    --log-file="$DIR/munged.log" </dev/null >>"$DIR/munged.log" 2>&1 &
record munged $!
wait_for 20 munged "$DIR/munged.log" bash -c "munge -S '$SOCKET' -n | unmunge -S '$SOCKET'"

# slurm.conf for this host, from what slurmd detects (CPUs, sockets, memory).
HOST=$(hostname -s)
NODE=$(slurmd -C | head -n1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1/")
cat >"$DIR/slurm.conf" <<EOF
# One-node SLURM for scoresde's tests, written by scripts/slurm/start.sh.
ClusterName=scoresde
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No accounting: sacct has nothing to ask, so the Snakemake plugin must poll with squeue,
# which sees finished jobs for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
# No cgroups in containers/VMs: track processes by pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
$NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
printf 'export SLURM_CONF=%s\n' "$DIR/slurm.conf" >"$DIR/env.sh"
# The plugin's job step drops SLURM_* variables (SLURM_CONF too) before its `srun`, which
# then reads the default /etc/slurm/slurm.conf: link ours there (removed by stop.sh).
if [ ! -e "$ETC_CONF" ] || [ "$(readlink "$ETC_CONF")" = "$DIR/slurm.conf" ]; then
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -sfn "$DIR/slurm.conf" "$ETC_CONF"
    record link "$ETC_CONF"
else
    bash "$HERE/stop.sh" "$DIR" >&2
    die "$ETC_CONF exists (a real SLURM here?); not replacing it. Use that cluster directly."
fi
export SLURM_CONF="$DIR/slurm.conf"

slurmctld -D -i -f "$SLURM_CONF" </dev/null >>"$DIR/slurmctld.log" 2>&1 &
record slurmctld $!
wait_for 30 slurmctld "$DIR/slurmctld.log" scontrol ping
slurmd -D -N "$HOST" -f "$SLURM_CONF" </dev/null >>"$DIR/slurmd.log" 2>&1 &
record slurmd $!
wait_for 60 "slurmd (node $HOST idle)" "$DIR/slurmd.log" node_idle

log "one-node cluster up: partition $PARTITION, node $HOST ($(sinfo -h -o '%c CPUs, %m MB')), state in $DIR"
log "use it with: source $DIR/env.sh"
