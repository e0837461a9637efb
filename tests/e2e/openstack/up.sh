#!/usr/bin/env bash
# Brings up a minimal real OpenStack on this machine (Debian 12, no systemd, root):
# MariaDB, RabbitMQ, Keystone, Glance, Placement, Nova (5 fake compute hosts),
# Neutron (ML2 fake_agent + router plugin), Octavia (no-op drivers).
# Idempotent: a second run only starts what is not running and restarts what
# had its configuration changed. Everything listens on 127.0.0.1.
# Output: $STATE_DIR/clouds.yaml, $STATE_DIR/openrc (0600) and bringup-times.json.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $EUID -eq 0 ]] || die "run as root: this installs system packages and services"

T0=$(date +%s.%N)
STARTED_ANY=0
elapsed() { echo "$(date +%s.%N) - $T0" | bc -l | xargs printf '%.1f'; }

install -d -m 0755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
install -d -m 0700 "$DONE_DIR"
touch "$LOG_DIR/setup.log"; chmod 0600 "$LOG_DIR/setup.log"

# ---------------------------------------------------------------- memory sampler
# Machine-wide "used" MiB every second; the peak minus the baseline is what the
# cloud costs (other work on the shared machine adds noise, so the RSS sum of the
# service users is recorded too).
MEM_SAMPLES="$STATE_DIR/mem-samples.txt"
BASE_USED=$(free -m | awk '/^Mem:/{print $3}')
: >"$MEM_SAMPLES"
(
    # A user that does not exist yet (first run) makes ps fail: keep sampling.
    set +e +o pipefail
    while :; do
        used=$(free -m | awk '/^Mem:/{print $3}')
        rss=$(ps -u keystone,glance,placement,nova,neutron,octavia,mysql,rabbitmq -o rss= 2>/dev/null | awk '{s+=$1} END{print int(s/1024)}')
        echo "$used $rss" >>"$MEM_SAMPLES"
        sleep 1
    done
) &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT

# ---------------------------------------------------------------- packages
log "packages"
APT_SECONDS=$("$HERE/packages.sh")
log "packages done (${APT_SECONDS}s of apt)"

# ---------------------------------------------------------------- secrets
# Generated once, kept root-only; every later run reuses them.
if [[ ! -s "$SECRETS_FILE" ]]; then
    umask 077
    {
        for v in RABBIT_PASS ADMIN_PASS USER_PASS KEYSTONE_PASS GLANCE_PASS PLACEMENT_PASS \
            NOVA_PASS NEUTRON_PASS OCTAVIA_PASS OCTAVIA_CA_PASS; do
            echo "$v=$(openssl rand -hex 16)"
        done
        # Octavia requires exactly 32 characters here (a Fernet key source).
        echo "OCTAVIA_SERVER_PASS=$(openssl rand -hex 16)"
    } >"$SECRETS_FILE"
    umask 022
fi
chmod 0600 "$SECRETS_FILE"
set -a
# shellcheck disable=SC1090
source "$SECRETS_FILE"
OCTAVIA_CERT_DIR=/etc/octavia/certs
set +a

# ---------------------------------------------------------------- helpers
# Merges a rendered snippet (${VAR} from the environment; unknown names are an
# error) into an ini file, keeping the file's owner and mode.
merge_conf() {
    local snippet=$1 target=$2 svc=${3:-}
    SVC="$svc" SVC_PASS="$(eval "echo \${${svc^^}_PASS:-}")" \
        "$SYS_PY" -c 'import os,string,sys; sys.stdout.write(string.Template(open(sys.argv[1]).read()).substitute(os.environ))' \
        "$HERE/conf/$snippet" | crudini --merge "$target"
}

# Runs a command as a service user so the log files it creates stay writable
# by the daemons that run as that user later.
as() { local u=$1; shift; runuser -u "$u" -- "$@"; }

