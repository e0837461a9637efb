"""Cloud-init user-data for every node role: the node contract files, the Ansible bundle, the bootstrap.

Built from Python structures and dumped with yaml.safe_dump (no string splicing). The output is
byte-stable across synths: the bundle is a tar with sorted members, fixed owners and mtimes, gzip
with mtime 0. Only files of the repo's own `cloudinit/` and `ansible/` trees are read.

Values in `facts`/`secrets` may be CDKTF tokens (`${TfToken[TOKEN.12]}`) that Terraform resolves at
apply time. The text ends up in Terraform JSON, where any other `${` or `%{` would be interpolation,
so `terraform_escape` doubles those and leaves the tokens alone.
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "ansible"
BOOTSTRAP = REPO / "cloudinit" / "bootstrap.py"
FORMATION_SCRIPT = ANSIBLE_DIR / "roles" / "k8s_formation" / "files" / "k8s_formation.py"

ROLES = ("control-plane", "worker", "bastion")
NODE_DIR = "/etc/k8s-node"
NODE_HOME = "/opt/k8s-node"
FACTS_PATH = f"{NODE_DIR}/cluster.json"
SECRETS_PATH = f"{NODE_DIR}/secrets.json"
BUNDLE_PATH = f"{NODE_HOME}/ansible.tar"
BOOTSTRAP_PATH = f"{NODE_HOME}/bootstrap.py"
# Nova accepts 65535 bytes of base64 user-data. The bundle is base64 inside the YAML and Nova's base64
# comes on top (x1.78 over gzip), so the ~40 KB formation engine alone costs ~20 KB: 32 KiB cannot be
# met with the whole engine on board. 48 KiB keeps a quarter of Nova's limit free for growth.
MAX_USER_DATA_B64 = 48 * 1024

# Needed before Ansible exists: the venv module for the bootstrap, nftables for the metadata block.
PACKAGES = ["python3-venv", "nftables", "ca-certificates"]

_BUNDLE_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ansible"}
_BUNDLE_SKIP_SUFFIXES = (".pyc", ".pyo", ".retry", ".swp")

# One pass: a CDKTF token is kept as is, any other `${` / `%{` is doubled for Terraform.
_TERRAFORM_ESCAPE = re.compile(r"(\$\{TfToken\[[^\]]*\]\})|([$%])\{")


def terraform_escape(text: str) -> str:
    return _TERRAFORM_ESCAPE.sub(lambda m: m.group(1) or f"{m.group(2)}{m.group(2)}{{", text)


def _playbook_roles(role: str) -> list[str]:
    plays = yaml.safe_load((ANSIBLE_DIR / f"{role}.yml").read_text(encoding="utf-8")) or []
    names = []
    for play in plays:
        for entry in play.get("roles", []):
            names.append(entry if isinstance(entry, str) else entry["role"])
    return names


def _bundle_files(role: str) -> list[Path]:
    """What `<role>.yml` runs: its playbook, ansible.cfg, its roles (without Galaxy meta), plus the
    formation engine, which the bootstrap calls to record phases on every node.

    Only these travel: the whole tree would not fit Nova's user-data limit.
    """
    wanted = [ANSIBLE_DIR / "ansible.cfg", ANSIBLE_DIR / f"{role}.yml", FORMATION_SCRIPT]
    for name in _playbook_roles(role):
        for path in sorted((ANSIBLE_DIR / "roles" / name).rglob("*")):
            rel = path.relative_to(ANSIBLE_DIR / "roles" / name)
            if rel.parts[0] == "meta" or any(part in _BUNDLE_SKIP_DIRS for part in rel.parts):
                continue
            if path.is_file() and not path.is_symlink() and not path.name.endswith(_BUNDLE_SKIP_SUFFIXES):
                wanted.append(path)
    return sorted(set(wanted))


def ansible_bundle(role: str) -> bytes:
    """The role's part of the ansible/ tree as a plain tar, byte-identical for identical file contents."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in _bundle_files(role):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(ANSIBLE_DIR).as_posix())
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip_b64(data: bytes) -> str:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return base64.b64encode(out.getvalue()).decode("ascii")


def _json_text(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def user_data_document(role: str, facts: dict, secrets: dict[str, str]) -> dict:
    """The cloud-config as a Python structure (before YAML and Terraform escaping)."""
    if role not in ROLES:
        raise ValueError(f"unknown node role {role!r}; expected one of {', '.join(ROLES)}")
    return {
        "package_update": True,
        "packages": list(PACKAGES),
        "write_files": [
            {"path": FACTS_PATH, "owner": "root:root", "permissions": "0644", "content": _json_text(facts)},
            {"path": SECRETS_PATH, "owner": "root:root", "permissions": "0600", "content": _json_text(secrets)},
            {"path": BUNDLE_PATH, "owner": "root:root", "permissions": "0600", "encoding": "gz+b64",
             "content": _gzip_b64(ansible_bundle(role))},
            {"path": BOOTSTRAP_PATH, "owner": "root:root", "permissions": "0700", "encoding": "gz+b64",
             "content": _gzip_b64(BOOTSTRAP.read_bytes())},
        ],
        # The role comes from the metadata service, so every server of a role shares this user-data.
        "runcmd": [["python3", BOOTSTRAP_PATH]],
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the JSON files) as literal blocks, so the synth output stays readable."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render_user_data(role: str, facts: dict, secrets: dict[str, str]) -> str:
    """`#cloud-config` text for `role`, escaped for Terraform JSON (tokens in facts/secrets kept)."""
    body = yaml.dump(user_data_document(role, facts, secrets), Dumper=_Dumper, sort_keys=False, width=1 << 20,
                     default_flow_style=False)
    return terraform_escape("#cloud-config\n" + body)


def terraform_unescape(text: str) -> str:
    """What Terraform hands to Nova for a token-free text: `$${` -> `${`, `%%{` -> `%{`."""
    return text.replace("$${", "${").replace("%%{", "%{")


def user_data_size_b64(rendered: str) -> int:
    """Bytes Nova receives (base64) for a rendered user-data, tokens counted at their placeholder length."""
    return len(base64.b64encode(terraform_unescape(rendered).encode("utf-8")))
