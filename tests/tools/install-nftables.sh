#!/usr/bin/env bash
# Installs Debian bookworm's nftables (1.0.6) under .tools/nftables/ (apt-get download + dpkg -x, nothing
# system-wide) so the metadata-block test can check and load the rendered ruleset with the real `nft`, inside
# a throw-away network namespace (never the host's rules). The wrapper .tools/nftables/bin/nft adds the
# unpacked libraries (libnftables, libnftnl, libmnl, ...) that a minimal Debian host lacks.
# When the host's apt lists are missing, a private bookworm sources list and state under
# .tools/nftables-apt/ are used.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/nftables"
APTDIR="$ROOT/.tools/nftables-apt"
VERSION="1.0.6-2"
WRAPPER="$DEST/bin/nft"
STAMP="$DEST/.installed-1.0.6"
PKGS=("nftables=$VERSION*" "libnftables1=$VERSION*" libnftnl11 libmnl0 libxtables12 libjansson4 libedit2 libgmp10)

if [[ -f "$STAMP" && -x "$WRAPPER" && "$("$WRAPPER" --version 2>&1)" == *"nftables v1.0.6"* ]]; then
  exit 0
fi

APT_OPTS=(-o "APT::Sandbox::User=root")
if ! apt-cache show "nftables=$VERSION*" >/dev/null 2>&1; then
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
# Paths relative to the wrapper keep the tree valid if the checkout moves.
cat > "$WRAPPER" <<WRAP
#!/bin/sh
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/usr/lib/$MULTIARCH:\$here/lib/$MULTIARCH\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/usr/sbin/nft" "\$@"
WRAP
chmod 0755 "$WRAPPER"
# Captured first: with pipefail, `ldd | grep -q` reports the SIGPIPE'd ldd, not the match.
MISSING="$(LD_LIBRARY_PATH="$DEST/usr/lib/$MULTIARCH:$DEST/lib/$MULTIARCH" ldd "$DEST/usr/sbin/nft" | grep 'not found' || true)"
if [[ -n "$MISSING" ]]; then
  echo "install-nftables: nft is missing shared libraries:" >&2
  echo "$MISSING" >&2
  exit 1
fi
"$WRAPPER" --version
touch "$STAMP"
