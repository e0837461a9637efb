#!/usr/bin/env bash
# Installs Debian's OpenSSH server and client under .tools/openssh/ (apt-get download + dpkg -x, nothing
# system-wide) so the ops tests can run real sshd instances (a bastion and a control-plane node) and drive
# them with the same ssh client the operator uses.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/openssh"
DEBS="$ROOT/.tools/openssh-debs"
SSHD="$DEST/usr/sbin/sshd"
SSH="$DEST/usr/bin/ssh"
SSHD_WRAPPER="$DEST/bin/sshd"
# libwrap0 is the one library sshd needs that a minimal Debian image lacks.
PKGS=(openssh-server openssh-client openssh-sftp-server libwrap0)

if [[ -x "$SSHD_WRAPPER" && -x "$SSH" ]] && "$SSHD_WRAPPER" -V 2>&1 | grep -q '^OpenSSH_' && "$SSH" -V 2>&1 | grep -q '^OpenSSH_'; then
  exit 0
fi

mkdir -p "$DEBS" "$DEST"
# The host's own package lists may be missing on a fresh machine; refreshing them does not install anything.
if ! apt-cache show openssh-server >/dev/null 2>&1; then
  apt-get -qq update
fi
rm -f "$DEBS"/*.deb
(cd "$DEBS" && apt-get -qq -o APT::Sandbox::User=root download "${PKGS[@]}")
for deb in "$DEBS"/*.deb; do
  dpkg -x "$deb" "$DEST"
done
LIBDIR="$(dirname "$(find "$DEST" -name 'libwrap.so.0*' | head -n1)")"
mkdir -p "$DEST/bin"
# sshd re-executes itself by its absolute path, so a wrapper that only sets the library path is enough.
REL_LIBDIR="${LIBDIR#"$DEST"/}"
# Paths relative to the wrapper keep the tree valid if the checkout moves.
cat > "$SSHD_WRAPPER" <<WRAP
#!/bin/sh
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/$REL_LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/usr/sbin/sshd" "\$@"
WRAP
chmod 0755 "$SSHD_WRAPPER"
# Captured first: `ldd | grep -q` under pipefail fails on SIGPIPE and would hide a missing library.
missing=$(LD_LIBRARY_PATH="$LIBDIR" ldd "$SSHD" | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "install-openssh: sshd is missing shared libraries:" >&2
  echo "$missing" >&2
  exit 1
fi
"$SSHD_WRAPPER" -V 2>&1 | head -n1 || true
