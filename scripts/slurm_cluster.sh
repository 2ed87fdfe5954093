#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests, CI and trying scripts/slurm_train.sh.
#
#   bash scripts/slurm_cluster.sh start    install (Debian's slurm-wlm + munge, when missing),
#                                          configure, start munged, slurmctld, slurmd and wait
#                                          until `sinfo` shows the node idle; a no-op when running
#   bash scripts/slurm_cluster.sh status   daemons and node state; exit 0 when usable, 1 when not
#   bash scripts/slurm_cluster.sh stop     stop the daemons (jobs still running are killed)
#
# Needs root (it installs packages, writes /etc/munge/munge.key and /etc/slurm/slurm.conf and
# runs the daemons as root). Made for containers: no systemd, no cgroups (proctrack/linuxproc,
# task/none), no accounting daemon (job states through `scontrol show job`, kept MinJobAge
# seconds after the end). The node is this host (`hostname -s`) with the CPUs and memory that
# `slurmd -C` reads from the machine, in one default partition `debug`; JobRequeue=1 so that
# `#SBATCH --requeue` / `scontrol requeue` work; short timeouts so that tests run fast.
#
# Environment: SLURM_CLUSTER_WAIT (seconds to wait for the node, default 60),
# SLURM_CLUSTER_NO_INSTALL=1 (fail instead of installing packages).
# Errors are one line `error: ...` on stderr, exit status 2; every wait is bounded.

set -uo pipefail

CONF_DIR=/etc/slurm
CONF="${CONF_DIR}/slurm.conf"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MUNGE_PID="${MUNGE_SOCKET_DIR}/munged.pid"
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_PID="${RUN_DIR}/slurmctld.pid"
SLURMD_PID="${RUN_DIR}/slurmd.pid"
WAIT="${SLURM_CLUSTER_WAIT:-60}"
# Seconds a requeued job waits before it may start again (Slurm's credential lifetime; 120 s by
# default). Lower than that is refused by slurmctld for security reasons on real clusters; a
# one-node test cluster can afford a short one.
CRED_EXPIRE="${SLURM_CLUSTER_CRED_EXPIRE:-10}"

die() {
    echo "error: $*" >&2
    exit 2
}

say() { echo "slurm_cluster: $*"; }