cfgsum() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# start_daemon NAME USER "CONFIG FILES" CMD...
# Starts CMD in the background under a pidfile unless it already runs with the
# same configuration; a configuration change restarts it.
start_daemon() {
    local name=$1 user=$2 cfgs=$3; shift 3
    local sum; sum=$(cfgsum $cfgs) restart=0
    if is_running "$name"; then
        if [[ "$(cat "$RUN_DIR/$name.cfgsum" 2>/dev/null)" == "$sum" ]]; then
            return 0
        fi
        log "$name: configuration changed, restarting"
        restart=1
    fi
    # Also clears a stale pidfile, which start-stop-daemon --start would take for a live daemon.
    stop_service "$name"
    local out="$LOG_DIR/$name.out"
    touch "$out"; chown "$user" "$out"; chmod 0640 "$out"
    "${CLEAN_ENV[@]}" start-stop-daemon --start --background --make-pidfile --pidfile "$RUN_DIR/$name.pid" \
        --chuid "$user" --chdir / --output "$out" --startas "$1" -- "${@:2}"
    record_identity "$name"
    echo "$sum" >"$RUN_DIR/$name.cfgsum"
    [[ $restart == 1 ]] || STARTED_ANY=1
    log "started $name (pid $(cat "$RUN_DIR/$name.pid"))"
}

# start_uwsgi NAME USER PORT WSGI_FILE "CONFIG FILES" [extra uwsgi args]
start_uwsgi() {
    local name=$1 user=$2 port=$3 wsgi=$4 cfgs=$5; shift 5
    # Connection: close — without it clients fail on reused keep-alive
    # connections (RemoteDisconnected) under uWSGI's --http-socket.
    start_daemon "$name" "$user" "$cfgs" /usr/bin/uwsgi_python3 \
        --http-socket "$BIND:$port" --wsgi-file "$wsgi" \
        --master --processes "${UWSGI_PROCESSES:-2}" --threads "${UWSGI_THREADS:-4}" --die-on-term --enable-threads \
        --lazy-apps --need-app --buffer-size 65535 \
        --add-header "Connection: close" --procname-prefix "$name-" "$@"
}

wait_http() {
    local name=$1 port=$2 deadline=$((SECONDS + ${3:-180}))
    until curl -s -o /dev/null --max-time 5 "http://$BIND:$port/"; do
        is_running "$name" || die "$name exited; see $LOG_DIR/$name.out and /var/log/*/"
        ((SECONDS < deadline)) || die "$name not answering on $port"
        sleep 1
    done
}

port_open() { (exec 3<>"/dev/tcp/$BIND/$1") 2>/dev/null; }

# ---------------------------------------------------------------- MariaDB
log "mariadb"
cat >/etc/mysql/mariadb.conf.d/99-k8s-e2e.cnf <<'EOF'
[mysqld]
bind-address = 127.0.0.1
max_connections = 1000
innodb_buffer_pool_size = 256M
innodb_flush_log_at_trx_commit = 2
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
EOF
if ! mysqladmin ping >/dev/null 2>&1; then
    "${CLEAN_ENV[@]}" /etc/init.d/mariadb start >&2
