#!/usr/bin/env bash
# Stop what .ci/slurm/up.sh started: each daemon by the pid in its pid file, checked against its command name
# (nothing is killed by name). Node and controller first, then slurmdbd, then MariaDB and munge; the daemons
# of one step stop together. Packages, config and state are kept. Safe to run twice.
set -uo pipefail

[ "$(id -u)" = 0 ] || { echo "slurm-down: run as root" >&2; exit 1; }

# stop PIDFILE:NAME...: SIGTERM each running daemon, then wait for all of them (SIGKILL after 30 s)
stop() {
    local entry file name pid waiting=()
    for entry in "$@"; do
        file=${entry%%:*} name=${entry#*:}
        pid=$(cat "$file" 2>/dev/null)
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
            kill "$pid" 2>/dev/null && waiting+=("$pid:$name")
        else
            echo "slurm-down: $name not running"
        fi
        rm -f "$file"
    done
    for entry in "${waiting[@]}"; do
        pid=${entry%%:*} name=${entry#*:}
        for _ in $(seq 300); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
        if [ -e "/proc/$pid" ]; then
            echo "slurm-down: $name (pid $pid) still running after 30 s: SIGKILL" >&2
            kill -9 "$pid" 2>/dev/null
        else
            echo "slurm-down: $name stopped"
        fi
    done
}

stop /run/slurmd.pid:slurmd /run/slurmctld.pid:slurmctld
stop /run/slurmdbd.pid:slurmdbd
stop /run/mysqld/mysqld.pid:mariadbd /run/munge/munged.pid:munged
exit 0
