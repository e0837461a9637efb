"""Rendered user-data: cloud-init's own validator, size, file modes, Terraform escaping, stability."""
from __future__ import annotations

import base64
import gzip
import io
import json
import subprocess
import tarfile

import pytest
import yaml

from constructs.user_data import (BOOTSTRAP, BOOTSTRAP_MEMBER, FORMATION_SCRIPT, MAX_USER_DATA_B64, ROLES,
                                  ansible_bundle, render_cloud_config, strip_python, user_data_size_b64)
from tests.helpers import require_tool
from tests.node.fakes import CONSUL_TOKEN_PLACEHOLDER, TOKEN_RE, fake_facts, fake_secrets, resolve

CONSUL_TOKEN = "0b6f3b1e-2f55-4a5e-9d1c-3c1f6f1a2b3c"


def rendered(role: str) -> str:
    return render_cloud_config(role, fake_facts(), fake_secrets())


def document(role: str) -> dict:
    return yaml.safe_load(resolve(rendered(role), {CONSUL_TOKEN_PLACEHOLDER: CONSUL_TOKEN}))


def entry(doc: dict, path: str) -> dict:
    return next(e for e in doc["write_files"] if e["path"] == path)


@pytest.mark.parametrize("role", ROLES)
def test_cloud_init_schema_accepts_user_data(role, tmp_path):
    cloud_init = require_tool("cloud-init", ".tools/cloud-init/bin/cloud-init")
    path = tmp_path / f"{role}.yaml"
    path.write_text(resolve(rendered(role), {CONSUL_TOKEN_PLACEHOLDER: CONSUL_TOKEN}))
    proc = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_cloud_init_schema_rejects_a_broken_document(tmp_path):
    """The validator really validates: a wrong type in write_files is an error."""
    cloud_init = require_tool("cloud-init", ".tools/cloud-init/bin/cloud-init")
    doc = document("worker")
    doc["write_files"][0]["permissions"] = 644
    path = tmp_path / "broken.yaml"
    path.write_text("#cloud-config\n" + yaml.safe_dump(doc))
    proc = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "permissions" in proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_user_data_fits_nova(role):
    """What Nova receives is base64(gzip(cloud-config)) with the tokens resolved (a 36-char UUID
    for the Consul token): at most half of Nova's 65535 bytes."""
    size = user_data_size_b64(resolve(rendered(role), {CONSUL_TOKEN_PLACEHOLDER: CONSUL_TOKEN}))
    print(f"\nuser-data {role}: {size} bytes base64 (limit {MAX_USER_DATA_B64}, Nova 65535)")
    assert size <= MAX_USER_DATA_B64 == 32 * 1024


@pytest.mark.parametrize("role", ROLES)
def test_files_and_modes(role):
    doc = document(role)
    assert rendered(role).startswith("#cloud-config\n")
    secrets = entry(doc, "/etc/k8s-node/secrets.json")
    assert (secrets["permissions"], secrets["owner"]) == ("0600", "root:root")
    assert json.loads(secrets["content"]) == {"consul_token": CONSUL_TOKEN}
    facts = entry(doc, "/etc/k8s-node/cluster.json")
    assert facts["permissions"] == "0644"
    assert json.loads(facts["content"])["cluster_name"] == "dev"
    assert CONSUL_TOKEN not in facts["content"]
    assert entry(doc, "/opt/k8s-node/ansible.tar")["permissions"] == "0600"
    assert doc["runcmd"] == [["tar", "-xf", "/opt/k8s-node/ansible.tar", "-C", "/opt/k8s-node", "bootstrap.py"],
                             ["python3", "/opt/k8s-node/bootstrap.py"]]
    assert "python3-venv" in doc["packages"]


