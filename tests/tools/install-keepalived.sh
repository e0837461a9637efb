#!/usr/bin/env bash
# Installs Debian bookworm's keepalived (2.2.7) under .tools/keepalived/ (apt-get download + dpkg -x, nothing
# system-wide) so the API VIP tests can run `keepalived --config-test` on every rendered configuration and
# real VRRP between network namespaces. The wrapper .tools/keepalived/bin/keepalived adds the unpacked
# libraries (netlink, nftnl, net-snmp) that a minimal Debian host lacks.
# When the host's apt lists are missing, a private bookworm sources list and state under
# .tools/keepalived-apt/ are used.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/keepalived"
APTDIR="$ROOT/.tools/keepalived-apt"
VERSION="1:2.2.7-1"
WRAPPER="$DEST/bin/keepalived"
STAMP="$DEST/.installed-2.2.7"
PKGS=("keepalived=$VERSION*" libwrap0 libmnl0 libnftnl11 libnl-3-200 libnl-genl-3-200 libsnmp40 libsnmp-base libsensors5 libpci3)

if [[ -f "$STAMP" && -x "$WRAPPER" && "$("$WRAPPER" --version 2>&1)" == *"Keepalived v2.2.7"* ]]; then
  exit 0
fi

APT_OPTS=(-o "APT::Sandbox::User=root")
if ! apt-cache show "keepalived=$VERSION*" >/dev/null 2>&1; then
  mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,etc/preferences.d}
  touch "$APTDIR/status"
  KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian bookworm main" > "$APTDIR/etc/sources.list"
  APT_OPTS+=(
    -o "Dir::Etc::SourceList=$APTDIR/etc/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::Etc::Preferences=$APTDIR/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$APTDIR/etc/preferences.d"
    -o "Dir::State=$APTDIR"
    -o "Dir::State::Lists=$APTDIR/lists"
    -o "Dir::State::status=$APTDIR/status"
    -o "Dir::Cache=$APTDIR/cache"
    -o "APT::Architecture=$(dpkg --print-architecture)"
    -o "Debug::NoLocking=1"
  )
  apt-get "${APT_OPTS[@]}" -qq update
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$DEST"
mkdir -p "$DEST/bin"
(cd "$WORK" && apt-get "${APT_OPTS[@]}" -qq download "${PKGS[@]}" >/dev/null)
for deb in "$WORK"/*.deb; do
  dpkg -x "$deb" "$DEST"
done

MULTIARCH="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")"
# Paths relative to the wrapper keep the tree valid if the checkout moves. `exec` keeps keepalived's pid
# (the tests make it pid 1 of a fresh pid namespace).
cat > "$WRAPPER" <<WRAP
#!/bin/sh
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/usr/lib/$MULTIARCH:\$here/lib/$MULTIARCH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/usr/sbin/keepalived" "\$@"
WRAP
chmod 0755 "$WRAPPER"
# Fail the install, not a later test, if a library is still missing.
# Captured first: with pipefail, `ldd | grep -q` reports the SIGPIPE'd ldd, not the match.
MISSING="$(LD_LIBRARY_PATH="$DEST/usr/lib/$MULTIARCH:$DEST/lib/$MULTIARCH" ldd "$DEST/usr/sbin/keepalived" | grep 'not found' || true)"
if [[ -n "$MISSING" ]]; then
  echo "install-keepalived: keepalived is missing shared libraries:" >&2
  echo "$MISSING" >&2
  exit 1
fi
"$WRAPPER" --version 2>&1 | sed -n 1p
touch "$STAMP"