alive() { # alive PIDFILE: the process in PIDFILE runs
    local pid
    [[ -r "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null)"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

node_name() { hostname -s; }

node_state() { # the node's state as sinfo reports it ("" when slurmctld does not answer)
    timeout 10 sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | head -n1
}

last_log() { # last_log FILE: its last error-looking line, or its last line
    local line
    [[ -r "$1" ]] || { echo "no log in $1"; return; }
    line="$(grep -iE 'error|fatal' "$1" | tail -n1)"
    [[ -n "$line" ]] || line="$(tail -n1 "$1")"
    echo "${line:-empty log $1}"
}

install_packages() {
    local missing=()
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    { command -v slurmctld && command -v slurmd && command -v sbatch; } >/dev/null 2>&1 \
        || missing+=(slurm-wlm)
    ((${#missing[@]})) || return 0
    [[ "${SLURM_CLUSTER_NO_INSTALL:-0}" == 1 ]] \
        && die "${missing[*]} not installed and SLURM_CLUSTER_NO_INSTALL=1; install them with apt-get install ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 \
        || die "${missing[*]} not installed and no apt-get here; install SLURM and munge by hand"
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    local log=/tmp/slurm_cluster-apt.log
    if ! timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        timeout 300 apt-get update -q >>"$log" 2>&1 \
            || die "apt-get update failed (see $log): $(tail -n1 "$log")"
        timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
            || die "apt-get install ${missing[*]} failed (see $log): $(tail -n1 "$log")"
    fi
    command -v munged >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1 \
        || die "apt-get installed ${missing[*]} but munged/slurmctld are still missing (see $log)"
}

write_atomically() { # write_atomically FILE MODE: stdin to FILE through a temp file + rename
    local tmp
    tmp="$(mktemp "$1.XXXXXX")" || die "cannot write in $(dirname "$1")"
    cat >"$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1" || { rm -f "$tmp"; die "cannot write $1"; }
}

configure() {
    mkdir -p "$CONF_DIR" /etc/munge "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge \
        "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR" "$RUN_DIR" \
        || die "cannot create the SLURM/munge folders under /etc, /run, /var"
    if [[ ! -s "$MUNGE_KEY" ]]; then
        head -c 1024 /dev/urandom | write_atomically "$MUNGE_KEY" 0400
    fi
    local owner=root
    id munge >/dev/null 2>&1 && owner=munge
    chown "$owner:" "$MUNGE_KEY" "$MUNGE_SOCKET_DIR" /var/lib/munge /var/log/munge /etc/munge
    chmod 0400 "$MUNGE_KEY"
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 "$MUNGE_SOCKET_DIR"

    # What slurmd reads from the machine: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ...
    # RealMemory=24105". CPUs only (no socket/core layout) so that CR_CPU hands out every CPU,
    # hyper-threads included, one task each.
    local hw cpus mem
    hw="$(timeout 20 slurmd -C 2>/dev/null | head -n1)"
    cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n "$cpus" ]] || cpus="$(nproc)"
    [[ -n "$mem" ]] || mem="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    [[ "$cpus" =~ ^[0-9]+$ && "$mem" =~ ^[0-9]+$ ]] \
        || die "cannot read the CPU count or memory of this machine (slurmd -C said: ${hw:-nothing})"

    local node
    node="$(node_name)"
    write_atomically "$CONF" 0644 <<EOF
# Written by scripts/slurm_cluster.sh: a one-node test cluster (no systemd, no cgroups).
ClusterName=segbench
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=${CRED_EXPIRE}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
EnforcePartLimits=ALL
StateSaveLocation=${STATE_DIR}/slurmctld
SlurmdSpoolDir=${STATE_DIR}/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=10
SlurmdTimeout=10
MessageTimeout=5
InactiveLimit=0
KillWait=10
MinJobAge=300
Waittime=0
SlurmdParameters=config_overrides
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # A config that differs from the one the daemons run with is loaded by a restart.
}

start_munge() {
    if alive "$MUNGE_PID" || pgrep -x munged >/dev/null 2>&1; then
        timeout 5 munge -n </dev/null >/dev/null 2>&1 && return 0
        # a munged that does not answer (stale key or socket): restart ours
        alive "$MUNGE_PID" || die "a munged that is not ours runs and does not answer (munge -n fails); stop it and run start again"
        stop_pidfile "$MUNGE_PID" munged
    fi
    local user=()
    id munge >/dev/null 2>&1 && user=(runuser -u munge --)
    "${user[@]}" munged --pid-file="$MUNGE_PID" >/dev/null 2>&1 \
        || die "munged did not start: $(last_log /var/log/munge/munged.log)"
    local t
    for ((t = 0; t < 50; t++)); do
        timeout 5 munge -n </dev/null >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "munged does not answer (munge -n fails): $(last_log /var/log/munge/munged.log)"
}

stop_pidfile() { # stop_pidfile PIDFILE NAME: TERM, then KILL after 10 s
    local pid t
    alive "$1" || { rm -f "$1"; return 0; }
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null
    for ((t = 0; t < 50; t++)); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$1"
}

wait_idle() { # wait until the node is idle (or allocated/mixed: usable); bounded by $WAIT
    local state="" t resumed=0 deadline=$((SECONDS + WAIT))
    while ((SECONDS < deadline)); do
        state="$(node_state)"
        case "$state" in
        idle* | mixed* | allocated* | completing*) return 0 ;;
        down* | drain* | fail*)
            if ((!resumed)); then
                timeout 10 scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1
                resumed=1
            fi
            ;;
        esac
        alive "$CTLD_PID" || die "slurmctld stopped: $(last_log "$LOG_DIR/slurmctld.log")"
        alive "$SLURMD_PID" || die "slurmd stopped: $(last_log "$LOG_DIR/slurmd.log")"
        sleep 1
    done
    local reason
    reason="$(timeout 10 sinfo -h -R -o '%E' 2>/dev/null | head -n1)"
    die "node $(node_name) is not idle after ${WAIT} s (state: ${state:-no answer from slurmctld}${reason:+, reason: $reason}); see $LOG_DIR/slurmctld.log and slurmd.log"
}

cmd_start() {
    [[ $EUID -eq 0 ]] || die "start needs root (it installs packages and runs the SLURM daemons); run it as root or with sudo"
    install_packages
    if alive "$CTLD_PID" && alive "$SLURMD_PID" && [[ -r "$CONF" ]]; then
        case "$(node_state)" in
        idle* | mixed* | allocated* | completing*)
            say "already running (node $(node_name): $(node_state))"
            return 0
            ;;
        esac
    fi
    configure
    start_munge
    if ! alive "$CTLD_PID"; then
        slurmctld -f "$CONF" >>"$LOG_DIR/slurmctld.out" 2>&1 \
            || die "slurmctld did not start: $(last_log "$LOG_DIR/slurmctld.log")"
    else
        timeout 10 scontrol reconfigure >/dev/null 2>&1
    fi
    local t
    for ((t = 0; t < 100; t++)); do
        timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && break
        alive "$CTLD_PID" || { sleep 0.3; alive "$CTLD_PID"; } \
            || die "slurmctld stopped: $(last_log "$LOG_DIR/slurmctld.log")"
        sleep 0.3
    done
    if ! alive "$SLURMD_PID"; then
        slurmd -f "$CONF" >>"$LOG_DIR/slurmd.out" 2>&1 \
            || die "slurmd did not start: $(last_log "$LOG_DIR/slurmd.log")"
    fi
    wait_idle
    say "running: node $(node_name) $(timeout 10 sinfo -h -N -o '%T, %c CPUs, %m MB' | head -n1), partition debug"
}

cmd_stop() {
    [[ $EUID -eq 0 ]] || die "stop needs root"
    if alive "$CTLD_PID" || alive "$SLURMD_PID"; then
        # Jobs end with the daemons; cancel them first so that their tasks do not linger.
        timeout 10 scancel --full --state=RUNNING --user=root >/dev/null 2>&1
        timeout 10 scancel --user=root >/dev/null 2>&1
    fi
    stop_pidfile "$SLURMD_PID" slurmd
    stop_pidfile "$CTLD_PID" slurmctld
    stop_pidfile "$MUNGE_PID" munged
    say "stopped"
}

cmd_status() {
    local ok=0 d
    for d in munged:"$MUNGE_PID" slurmctld:"$CTLD_PID" slurmd:"$SLURMD_PID"; do
        if alive "${d#*:}"; then
            say "${d%%:*} running (pid $(cat "${d#*:}"))"
        else
            say "${d%%:*} not running"
            ok=1
        fi
    done
    local state
    state="$(node_state)"
    say "node $(node_name): ${state:-no answer from slurmctld}"
    case "$state" in
    idle* | mixed* | allocated* | completing*) ;;
    *) ok=1 ;;
    esac
    return "$ok"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*) die "usage: bash scripts/slurm_cluster.sh start|stop|status (got '${1:-}')" ;;
esac
