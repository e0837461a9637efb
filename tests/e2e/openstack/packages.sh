#!/usr/bin/env bash
# Installs the Debian packages of the mini OpenStack without letting their
# maintainer scripts start daemons or configure databases/endpoints.
# Prints the seconds spent (0 work => fast no-op).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
    crudini uwsgi-core uwsgi-plugin-python3 python3-pymysql
    mariadb-server rabbitmq-server
    keystone glance-api placement-api
    nova-api nova-conductor nova-scheduler nova-compute
    # Satisfies nova-compute-hypervisor without libvirt/qemu; the fake driver does the work.
    nova-compute-ironic
    neutron-server
    octavia-api octavia-worker
    python3-openstackclient python3-octaviaclient python3-openstacksdk
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo 0
    exit 0
fi

start=$(date +%s.%N)
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends)

[[ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]] \
    || apt-get -q -o DPkg::Lock::Timeout=600 update >&2
"${APT[@]}" install --download-only "${missing[@]}" >&2

# The OpenStack packages ask (via debconf) whether to set up databases, RabbitMQ,
# keystone_authtoken, endpoints and an admin tenant themselves. We do all of that
# in up.sh, so every such question is answered "false" before dpkg sees it.
preseed=$(mktemp)
for deb in /var/cache/apt/archives/*.deb; do
    tpl=$(dpkg-deb --ctrl-tarfile "$deb" 2>/dev/null | tar -xOf - ./templates 2>/dev/null || true)
    [[ -n "$tpl" ]] || continue
    pkg=$(dpkg-deb -f "$deb" Package)
    grep -oE '^Template: [^ ]+/(configure_db|configure_rabbit|configure_ksat|configure_api-endpoint|register-endpoint|create-admin-tenant)$' <<<"$tpl" \
        | awk -v p="$pkg" '{print p" "$2" boolean false"}' >>"$preseed" || true
done
sort -u "$preseed" | debconf-set-selections
rm -f "$preseed"

# policy-rc.d exit 101 = "not allowed": invoke-rc.d in postinst scripts starts nothing.
policy=/usr/sbin/policy-rc.d
backup=""
if [[ -e $policy ]]; then backup=$(mktemp); cp -p "$policy" "$backup"; fi
restore() { if [[ -n "$backup" ]]; then mv "$backup" "$policy"; else rm -f "$policy"; fi; }
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 0755 "$policy"
"${APT[@]}" install "${missing[@]}" >&2
end=$(date +%s.%N)
echo "$end - $start" | bc -l | xargs printf '%.1f\n'
