#!/usr/bin/env bash
# Consul 1.8.7 (Debian bullseye's `consul` package, the last MPL release in Debian) under
# .tools/consul/, from a private bullseye package list: the host's apt setup is left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

DEST="$DEBS_ROOT/.tools/consul"
BIN="$DEST/usr/bin/consul"
# Output captured before matching: under pipefail a reader that stops early (head, grep -q)
# turns the writer's SIGPIPE into a failure.
if [[ -x "$BIN" && "$("$BIN" version 2>/dev/null)" == *"Consul v1.8.7"* ]]; then
  exit 0
fi
deb_unpack bullseye "$DEST" "consul=1.8.7*"
"$BIN" version | sed -n 1p
