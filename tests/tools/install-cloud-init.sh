#!/usr/bin/env bash
# Installs Debian bookworm's cloud-init 22.4.2 (and the Python packages its schema validator imports)
# under .tools/cloud-init/ without touching the system: `apt-get download` + `dpkg -x`. When the host's
# apt lists are missing, a private bookworm sources list and state under .tools/cloud-init-apt/ are used.
# Tests run it as a separate process through the wrapper .tools/cloud-init/bin/cloud-init:
#   PYTHONPATH=.tools/cloud-init/root/usr/lib/python3/dist-packages /usr/bin/python3 -m cloudinit.cmd.main ...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$ROOT/.tools/cloud-init"
APTDIR="$ROOT/.tools/cloud-init-apt"
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

APT_OPTS=(-o "APT::Sandbox::User=root")
if ! apt-cache show "cloud-init=$UPSTREAM-1*" >/dev/null 2>&1; then
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
mkdir -p "$DEST/root" "$DEST/bin"
(cd "$WORK" && apt-get "${APT_OPTS[@]}" -qq download "${PKGS[@]}" >/dev/null)
for deb in "$WORK"/*.deb; do
  dpkg -x "$deb" "$DEST/root"
done

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
printf '#cloud-config\nruncmd: [["true"]]\n' > "$WORK/probe.yaml"
"$DEST/bin/cloud-init" schema --config-file "$WORK/probe.yaml" >/dev/null
touch "$STAMP"
echo "cloud-init $UPSTREAM installed in $DEST"
