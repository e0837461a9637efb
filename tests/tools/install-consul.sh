#!/usr/bin/env bash
# Installs Consul 1.8.7 (Debian bullseye's `consul` package, the last MPL release in Debian) under
# .tools/consul/ without touching the system apt configuration: a private sources list, state and cache
# under .tools/consul-apt/ keep the host's apt untouched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/consul"
APTDIR="$ROOT/.tools/consul-apt"
BIN="$DEST/usr/bin/consul"
WANT_VERSION="1.8.7"

if [[ -x "$BIN" ]] && "$BIN" version 2>/dev/null | head -n1 | grep -q "v$WANT_VERSION"; then
  exit 0
fi

mkdir -p "$APTDIR"/{lists/partial,cache/archives/partial,etc/preferences.d,debs} "$DEST"
touch "$APTDIR/status"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$KEYRING" ]] || KEYRING=/usr/share/keyrings/debian-archive-bullseye-stable.gpg
cat > "$APTDIR/etc/sources.list" <<SRC
deb [signed-by=$KEYRING] http://deb.debian.org/debian bullseye main
SRC

APT_OPTS=(
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
  -o "APT::Sandbox::User=root"
)

apt-get "${APT_OPTS[@]}" -qq update
(cd "$APTDIR/debs" && apt-get "${APT_OPTS[@]}" -qq download "consul=$WANT_VERSION*")
DEB="$(ls -1 "$APTDIR"/debs/consul_"$WANT_VERSION"*.deb | head -n1)"
dpkg -x "$DEB" "$DEST"
"$BIN" version | head -n1
