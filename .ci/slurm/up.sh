#!/usr/bin/env bash
# Bring up a real single-node SLURM (munge, MariaDB + slurmdbd, slurmctld, slurmd) on this machine, for
# tests/test_slurm.py and CI. Debian 12, root, no systemd: the daemons are started directly.
#
# Idempotent: installs only missing packages, rewrites the config, starts what is not running, restarts
# only what a config change concerns, then waits until the node takes jobs. Exits non-zero with a message
# on the first failure (and the tail of the daemon's log when one does not come up).
#
#   HIAST_SLURM_GPUS=2        fake GPUs (gres/gpu on /dev/fakegpuN, which are /dev/null's 1:3): jobs get
#                             CUDA_VISIBLE_DEVICES, nothing runs on a GPU
#   HIAST_SLURM_ACCOUNTING=1  slurmdbd + MariaDB, so that `sacct` works. submitit needs it: without sacct
#                             it cannot tell that a job died without a result and waits forever
#   HIAST_SLURM_ACCOUNT=hiast_ci  with accounting: a SLURM account root may submit to (sbatch --account)
#   HIAST_SLURM_TIMEOUT=120   seconds allowed to each wait
#
# Stop with .ci/slurm/down.sh. Packages, config and state stay, so a second bring-up takes about a second.
set -Eeuo pipefail

GPUS=${HIAST_SLURM_GPUS:-2}
ACCOUNTING=${HIAST_SLURM_ACCOUNTING:-1}
ACCOUNT=${HIAST_SLURM_ACCOUNT-hiast_ci}
TIMEOUT=${HIAST_SLURM_TIMEOUT:-120}
NODE=$(hostname -s)
LOGS=/var/log/slurm
START=$SECONDS

say() { echo "slurm-up [$((SECONDS - START))s]: $*"; }
fail() { echo "slurm-up: FAILED: $*" >&2; exit 1; }
trap 'fail "line $LINENO: \"$BASH_COMMAND\" exited with status $?"' ERR

[ "$(uname -s)" = Linux ] || fail "Linux only"
[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and starts daemons)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null || fail "needs apt-get and dpkg (Debian/Ubuntu)"

# running PIDFILE NAME: the pid in PIDFILE is alive and its command is NAME (pid files can be stale)
running() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
# stop PIDFILE NAME: SIGTERM the recorded process and wait for it to exit
stop() {
    running "$1" "$2" || return 0
    local pid; pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -e "/proc/$pid" ] || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}
# await WHAT LOG COMMAND...: poll COMMAND until it succeeds, or fail showing LOG's tail
await() {
    local what=$1 log=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -f "$log" ] && tail -n 20 "$log" >&2
            fail "$what not ready after ${TIMEOUT}s (log: $log)"
        fi
        sleep 0.3
    done
    say "$what ready"
}
# install_file PATH MODE: write stdin to PATH if it differs; status 0 if it changed
install_file() {
    local new; new=$(cat)
    [ -f "$1" ] && [ "$(cat "$1")" = "$new" ] && return 1
    printf '%s\n' "$new" > "$1.new" && chmod "$2" "$1.new" && mv "$1.new" "$1"
}

# --- packages ---------------------------------------------------------------------------------------
packages=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = 1 ] && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    # no init system: keep the packages' scripts from starting services, unless a policy is already there
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || fail "apt-get update"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || fail "apt-get install ${missing[*]}"
    if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# --- configuration ----------------------------------------------------------------------------------
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
gres="" gres_types="" accounting="AccountingStorageType=accounting_storage/none"
if [ "$GPUS" -gt 0 ]; then
    for i in $(seq 0 $((GPUS - 1))); do [ -e "/dev/fakegpu$i" ] || mknod "/dev/fakegpu$i" c 1 3; done
    gres=" Gres=gpu:$GPUS" gres_types="GresTypes=gpu"
fi
if [ "$ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
    if [ "$GPUS" -gt 0 ]; then accounting+=$'\nAccountingStorageTRES=gres/gpu'; fi
fi
changed=0
install_file /etc/slurm/slurm.conf 644 <<EOF && changed=1
# written by .ci/slurm/up.sh: one node, no cgroups, accounting=$ACCOUNTING
ClusterName=hiast
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s): preemption tests want it short
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
$gres_types
SchedulerType=sched/backfill
# look at pending (e.g. requeued) jobs every 2 s rather than every 60 / 30 s
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
InactiveLimit=0
MinJobAge=300
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb$gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
if [ "$GPUS" -gt 0 ]; then
    install_file /etc/slurm/gres.conf 644 <<< "NodeName=$NODE Name=gpu File=/dev/fakegpu[0-$((GPUS - 1))]" && changed=1
