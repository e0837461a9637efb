#!/usr/bin/env bash
# checkov in its own venv: its pins clash with ansible-lint's, so it stays out of .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.tools/checkov
stamp="$dest/.installed-$(sha256sum requirements-checkov.txt | cut -c1-16)"
[ -f "$stamp" ] && exit 0
rm -rf "$dest"
python3 -m venv "$dest"
"$dest/bin/pip" install -q --disable-pip-version-check -r requirements-checkov.txt
touch "$stamp"
