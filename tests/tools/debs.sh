# Sourced by the install-*.sh scripts: Debian packages unpacked into the project's .tools/,
# never installed system-wide.
#
#   deb_unpack SUITE DEST PACKAGE...   download PACKAGE... (apt version syntax allowed) from the
#                                      Debian SUITE and unpack them into DEST (emptied first)
#   deb_lib_wrapper DEST BINARY NAME   write DEST/bin/NAME that runs DEST/BINARY with the unpacked
#                                      libraries first on the library path; fail if one is missing
#
# The host's apt lists are used when they carry the packages; otherwise (a fresh machine, or
# another suite such as bullseye) a private sources list and state under .tools/apt-SUITE/ are.

DEBS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

_deb_apt_opts() {  # SUITE FIRST_PACKAGE -> sets DEB_APT_OPTS
  local suite="$1" probe="$2" aptdir="$DEBS_ROOT/.tools/apt-$1"
  DEB_APT_OPTS=(-o "APT::Sandbox::User=root")
  if [[ "$suite" == "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" ]] && apt-cache show "$probe" >/dev/null 2>&1; then
    return
  fi
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$aptdir"/{lists/partial,cache/archives/partial,etc/preferences.d}
  touch "$aptdir/status"
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" > "$aptdir/etc/sources.list"
  DEB_APT_OPTS+=(
    -o "Dir::Etc::SourceList=$aptdir/etc/sources.list"
    -o "Dir::Etc::SourceParts=-"
    -o "Dir::Etc::Preferences=$aptdir/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$aptdir/etc/preferences.d"
    -o "Dir::State=$aptdir"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::State::status=$aptdir/status"
    -o "Dir::Cache=$aptdir/cache"
    -o "APT::Architecture=$(dpkg --print-architecture)"
    -o "Debug::NoLocking=1"
  )
  apt-get "${DEB_APT_OPTS[@]}" -qq update
}

deb_unpack() {
  local suite="$1" dest="$2"
  shift 2
  _deb_apt_opts "$suite" "$1"
  local work
  work="$(mktemp -d)"
  rm -rf "$dest"
  mkdir -p "$dest"
  (cd "$work" && apt-get "${DEB_APT_OPTS[@]}" -qq download "$@" >/dev/null)
  local deb
  for deb in "$work"/*.deb; do
    dpkg -x "$deb" "$dest"
  done
  rm -rf "$work"
}

deb_lib_wrapper() {
  local dest="$1" binary="$2" name="$3" multiarch
  multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")"
  mkdir -p "$dest/bin"
  # Paths relative to the wrapper keep the tree valid if the checkout moves; `exec` keeps the pid
  # (tests run some of these as pid 1 of a fresh pid namespace).
  cat > "$dest/bin/$name" <<WRAP
#!/bin/sh
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$here/usr/lib/$multiarch:\$here/lib/$multiarch\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/$binary" "\$@"
WRAP
  chmod 0755 "$dest/bin/$name"
  # Captured first: with pipefail, `ldd | grep -q` reports the SIGPIPE'd ldd, not the match.
  local missing
  missing="$(LD_LIBRARY_PATH="$dest/usr/lib/$multiarch:$dest/lib/$multiarch" ldd "$dest/$binary" | grep 'not found' || true)"
  if [[ -n "$missing" ]]; then
    echo "$name is missing shared libraries:" >&2
    echo "$missing" >&2
    return 1
  fi
}
