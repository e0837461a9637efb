"""Cloud-init user-data for every node role: the node contract files, the node bundle, the bootstrap.

The cloud-config is built from Python structures and dumped with PyYAML (no string splicing); it
is byte-stable across synths: the bundle is a tar with sorted members, fixed owners and mtimes,
gzip with mtime 0. Only files of the repo's own `cloudinit/` and `ansible/` trees are read.

Size: Nova takes at most 65535 bytes of base64 user-data and we keep to half of that. The node
bundle (the role's Ansible files, the formation engine and the bootstrap) travels as one gz+b64
tar, with comments and docstrings stripped from the Python and YAML in it; and the whole cloud-config
reaches Nova gzip-compressed by Terraform's `base64gzip` (cloud-init unpacks gzip user-data, and
the provider passes base64 through as is), so the bundle is not base64-inflated a second time.

Values in `facts`/`secrets` may be CDKTF tokens (`${TfToken[TOKEN.12]}`) known only at apply time:
`render_user_data` passes them to Terraform as expressions and escapes every literal part, so
nothing else in the text is ever read as Terraform syntax.
"""
from __future__ import annotations

import ast
import base64
import functools
import gzip
import io
import json
import re
import tarfile
import tokenize
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
BOOTSTRAP_MEMBER = "bootstrap.py"
# Half of Nova's 65535-byte limit on base64 user-data.
MAX_USER_DATA_B64 = 32 * 1024

# Needed before Ansible exists: the venv module for the bootstrap, nftables for the metadata block.
PACKAGES = ["python3-venv", "nftables", "ca-certificates"]

_BUNDLE_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ansible"}
_BUNDLE_SKIP_SUFFIXES = (".pyc", ".pyo", ".retry", ".swp")
# libyaml's parser and emitter where PyYAML has them: the pure-Python ones are half of synth time.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PlainDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_TOKEN = re.compile(r"(\$\{TfToken\[[^\]]*\]\})")


def _playbook_roles(role: str) -> list[str]:
    plays = yaml.load((ANSIBLE_DIR / f"{role}.yml").read_text(encoding="utf-8"), Loader=_Loader) or []
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


def strip_python(source: str) -> str:
    """The same program without comments and function/class docstrings (a tenth of the bytes).

    Works on positions from `ast` and `tokenize` and cuts the original text, so the code that
    remains is exactly the code that was reviewed and tested; a shebang line stays.
    """
    lines = source.splitlines(keepends=True)
    cut: dict[int, int] = {}  # line index -> column from which the line is dropped
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and not (tok.start[0] == 1 and tok.string.startswith("#!")):
            cut[tok.start[0] - 1] = tok.start[1]
    for node in ast.walk(ast.parse(source)):
        # The module docstring stays: scripts hand `__doc__` to argparse.
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                # A docstring statement owns its lines; `...` keeps a body that had nothing else.
                only = len(node.body) == 1
                lines[first.lineno - 1] = " " * first.col_offset + "...\n" if only else ""
                for index in range(first.lineno, first.end_lineno):
                    lines[index] = ""
    out = []
    for index, line in enumerate(lines):
        if index in cut and line:
            kept = line[:cut[index]].rstrip()
            line = kept + "\n" if kept else ""
        out.append(line)
    return "".join(out)


def strip_yaml(source: str) -> str:
    """A YAML file re-dumped without its comments, or unchanged where the data would not
    survive the round trip exactly (custom tags, anything PyYAML reads differently)."""
    try:
        data = yaml.load(source, Loader=_Loader)
        dumped = yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, width=1 << 20, allow_unicode=True)
        if yaml.load(dumped, Loader=_Loader) == data:
            return dumped
    except yaml.YAMLError:
        pass
    return source


