#!/usr/bin/env bash
# Debian bookworm's OpenSSH server and client under .tools/openssh/, so the ops tests can run real
# sshd instances (a bastion and a control-plane node) and drive them with the same ssh client the
# operator uses. sshd re-executes itself by its absolute path, so bin/sshd only sets the library path.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

DEST="$DEBS_ROOT/.tools/openssh"
SSH="$DEST/usr/bin/ssh"
if [[ -x "$DEST/bin/sshd" && -x "$SSH" && "$("$DEST/bin/sshd" -V 2>&1)" == OpenSSH_* \
      && "$("$SSH" -V 2>&1)" == OpenSSH_* ]]; then
  exit 0
fi
# libwrap0 is the one library sshd needs that a minimal Debian image lacks.
deb_unpack bookworm "$DEST" openssh-server openssh-client openssh-sftp-server libwrap0
deb_lib_wrapper "$DEST" usr/sbin/sshd sshd
"$DEST/bin/sshd" -V 2>&1 | sed -n 1p
