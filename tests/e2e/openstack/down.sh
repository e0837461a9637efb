#!/usr/bin/env bash
# Stops everything up.sh started, by pidfile, then MariaDB and RabbitMQ via their
# init scripts. Idempotent; keeps packages, databases and credentials so the next
# up.sh is a fast cold start.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root"

# Agents and computes first so nothing reports against a stopped server; the
# rest in parallel (each may take seconds to shut down on a loaded machine).
for name in fake-agent $(for i in "${!FAKE_HOSTS[@]}"; do echo "nova-compute-$((i + 1))"; done); do
    stop_service "$name" &
done
wait
if [[ -d "$RUN_DIR" ]]; then
    for pidfile in "$RUN_DIR"/*.pid; do
        [[ -e "$pidfile" ]] || continue
        stop_service "$(basename "$pidfile" .pid)" &
    done
    wait
fi

if [[ -x /etc/init.d/rabbitmq-server ]] && (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    /etc/init.d/rabbitmq-server stop >&2 || true
    # RabbitMQ's start left Erlang's port mapper running; it is ours to end too.
    epmd -kill >/dev/null 2>&1 || true
    log "stopped rabbitmq"
fi
if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then
    /etc/init.d/mariadb stop >&2 || true
    log "stopped mariadb"
fi

log "down: done"
