#!/usr/bin/env bash
# Single-node SLURM cluster on this machine, for the SLURM test (tests/test_slurm.py) and for
# developers trying `snakemake --profile slurm` without a cluster.
#
#   sudo .ci/start_slurm.sh            # install (Debian/Ubuntu) if missing, configure, start
#   sudo .ci/start_slurm.sh --stop     # stop the daemons started here
#
# Installs Debian's slurm-wlm and munge when `slurmctld` is missing (apt-get, as root), writes
# /etc/slurm/slurm.conf (one node = this machine's CPUs and memory, one partition `main`, no
# accounting database, MinJobAge=600), starts munged, slurmctld and slurmd (all on 127.0.0.1),
# and waits until the node accepts jobs. Idempotent: a running cluster is left as it is.
#
# Exit status: 0 cluster up; 3 SLURM/munge are missing and cannot be installed here (the caller
# may skip the SLURM test); anything else: installed but the cluster did not come up (a failure).
set -euo pipefail

PARTITION=main
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# written by overlapseg .ci/start_slurm.sh"
LOG_DIR=/var/log/slurm

say() { echo "start_slurm: $*" >&2; }

cluster_up() {
    # the node is up and idle/mixed/allocated in our partition
    timeout 5 sinfo -h -p "$PARTITION" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc|comp)'
}

stop_pidfile() {    # stop the daemon whose pid file is $1, waiting until it has exited
    local pid
    [[ -s $1 ]] || return 0
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" && say "stopped $(basename "$1" .pid) ($pid)"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_slurm() { stop_pidfile /run/slurmd.pid; stop_pidfile /run/slurmctld.pid; }

if [[ ${1:-} == --stop ]]; then
    stop_slurm
    stop_pidfile /run/munge/munged.pid
    exit 0
fi

if command -v sinfo >/dev/null && cluster_up; then
    say "cluster already up (partition $PARTITION)"
    exit 0
fi

# ------------------------------------------------------------------ packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        say "SLURM is not installed and cannot be installed here (needs root and apt-get)"
        exit 3
    fi
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq >/dev/null \
            && apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }; then
        say "apt-get could not install slurm-wlm and munge"
        exit 3
    fi
fi

if [[ $(id -u) -ne 0 ]]; then
    say "SLURM is installed but the cluster is down; starting it needs root (sudo $0)"
    exit 1
fi

# ------------------------------------------------------------------ munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    if command -v runuser >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
    for _ in $(seq 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null
fi

# ------------------------------------------------------------------ slurm.conf
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    say "$CONF exists and was not written by this script; refusing to overwrite it"
    exit 1
fi
node_line=$(slurmd -C | head -1)        # NodeName=<host> CPUs=... RealMemory=... (this machine)
node_name=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node_line")
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
cat >"$CONF" <<EOF
$MARKER
# Single-node test cluster; every daemon talks on 127.0.0.1 only.
ClusterName=overlapseg
SlurmctldHost=${node_name}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
InactiveLimit=0
Waittime=0
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
# slurm 22.05 also reads cgroup.conf when present; nothing here needs cgroups
say "wrote $CONF ($node_line)"

# ------------------------------------------------------------------ daemons
stop_slurm
slurmctld
for _ in $(seq 30); do
    scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.5
done
slurmd
for _ in $(seq 60); do
    if cluster_up; then
        say "cluster up: partition $PARTITION, node $node_name"
        sinfo >&2
        exit 0
    fi
    # a node left DOWN by an earlier run comes back with ReturnToService=2; nudge it anyway
    scontrol update nodename="$node_name" state=resume >/dev/null 2>&1 || true
    sleep 1
done
say "the cluster did not come up; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
sinfo -N -l >&2 || true
tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
exit 1
