"""The bastion's Consul ACL setup (consul_server role, `--tags consul_acl`) against a real, un-bootstrapped
Consul 1.8.7: management token kept 0600 on the host, per-cluster policy, token with the nodes' SecretID."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid

import pytest

from tests.consul_fixture import ConsulHTTPError, ConsulServer
from tests.node.fakes import fake_facts
from tests.node.test_ansible import ANSIBLE, ansible_env, tool

CLUSTER_TOKEN = str(uuid.uuid4())


@pytest.fixture(scope="module")
def consul(consul_bin, tmp_path_factory):
    with ConsulServer(consul_bin, tmp_path_factory.mktemp("consul-acl"), bootstrap_acl=False) as server:
        yield server


def run_bastion_acl(tmp_path, consul):
    facts = fake_facts(mode="bastion")
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"consul_token": CLUSTER_TOKEN}))
    secrets.chmod(0o600)
    extra = {**facts, "consul_server_secrets_file": str(secrets), "ansible_python_interpreter": sys.executable,
             "consul_server_http_addr": consul.url,
             "consul_server_management_token_file": str(tmp_path / "management-token.json"),
             "consul_server_agent_token_file": str(tmp_path / "agent-token.json")}
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra))
    extra_file.chmod(0o600)
    return subprocess.run([tool("ansible-playbook"), "bastion.yml", "--tags", "consul_acl", "-e", f"@{extra_file}"],
                          cwd=ANSIBLE, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bastion_sets_up_acls_and_the_cluster_token(tmp_path, consul):
    first = run_bastion_acl(tmp_path, consul)
    assert first.returncode == 0, first.stdout + first.stderr
    management = tmp_path / "management-token.json"
    assert stat.S_IMODE(management.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "agent-token.json").stat().st_mode) == 0o600
    management_token = json.loads(management.read_text())["SecretID"]
    for out in (first.stdout, first.stderr):
        assert CLUSTER_TOKEN not in out and management_token not in out

    # The cluster token: write on its cluster's prefix and sessions, nothing else.
    assert consul.call("PUT", "/v1/kv/k8s-formation/dev/probe", b"1", token=CLUSTER_TOKEN) is True
    with pytest.raises(ConsulHTTPError) as denied:
        consul.call("PUT", "/v1/kv/k8s-formation/prod/probe", b"1", token=CLUSTER_TOKEN)
    assert denied.value.code == 403
    with pytest.raises(ConsulHTTPError):
        consul.call("GET", "/v1/acl/tokens", token=CLUSTER_TOKEN)
    session = consul.call("PUT", "/v1/session/create", {"TTL": "30s"}, token=CLUSTER_TOKEN)
    assert session["ID"]
    # ACLs are default-deny: no token, no data.
    with pytest.raises(ConsulHTTPError) as anonymous:
        consul.call("PUT", "/v1/kv/k8s-formation/dev/anon", b"1", token="anonymous")
    assert anonymous.value.code == 403

    # A second run changes nothing and keeps the same management token.
    second = run_bastion_acl(tmp_path, consul)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout
    assert json.loads(management.read_text())["SecretID"] == management_token
