#!/usr/bin/env bash
# Debian bookworm's keepalived (2.2.7) under .tools/keepalived/, so the API VIP tests can run
# `keepalived --config-test` on every rendered configuration and real VRRP between network
# namespaces. The wrapper bin/keepalived adds the unpacked libraries a minimal host lacks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

DEST="$DEBS_ROOT/.tools/keepalived"
STAMP="$DEST/.installed-2.2.7"
if [[ -f "$STAMP" && "$("$DEST/bin/keepalived" --version 2>&1)" == *"Keepalived v2.2.7"* ]]; then
  exit 0
fi
deb_unpack bookworm "$DEST" "keepalived=1:2.2.7-1*" libwrap0 libmnl0 libnftnl11 libnl-3-200 libnl-genl-3-200 \
  libsnmp40 libsnmp-base libsensors5 libpci3
deb_lib_wrapper "$DEST" usr/sbin/keepalived keepalived
"$DEST/bin/keepalived" --version 2>&1 | sed -n 1p
touch "$STAMP"
