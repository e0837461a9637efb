# Shared settings and helpers for up.sh / down.sh (sourced, not run).
# shellcheck shell=bash

STATE_DIR="${K8S_E2E_OS_STATE:-/var/lib/k8s-e2e-openstack}"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
DONE_DIR="$STATE_DIR/done"
SECRETS_FILE="$STATE_DIR/secrets.env"
SERVICE_CODE_DIR="$STATE_DIR/code"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Debian's own interpreter: the OpenStack libraries live in its dist-packages,
# while `python3` on PATH may be a pyenv or venv interpreter without them.
SYS_PY=/usr/bin/python3

BIND=127.0.0.1
KEYSTONE_PORT=5000
GLANCE_PORT=9292
PLACEMENT_PORT=8778
NOVA_PORT=8774
NEUTRON_PORT=9696
OCTAVIA_PORT=9876
REGION=RegionOne
# Five, not three: Terraform creates a hard anti-affinity group's servers in parallel, and
# nova's late affinity check then reschedules them; with only as many hosts as servers the
# retries run out (GroupAffinityViolation -> MaxRetriesExceeded) in a fair share of runs.
FAKE_HOSTS=(compute1 compute2 compute3 compute4 compute5)

# Daemons start from a clean environment: up.sh exports every password (for the
# fixtures), and /proc/<pid>/environ of a service would otherwise carry them all.
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# What tells a process we started from a later one that got its pid: the boot and
# the start time (field 22 of /proc/PID/stat, clock ticks since boot). A pidfile
# alone is not enough: when a session ends its daemons are killed but the state
# directory stays, and a run on the same machine later found an unrelated process
# under keystone's old pid, took keystone as running and waited for it in vain.
proc_identity() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # Field 2 (the command name) may hold spaces; the fields after its ')' do not.
    read -ra fields <<<"${stat##*) }"
    echo "$(cat /proc/sys/kernel/random/boot_id) ${fields[19]}"
}

# Records, right after a start, which process the pidfile of NAME means.
record_identity() {
    proc_identity "$(cat "$RUN_DIR/$1.pid")" >"$RUN_DIR/$1.identity"
}

# The pidfile of NAME names a live process we started.
is_running() {
    local pidfile="$RUN_DIR/$1.pid" idfile="$RUN_DIR/$1.identity" id
    [[ -s "$pidfile" && -s "$idfile" ]] || return 1
    id=$(proc_identity "$(cat "$pidfile")") && [[ "$id" == "$(cat "$idfile")" ]]
}

# Signals only a process is_running vouches for; a stale pidfile is just removed.
stop_service() {
    local name=$1 pidfile="$RUN_DIR/$1.pid"
    if is_running "$name"; then
        # --retry: services that ignore TERM for 20 s get KILL, so down.sh always finishes.
        start-stop-daemon --stop --quiet --pidfile "$pidfile" --remove-pidfile \
            --retry TERM/20/KILL/5 >/dev/null 2>&1 || true
        log "stopped $name"
    fi
    rm -f "$pidfile" "$RUN_DIR/$name.cfgsum" "$RUN_DIR/$name.identity"
}