else
    install_file /etc/slurm/gres.conf 644 <<< "# no generic resources" && changed=1
fi
dbd_changed=0
if [ "$ACCOUNTING" = 1 ]; then
    install_file /etc/slurm/slurmdbd.conf 600 <<EOF && dbd_changed=1
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
fi
say "config in /etc/slurm (node $NODE, $(nproc) CPUs, ${mem_mb} MB, $GPUS fake GPUs, changed=$changed)"

# --- munge ------------------------------------------------------------------------------------------
if ! running /run/munge/munged.pid munged; then
    [ -s /etc/munge/munge.key ] || { mungekey --create && chown munge:munge /etc/munge/munge.key; }
    install -d -o munge -g munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start (see /var/log/munge/munged.log)"
fi
await munge /var/log/munge/munged.log bash -c 'munge -n | unmunge'

# --- accounting -------------------------------------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
    if ! running /run/mysqld/mysqld.pid mariadbd; then
        install -d -o mysql -g mysql /run/mysqld
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
        setsid /usr/sbin/mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/mysqld.pid \
            </dev/null >"$LOGS/mariadb.log" 2>&1 &
    fi
    await mariadb "$LOGS/mariadb.log" mysqladmin ping
    mysql <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
    if [ "$dbd_changed" = 1 ]; then stop /run/slurmdbd.pid slurmdbd; fi
    running /run/slurmdbd.pid slurmdbd || slurmdbd
    await slurmdbd "$LOGS/slurmdbd.log" sacctmgr -n list cluster
fi

# --- controller and node ----------------------------------------------------------------------------
if [ "$changed" = 1 ]; then
    stop /run/slurmd.pid slurmd
    stop /run/slurmctld.pid slurmctld
fi
running /run/slurmctld.pid slurmctld || slurmctld
await slurmctld "$LOGS/slurmctld.log" scontrol ping
slurmd_started=0
if ! running /run/slurmd.pid slurmd; then
    slurmd_started=$(date +%s)
    slurmd
fi

# The node takes jobs once it is idle (or busy). After a (re)start, slurmctld first shows the state it saved
# before, so also require that this slurmd has registered (its SlurmdStartTime is not older than its start).
node_ready() {
    local info state started
    info=$(scontrol -o show node "$NODE") || return 1
    state=$(sed -n 's/.* State=\([A-Z_+]*\).*/\1/p' <<< "$info")
    if [ "$slurmd_started" != 0 ]; then
        started=$(sed -n 's/.* SlurmdStartTime=\([^ ]*\).*/\1/p' <<< "$info")
        [ "$(date -d "$started" +%s 2>/dev/null || echo 0)" -ge $((slurmd_started - 2)) ] || return 1
    fi
    case $state in
        IDLE*|MIXED*|ALLOCATED*) return 0 ;;
        DOWN*|DRAIN*|FAIL*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1; return 1 ;;
        *) return 1 ;;
    esac
}
await "node $NODE" "$LOGS/slurmd.log" node_ready

# an account for root, once slurmctld has registered the cluster in slurmdbd
has_account() { sacctmgr -n -P list associations cluster=hiast account="$ACCOUNT" user=root format=user | grep -qx root; }
if [ "$ACCOUNTING" = 1 ] && [ -n "$ACCOUNT" ] && ! has_account; then
    await "cluster registration" "$LOGS/slurmdbd.log" bash -c 'sacctmgr -n -P list cluster format=cluster | grep -qx hiast'
    sacctmgr -i add account "$ACCOUNT" cluster=hiast Description=ci Organization=ci >/dev/null || true
    sacctmgr -i add user root account="$ACCOUNT" cluster=hiast >/dev/null || true
    await "account $ACCOUNT" "$LOGS/slurmdbd.log" has_account
fi
trap - ERR
say "up: $(sinfo -h -o '%P %D nodes %c CPUs %G %T')"