@pytest.mark.parametrize("role", ROLES)
def test_bundle_holds_the_role_playbook_and_its_roles(role):
    doc = document(role)
    tar_bytes = gzip.decompress(base64.b64decode(entry(doc, "/opt/k8s-node/ansible.tar")["content"]))
    assert tar_bytes == ansible_bundle(role)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"ansible.cfg", f"{role}.yml", "roles/k8s_formation/files/k8s_formation.py", BOOTSTRAP_MEMBER} <= set(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    plays = yaml.safe_load((BOOTSTRAP.parent.parent / "ansible" / f"{role}.yml").read_text())
    for play in plays:
        for r in play["roles"]:
            assert any(n.startswith(f"roles/{r['role']}/tasks/") for n in names), r
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_rendering_is_byte_stable():
    first = {role: rendered(role) for role in ROLES}
    again = {role: rendered(role) for role in ROLES}
    assert first == again


def test_unknown_role_is_refused():
    with pytest.raises(ValueError, match="unknown node role"):
        render_cloud_config("database", fake_facts(), fake_secrets())


@pytest.mark.parametrize("path", [BOOTSTRAP, FORMATION_SCRIPT], ids=["bootstrap", "formation"])
def test_stripped_python_is_the_same_program(path):
    """Only comments and docstrings leave: the syntax tree without docstrings is identical."""
    import ast

    def tree(source: str) -> str:
        module = ast.parse(source)
        for node in ast.walk(module):
            body = getattr(node, "body", None)
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                    and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Expr(ast.Constant(Ellipsis))]
        return ast.dump(module)

    source = path.read_text()
    stripped = strip_python(source)
    assert tree(stripped) == tree(source)
    assert len(stripped) < 0.95 * len(source)
    assert "#" not in "".join(line.split('"')[0].split("'")[0] for line in stripped.splitlines()[1:]
                              if line.lstrip().startswith("#"))


def test_literal_dollar_and_percent_braces_survive_terraform(tmp_path):
    """The user_data expression evaluated by the real engine: tokens resolved, `${` and `%{`
    in literal text kept literal, and the result is the gzip of the cloud-config."""
    tofu = require_tool("tofu", ".tools/tofu/bin/tofu")
    import os
    from cdktf import App, LocalBackend, TerraformOutput, TerraformStack, TerraformVariable
    from constructs.user_data import render_user_data

    app = App(outdir=str(tmp_path / "out"))
    stack = TerraformStack(app, "escape")
    # cdktf's default local state lands in the current directory: the project root under pytest.
    LocalBackend(stack, path=str(tmp_path / "escape.tfstate"))
    token = TerraformVariable(stack, "consul_token", type="string", sensitive=True).string_value
    facts = fake_facts()
    facts["api_cert_sans"] = ["10.20.0.10", "203.0.113.7"]  # only this app's tokens can be resolved
    facts["note"] = 'shell ${HOME}, template %{ if x }, $${twice}, quote " and backslash \\ stay literal'
    text = render_cloud_config("worker", facts, {"consul_token": token})
    TerraformOutput(stack, "user_data", value=render_user_data("worker", facts, {"consul_token": token}),
                    sensitive=True)
    app.synth()
    workdir = tmp_path / "out" / "stacks" / "escape"
    env = {**os.environ, "TF_VAR_consul_token": CONSUL_TOKEN, "TF_CLI_CONFIG_FILE": "", "TF_IN_AUTOMATION": "1"}
    for args in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        proc = subprocess.run([tofu, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([tofu, "output", "-raw", "user_data"], cwd=workdir, env=env, capture_output=True,
                         timeout=120)
    received = gzip.decompress(base64.b64decode(out.stdout)).decode()
    assert received == TOKEN_RE.sub(CONSUL_TOKEN, text)
    doc = yaml.safe_load(received)
    assert json.loads(entry(doc, "/etc/k8s-node/cluster.json")["content"])["note"] == facts["note"]
    assert json.loads(entry(doc, "/etc/k8s-node/secrets.json")["content"]) == {"consul_token": CONSUL_TOKEN}


def load_bootstrap_module():
    """By path: the folder is not a package (cloud-init's own package is also called `cloudinit`)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("k8s_node_bootstrap", BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_ansible_pins_match_the_linted_versions():
    """Nodes on Python 3.11+ run the ansible-core (and dependencies) the playbooks are linted with."""
    pins = load_bootstrap_module().PINS
    required = {}
    for line in (BOOTSTRAP.parent.parent / "requirements.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.strip().split("==")
            required[name.lower()] = version
    for pin in pins[(3, 11)]:
        name, version = pin.split("==")
        assert required.get(name.lower()) == version, pin
    assert all("==" in pin for pinset in pins.values() for pin in pinset)