fi
for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
{
    for db in keystone glance placement nova_api nova nova_cell0 neutron octavia; do
        echo "CREATE DATABASE IF NOT EXISTS $db;"
    done
    for u in keystone glance placement nova neutron octavia; do
        pass_var="${u^^}_PASS"
        echo "CREATE USER IF NOT EXISTS '$u'@'localhost' IDENTIFIED BY '${!pass_var}';"
        echo "CREATE USER IF NOT EXISTS '$u'@'127.0.0.1' IDENTIFIED BY '${!pass_var}';"
        echo "ALTER USER '$u'@'localhost' IDENTIFIED BY '${!pass_var}';"
        echo "ALTER USER '$u'@'127.0.0.1' IDENTIFIED BY '${!pass_var}';"
    done
    for pair in keystone:keystone glance:glance placement:placement nova:nova_api nova:nova \
        nova:nova_cell0 neutron:neutron octavia:octavia; do
        u=${pair%%:*} db=${pair#*:}
        echo "GRANT ALL PRIVILEGES ON $db.* TO '$u'@'localhost'; GRANT ALL PRIVILEGES ON $db.* TO '$u'@'127.0.0.1';"
    done
} | mysql

# ---------------------------------------------------------------- RabbitMQ
log "rabbitmq"
cat >/etc/rabbitmq/rabbitmq-env.conf <<'EOF'
NODE_IP_ADDRESS=127.0.0.1
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
if ! port_open 5672; then
    "${CLEAN_ENV[@]}" /etc/init.d/rabbitmq-server start >&2
    for _ in $(seq 90); do port_open 5672 && break; sleep 1; done
fi
rabbit_mark="$DONE_DIR/rabbit-user.$(echo "$RABBIT_PASS" | sha256sum | cut -c1-12)"
if [[ ! -e $rabbit_mark ]]; then
    # rabbitmqctl add_user wants the password as an argument (visible in ps);
    # importing definitions with a salted SHA-256 hash keeps it off command lines.
    defs=$(mktemp); chmod 0600 "$defs"
    "$SYS_PY" - "$defs" <<'PY'
import base64, hashlib, json, os, sys
salt = os.urandom(4)
digest = base64.b64encode(salt + hashlib.sha256(salt + os.environ["RABBIT_PASS"].encode()).digest()).decode()
json.dump({"users": [{"name": "openstack", "password_hash": digest, "tags": "",
                      "hashing_algorithm": "rabbit_password_hashing_sha256"}],
           "permissions": [{"user": "openstack", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]},
          open(sys.argv[1], "w"))
PY
    chown rabbitmq "$defs"
    rabbitmqctl import_definitions "$defs" >/dev/null
    # The well-known guest/guest account has no business here.
    rabbitmqctl delete_user guest >/dev/null 2>&1 || true
    rm -f "$defs"
    touch "$rabbit_mark"
fi

# ---------------------------------------------------------------- configuration
log "configuration"
merge_conf keystone.conf.ini /etc/keystone/keystone.conf
merge_conf glance-api.conf.ini /etc/glance/glance-api.conf
merge_conf authtoken.ini /etc/glance/glance-api.conf glance
merge_conf placement.conf.ini /etc/placement/placement.conf
merge_conf authtoken.ini /etc/placement/placement.conf placement
merge_conf nova.conf.ini /etc/nova/nova.conf
merge_conf authtoken.ini /etc/nova/nova.conf nova
merge_conf neutron.conf.ini /etc/neutron/neutron.conf
merge_conf authtoken.ini /etc/neutron/neutron.conf neutron
merge_conf ml2.ini /etc/neutron/plugins/ml2/ml2_conf.ini
install -d -o glance -g glance /var/lib/glance/images /var/lib/glance/lock
install -d -o nova -g nova /var/lib/nova/tmp
install -d -o neutron -g neutron /var/lib/neutron/lock

for i in "${!FAKE_HOSTS[@]}"; do
    f="/etc/nova/nova-compute-$((i + 1)).conf"
    printf '[DEFAULT]\nhost = %s\n' "${FAKE_HOSTS[$i]}" >"$f"
    chown root:nova "$f"; chmod 0640 "$f"
done

# Octavia's certificate generator signs amphora certs with this CA; the no-op
# amphora driver never uses them, but the worker refuses to start without one.
install -d -o octavia -g octavia -m 0700 "$OCTAVIA_CERT_DIR"
if [[ ! -s "$OCTAVIA_CERT_DIR/ca.pem" ]]; then
    openssl req -x509 -newkey rsa:2048 -days 3650 -subj "/CN=k8s-e2e-octavia-ca" \
        -keyout "$OCTAVIA_CERT_DIR/ca.key" -out "$OCTAVIA_CERT_DIR/ca.pem" \
        -passout "pass:$OCTAVIA_CA_PASS" 2>/dev/null
    chown octavia:octavia "$OCTAVIA_CERT_DIR"/ca.*
    chmod 0600 "$OCTAVIA_CERT_DIR/ca.key"
fi
merge_conf octavia.conf.ini /etc/octavia/octavia.conf
merge_conf authtoken.ini /etc/octavia/octavia.conf octavia

# ---------------------------------------------------------------- schemas
# One marker per step: schema syncs are slow on 2 cores and only needed once per
# package version.
once() {
    local step=$1; shift
    local mark; mark="$DONE_DIR/$step.$(dpkg-query -W -f='${Version}' "$PKG_FOR_STEP" 2>/dev/null | tr -c 'A-Za-z0-9.' _)"
    [[ -e "$mark" ]] && return 0
    log "$step"
    "$@" >>"$LOG_DIR/setup.log" 2>&1 || die "$step failed; see $LOG_DIR/setup.log"
    touch "$mark"
}

PKG_FOR_STEP=keystone
once keystone-db as keystone keystone-manage db_sync
once keystone-fernet as keystone keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
once keystone-credential as keystone keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
# Bootstrap creates admin, roles, region and the identity endpoints, and resets
# the admin password: rerun it whenever the password in the secrets file changes.
# The password travels in the environment, not on a command line ps can show.
bootstrap_mark="$DONE_DIR/keystone-bootstrap.$(echo "$ADMIN_PASS" | sha256sum | cut -c1-12)"
if [[ ! -e "$bootstrap_mark" ]]; then
    log "keystone bootstrap"
    OS_BOOTSTRAP_PASSWORD="$ADMIN_PASS" runuser -u keystone --preserve-environment -- \
        keystone-manage bootstrap \
        --bootstrap-admin-url "http://$BIND:$KEYSTONE_PORT/v3/" \
        --bootstrap-internal-url "http://$BIND:$KEYSTONE_PORT/v3/" \
        --bootstrap-public-url "http://$BIND:$KEYSTONE_PORT/v3/" \
        --bootstrap-region-id "$REGION" >>"$LOG_DIR/setup.log" 2>&1
    touch "$bootstrap_mark"
fi

start_uwsgi keystone keystone "$KEYSTONE_PORT" /usr/bin/keystone-wsgi-public "/etc/keystone/keystone.conf"

PKG_FOR_STEP=glance-api
once glance-db as glance glance-manage db_sync
PKG_FOR_STEP=placement-api
once placement-db as placement placement-manage db sync
PKG_FOR_STEP=nova-api
once nova-api-db as nova nova-manage api_db sync
once nova-cell0 as nova nova-manage cell_v2 map_cell0
once nova-cell1 as nova bash -c 'nova-manage cell_v2 list_cells | grep -q " cell1 " || nova-manage cell_v2 create_cell --name=cell1'
once nova-db as nova nova-manage db sync
PKG_FOR_STEP=neutron-server
once neutron-db as neutron neutron-db-manage --config-file /etc/neutron/neutron.conf \
    --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head
PKG_FOR_STEP=octavia-api
once octavia-db as octavia octavia-db-manage --config-file /etc/octavia/octavia.conf upgrade head

# ---------------------------------------------------------------- identity
wait_http keystone "$KEYSTONE_PORT"
export OS_AUTH_URL="http://$BIND:$KEYSTONE_PORT/v3" OS_IDENTITY_API_VERSION=3 \
    OS_USERNAME=admin OS_PASSWORD="$ADMIN_PASS" OS_PROJECT_NAME=admin \
    OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_REGION_NAME="$REGION" \
    OS_INTERFACE=public
# Each Keystone call costs up to seconds on the loaded 2-core machine: redo the
# identity fixtures only when the secrets or the fixture code changed.
identity_mark="$DONE_DIR/identity.$(cat "$SECRETS_FILE" "$HERE/fixtures.py" | sha256sum | cut -c1-12)"
if [[ ! -e "$identity_mark" ]]; then
    log "identity fixtures"
    "$SYS_PY" "$HERE/fixtures.py" identity
    touch "$identity_mark"
fi

# ---------------------------------------------------------------- services
log "services"
# The services run as their own users, which may not be able to reach a checkout (a clone
# under /root or a 0700 mktemp directory): they load our code from a root-owned copy.
rm -rf "$SERVICE_CODE_DIR"
install -d -m 0755 "$SERVICE_CODE_DIR"
cp -r "$HERE/fake_agent.py" "$HERE/octavia_driver" "$SERVICE_CODE_DIR/"
chmod -R u=rwX,go=rX "$SERVICE_CODE_DIR"
N_CONF=(--config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini)
NEUTRON_CFGS="/etc/neutron/neutron.conf /etc/neutron/plugins/ml2/ml2_conf.ini"
start_uwsgi glance glance "$GLANCE_PORT" /usr/bin/glance-wsgi-api /etc/glance/glance-api.conf
start_uwsgi placement placement "$PLACEMENT_PORT" /usr/bin/placement-api /etc/placement/placement.conf
# nova-api monkey-patches eventlet even under uWSGI: with several threads per process the
# threads' hubs deadlock (seen: parallel server creates accepted, then never answered).
UWSGI_PROCESSES=4 UWSGI_THREADS=1 start_uwsgi nova-api nova "$NOVA_PORT" /usr/bin/nova-api-wsgi /etc/nova/nova.conf
start_daemon neutron-server neutron "$NEUTRON_CFGS" /usr/bin/neutron-server "${N_CONF[@]}" \
    --log-file /var/log/neutron/neutron-server.log
start_daemon nova-conductor nova /etc/nova/nova.conf /usr/bin/nova-conductor \
    --config-file /etc/nova/nova.conf --log-file /var/log/nova/nova-conductor.log
start_daemon nova-scheduler nova /etc/nova/nova.conf /usr/bin/nova-scheduler \
    --config-file /etc/nova/nova.conf --log-file /var/log/nova/nova-scheduler.log
# octavia_driver/ holds the network driver that gives load balancers a real VIP port.
OCTAVIA_DRIVER_DIR="$SERVICE_CODE_DIR/octavia_driver"
OCTAVIA_CFGS="/etc/octavia/octavia.conf $OCTAVIA_DRIVER_DIR/k8s_e2e_octavia_net.py"
start_uwsgi octavia-api octavia "$OCTAVIA_PORT" /usr/bin/octavia-wsgi "$OCTAVIA_CFGS" \
    --pythonpath "$OCTAVIA_DRIVER_DIR"
start_daemon octavia-worker octavia "$OCTAVIA_CFGS" /usr/bin/env PYTHONPATH="$OCTAVIA_DRIVER_DIR" \
    /usr/bin/octavia-worker --config-file /etc/octavia/octavia.conf --log-file /var/log/octavia/octavia-worker.log

wait_http placement "$PLACEMENT_PORT"
for i in "${!FAKE_HOSTS[@]}"; do
    n=$((i + 1))
    start_daemon "nova-compute-$n" nova "/etc/nova/nova.conf /etc/nova/nova-compute-$n.conf" \
        /usr/bin/nova-compute --config-file /etc/nova/nova.conf --config-file "/etc/nova/nova-compute-$n.conf" \
        --log-file "/var/log/nova/nova-compute-$n.log"
done
start_daemon fake-agent neutron "$NEUTRON_CFGS $SERVICE_CODE_DIR/fake_agent.py" "$SYS_PY" "$SERVICE_CODE_DIR/fake_agent.py" \
    "${N_CONF[@]}" --log-file /var/log/neutron/fake-agent.log -- "${FAKE_HOSTS[@]}"

wait_http glance "$GLANCE_PORT"
wait_http nova-api "$NOVA_PORT"
wait_http octavia-api "$OCTAVIA_PORT"
for _ in $(seq 180); do
    port_open "$NEUTRON_PORT" && break
    is_running neutron-server || die "neutron-server exited; see /var/log/neutron/neutron-server.log"
    sleep 1
done

log "resource fixtures (waits for compute hosts and agents)"
"$SYS_PY" "$HERE/fixtures.py" resources
SERVICES_UP=$(elapsed)
log "all services up at ${SERVICES_UP}s"

# ---------------------------------------------------------------- credentials
# Root-only: they hold the admin and user passwords.
umask 077
cat >"$STATE_DIR/clouds.yaml" <<EOF
clouds:
  k8s-e2e:
    auth:
      auth_url: http://$BIND:$KEYSTONE_PORT/v3
      username: k8s-e2e
      password: $USER_PASS
      project_name: k8s-e2e
      user_domain_name: Default
      project_domain_name: Default
    region_name: $REGION
    interface: public
    identity_api_version: 3
  k8s-e2e-admin:
    auth:
      auth_url: http://$BIND:$KEYSTONE_PORT/v3
      username: admin
      password: $ADMIN_PASS
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: $REGION
    interface: public
    identity_api_version: 3
EOF
cat >"$STATE_DIR/openrc" <<EOF
# Non-admin user of project k8s-e2e. Source admin-openrc for the admin.
export OS_AUTH_URL=http://$BIND:$KEYSTONE_PORT/v3
export OS_IDENTITY_API_VERSION=3
export OS_USERNAME=k8s-e2e
export OS_PASSWORD=$USER_PASS
export OS_PROJECT_NAME=k8s-e2e
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=$REGION
export OS_INTERFACE=public
EOF
sed -e "s/^export OS_USERNAME=.*/export OS_USERNAME=admin/" \
    -e "s/^export OS_PASSWORD=.*/export OS_PASSWORD=$ADMIN_PASS/" \
    -e "s/^export OS_PROJECT_NAME=.*/export OS_PROJECT_NAME=admin/" \
    -e "s/^# Non-admin.*/# Admin of the mini OpenStack./" "$STATE_DIR/openrc" >"$STATE_DIR/admin-openrc"
chmod 0600 "$STATE_DIR/clouds.yaml" "$STATE_DIR/openrc" "$STATE_DIR/admin-openrc"
umask 022

# ---------------------------------------------------------------- measurements
TOTAL=$(elapsed)
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
RUN_KIND=rerun
[[ "$APT_SECONDS" != "0" ]] && RUN_KIND=from_scratch
# Nothing to install but services to start (e.g. after down.sh): a cold start.
[[ "$RUN_KIND" == rerun && "$STARTED_ANY" == 1 ]] && RUN_KIND=cold_start
"$SYS_PY" - "$STATE_DIR/bringup-times.json" "$RUN_KIND" "$APT_SECONDS" "$SERVICES_UP" "$TOTAL" \
    "$BASE_USED" "$MEM_SAMPLES" <<'PY'
import json, os, sys, time
path, kind, apt, up, total, base, samples = sys.argv[1:]
rows = [tuple(map(int, l.split())) for l in open(samples) if len(l.split()) == 2]
data = json.load(open(path)) if os.path.exists(path) else {}
data[kind] = {
    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "apt_install_seconds": float(apt),
    "all_services_up_seconds": float(up),
    "services_up_after_packages_seconds": round(float(up) - float(apt), 1),
    "bringup_total_seconds": float(total),
    "machine_used_mib_baseline": int(base),
    "machine_used_mib_peak": max((r[0] for r in rows), default=int(base)),
    "services_rss_mib_peak": max((r[1] for r in rows), default=0),
}
json.dump(data, open(path, "w"), indent=2, sort_keys=True)
print(json.dumps({kind: data[kind]}, indent=2))
PY
chmod 0644 "$STATE_DIR/bringup-times.json"
log "up: done in ${TOTAL}s; credentials: $STATE_DIR/clouds.yaml (clouds k8s-e2e, k8s-e2e-admin), $STATE_DIR/openrc, $STATE_DIR/admin-openrc"
