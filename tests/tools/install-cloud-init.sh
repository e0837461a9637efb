#!/usr/bin/env bash
# Installs Debian bookworm's cloud-init 22.4.2 (and the Python packages its schema validator imports)
# under .tools/cloud-init/ without touching the system (tests/tools/debs.sh).
# Tests run it as a separate process through the wrapper .tools/cloud-init/bin/cloud-init:
#   PYTHONPATH=.tools/cloud-init/root/usr/lib/python3/dist-packages /usr/bin/python3 -m cloudinit.cmd.main ...
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

DEST="$DEBS_ROOT/.tools/cloud-init"
UPSTREAM="22.4.2"
STAMP="$DEST/.installed-$UPSTREAM"

if [[ -f "$STAMP" && -x "$DEST/bin/cloud-init" ]]; then
  exit 0
fi

# The .deb C extensions are built for bookworm's python3.11; the validator must run with it.
PY=/usr/bin/python3
if [[ ! -x "$PY" ]]; then
  echo "install-cloud-init: $PY is required (Debian bookworm python3)" >&2
  exit 1
fi

# cloud-init and every python3-* package it needs, transitively (python3 itself is the host's).
PKGS=(
  "cloud-init=$UPSTREAM-1*"
  python3-attr python3-blinker python3-certifi python3-cffi-backend python3-chardet
  python3-charset-normalizer python3-configobj python3-cryptography python3-idna
  python3-importlib-metadata python3-jinja2 python3-json-pointer python3-jsonpatch python3-jsonschema
  python3-jwt python3-markupsafe python3-more-itertools python3-netifaces python3-oauthlib
  python3-pkg-resources python3-pyrsistent python3-requests python3-serial python3-six
  python3-typing-extensions python3-urllib3 python3-yaml python3-zipp
)

deb_unpack bookworm "$DEST/root" "${PKGS[@]}"
mkdir -p "$DEST/bin"
cat > "$DEST/bin/cloud-init" <<WRAP
#!/usr/bin/env bash
# Runs the unpacked cloud-init with Debian's python3 and the unpacked packages first on the path.
set -euo pipefail
export PYTHONPATH="$DEST/root/usr/lib/python3/dist-packages"
export PYTHONNOUSERSITE=1
exec $PY -m cloudinit.cmd.main "\$@"
WRAP
chmod 0755 "$DEST/bin/cloud-init"

# Fail the install, not a later test, if the validator cannot start.
probe="$(mktemp)"
trap 'rm -f "$probe"' EXIT
printf '#cloud-config\nruncmd: [["true"]]\n' > "$probe"
"$DEST/bin/cloud-init" schema --config-file "$probe" >/dev/null
touch "$STAMP"
echo "cloud-init $UPSTREAM installed in $DEST"
