#!/usr/bin/env bash
# Debian bookworm's nftables (1.0.6) under .tools/nftables/, so the metadata-block test can check
# and load the rendered ruleset with the real `nft` inside a throw-away network namespace (never
# the host's rules). The wrapper bin/nft adds the unpacked libraries a minimal host lacks.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

DEST="$DEBS_ROOT/.tools/nftables"
STAMP="$DEST/.installed-1.0.6"
if [[ -f "$STAMP" && "$("$DEST/bin/nft" --version 2>&1)" == *"nftables v1.0.6"* ]]; then
  exit 0
fi
deb_unpack bookworm "$DEST" "nftables=1.0.6-2*" "libnftables1=1.0.6-2*" libnftnl11 libmnl0 libxtables12 \
  libjansson4 libedit2 libgmp10
deb_lib_wrapper "$DEST" usr/sbin/nft nft
"$DEST/bin/nft" --version
touch "$STAMP"