@functools.lru_cache(maxsize=None)
def _bundle_member(path: Path) -> bytes:
    """Comments stay in the repository; the node gets only the code (templates untouched).
    Cached: roles share files, and synth renders every role of every stack."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return strip_python(text).encode("utf-8")
    if path.suffix in (".yml", ".yaml") and "templates" not in path.parts:
        return strip_yaml(text).encode("utf-8")
    return text.encode("utf-8")


@functools.lru_cache(maxsize=None)
def ansible_bundle(role: str) -> bytes:
    """The role's part of the ansible/ tree plus the bootstrap as a plain tar, byte-identical for
    identical file contents (cached: synth renders every role once per stack)."""
    members = [(path.relative_to(ANSIBLE_DIR).as_posix(), path) for path in _bundle_files(role)]
    members.append((BOOTSTRAP_MEMBER, BOOTSTRAP))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, path in sorted(members):
            data = _bundle_member(path)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def _bundle_content(role: str) -> str:
    return base64.b64encode(_gzip(ansible_bundle(role))).decode("ascii")


def _json_text(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def user_data_document(role: str, facts: dict, secrets: dict[str, str]) -> dict:
    """The cloud-config as a Python structure."""
    if role not in ROLES:
        raise ValueError(f"unknown node role {role!r}; expected one of {', '.join(ROLES)}")
    return {
        "package_update": True,
        "packages": list(PACKAGES),
        "write_files": [
            {"path": FACTS_PATH, "owner": "root:root", "permissions": "0644", "content": _json_text(facts)},
            {"path": SECRETS_PATH, "owner": "root:root", "permissions": "0600", "content": _json_text(secrets)},
            {"path": BUNDLE_PATH, "owner": "root:root", "permissions": "0600", "encoding": "gz+b64",
             "content": _bundle_content(role)},
        ],
        # The role comes from the metadata service, so every server of a role shares this user-data.
        "runcmd": [
            ["tar", "-xf", BUNDLE_PATH, "-C", NODE_HOME, BOOTSTRAP_MEMBER],
            ["python3", BOOTSTRAP_PATH],
        ],
    }


class _Dumper(_PlainDumper):
    """Multi-line strings (the JSON files) as literal blocks, so the cloud-config stays readable."""


def _str_representer(dumper: yaml.BaseDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def render_cloud_config(role: str, facts: dict, secrets: dict[str, str]) -> str:
    """`#cloud-config` text for `role`; CDKTF tokens in facts/secrets are kept as they are.

    Tokens differ from stack to stack, so the text is rendered (and cached) with numbered
    stand-ins and the tokens are put back afterwards: a render done ahead of time with other
    tokens in the same places is reused.
    """
    key, tokens = _with_stand_ins(facts, secrets)
    text = _render_cloud_config(role, key)
    for index, token in enumerate(tokens):
        text = text.replace(_STAND_IN % index, token)
    return text


def render_user_data(role: str, facts: dict, secrets: dict[str, str]) -> str:
    """The server's `user_data` value for `role`: Terraform gzips and base64-encodes the
    cloud-config at apply time, after resolving the CDKTF tokens in it. cdktf places function
    arguments between quotes as they are, so literal parts go in escaped for HCL; the tokens
    become arguments of their own. Served from the cache `prerender` fills."""
    key, tokens = _with_stand_ins(facts, secrets)
    return _terraform_expression([tokens[part] if isinstance(part, int) else part
                                  for part in _terraform_pieces(role, key)])


def prerender(role: str, facts: dict, secrets: dict[str, str]) -> None:
    """Does the pure-Python part of `render_user_data` ahead of time, for any tokens in the
    same places: main.py runs it while the jsii runtime loads."""
    _terraform_pieces(role, _with_stand_ins(facts, secrets)[0])


_STAND_IN = "${TfToken[STAND-IN.%d]}"
_STAND_IN_SPLIT = re.compile(r"\$\{TfToken\[STAND-IN\.(\d+)\]\}")


def _with_stand_ins(facts: dict, secrets: dict[str, str]) -> tuple[str, list[str]]:
    """The inputs as a cache key with the tokens numbered in order, and those tokens."""
    tokens: list[str] = []

    def stand_in(match: re.Match) -> str:
        tokens.append(match.group(0))
        return _STAND_IN % (len(tokens) - 1)

    return _TOKEN.sub(stand_in, json.dumps([facts, secrets], sort_keys=True)), tokens


@functools.lru_cache(maxsize=None)
def _render_cloud_config(role: str, inputs: str) -> str:
    facts, secrets = json.loads(inputs)
    body = yaml.dump(user_data_document(role, facts, secrets), Dumper=_Dumper, sort_keys=False, width=1 << 20,
                     default_flow_style=False)
    return "#cloud-config\n" + body


@functools.lru_cache(maxsize=None)
def _terraform_pieces(role: str, inputs: str) -> tuple[str | int, ...]:
    """`render_user_data`'s arguments for the stand-in render: literal parts escaped for
    HCL, and the number of the token that goes between them."""
    parts = _STAND_IN_SPLIT.split(_render_cloud_config(role, inputs))
    # re.split alternates text and the captured stand-in numbers: odd positions are numbers.
    return tuple(int(part) if i % 2 else _hcl_literal(part) for i, part in enumerate(parts) if i % 2 or part)


def _terraform_expression(pieces: list[str]) -> str:
    from cdktf import Fn  # here, not at the top: rendering runs before (and beside) the jsii load

    return Fn.base64gzip(Fn.join("", pieces))


# Backslash, quote and control characters escaped as HCL's quoted strings want them.
_HCL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
                              **{chr(c): f"\\u{c:04x}" for c in range(0x20) if chr(c) not in "\n\r\t"}})


def _hcl_literal(text: str) -> str:
    """`text` as the inside of an HCL quoted string: nothing in it is read as syntax.
    (cdktf's Fn.rawString leaves backslashes alone, which breaks JSON content; cdktf itself
    doubles `${` in function arguments, but not `%{`.)"""
    return text.translate(_HCL_ESCAPES).replace("%{", "%%{")


def user_data_size_b64(cloud_config: str) -> int:
    """Bytes Nova receives for a cloud-config text (with its tokens already resolved)."""
    return len(base64.b64encode(gzip.compress(cloud_config.encode("utf-8"), 9, mtime=0)))
