"""The real bootstrap script against a loopback metadata service and a real Consul 1.8.7.

The node's files come from the real rendered user-data (written as cloud-init's write_files would, under
a temporary root); only the role playbook is replaced by a stand-in that records what it was given.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from constructs.user_data import BOOTSTRAP_MEMBER, render_cloud_config
from tests.consul_fixture import ConsulServer, free_port
from tests.helpers import NODE_PYTHON, ROOT
from tests.node.fakes import CONSUL_TOKEN_PLACEHOLDER, fake_facts, fake_secrets, resolve, write_files

BOOTSTRAP = ROOT / "cloudinit" / "bootstrap.py"
CLUSTER_TOKEN = str(uuid.uuid4())
PREFIX = "k8s-formation/dev/"

STANDIN_PLAYBOOK = """\
- name: Stand-in for the role playbook
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Record what the bootstrap handed over
      ansible.builtin.copy:
        dest: "{{ lookup('env', 'STANDIN_OUT') }}"
        mode: "0600"
        content: >-
          {{ {'node_name': node_name, 'node_role': node_role, 'node_pool': node_pool,
              'node_labels': node_labels, 'node_taints': node_taints, 'cluster_name': cluster_name,
              'pod_cidr': pod_cidr, 'token_is_a_variable': consul_token is defined,
              'token_sha256': secrets.consul_token | hash('sha256')} | to_json }}
      vars:
        secrets: "{{ lookup('file', lookup('env', 'K8S_NODE_CONFIG_DIR') + '/secrets.json') | from_json }}"
    - name: Print the token, which the bootstrap must scrub from its log
      ansible.builtin.debug:
        msg: "token is {{ (lookup('file', lookup('env', 'K8S_NODE_CONFIG_DIR') + '/secrets.json') | from_json).consul_token }}"
    - name: Hang on request
      ansible.builtin.command:
        cmd: sleep 600
      changed_when: false
      when: lookup('env', 'STANDIN_HANG') == '1'
    - name: Fail on request
      ansible.builtin.fail:
        msg: stand-in failure
      when: lookup('env', 'STANDIN_FAIL') == '1'
"""


class Metadata:
    """A loopback stand-in for the OpenStack metadata service (meta_data.json only)."""

    def __init__(self) -> None:
        self.document: dict = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                if self.path != "/openstack/latest/meta_data.json":
                    self.send_error(404)
                    return
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/openstack/latest/meta_data.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def server_metadata(name: str, role: str | None, pool: str = "", cluster: str = "dev", **extra) -> dict:
    meta = {"cluster": cluster, "pool": pool, **extra}
    if role is not None:
        meta["role"] = role
    return {"uuid": str(uuid.uuid4()), "name": name, "hostname": f"{name}.novalocal", "meta": meta}


@pytest.fixture(scope="module")
def consul(consul_bin, tmp_path_factory):
    with ConsulServer(consul_bin, tmp_path_factory.mktemp("consul")) as server:
        server.create_cluster_token("dev", secret=CLUSTER_TOKEN)
        yield server


@pytest.fixture
def metadata():
    md = Metadata()
    yield md
    md.close()


class Node:
    """One simulated VM: a temporary root holding what cloud-init wrote, and the script's environment."""

    def __init__(self, root: Path, metadata: Metadata, consul_address: str, role: str,
                 token: str = CLUSTER_TOKEN) -> None:
        self.root = root
        facts = fake_facts(consul_addresses=[consul_address], mode="external")
        text = resolve(render_cloud_config(role if role in ("control-plane", "worker", "bastion") else "worker",
                                        facts, fake_secrets()), {CONSUL_TOKEN_PLACEHOLDER: token})
        written = write_files(text, root)
        # Run the bootstrap exactly as the node gets it: from the bundle, comments stripped.
        with tarfile.open(written["/opt/k8s-node/ansible.tar"]) as tar:
            tar.extract(BOOTSTRAP_MEMBER, root / "opt/k8s-node")
        self.bootstrap = root / "opt/k8s-node" / BOOTSTRAP_MEMBER
        self.token = token
        standin = root / "standin"
        standin.mkdir()
        for name in ("control-plane", "worker", "bastion"):
            (standin / f"{name}.yml").write_text(STANDIN_PLAYBOOK)
        (standin / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
        self.out = root / "standin-out.json"
        self.log = root / "var/log/k8s-node-bootstrap.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "K8S_NODE_METADATA_URL": metadata.url,
            "K8S_NODE_CONFIG_DIR": str(root / "etc/k8s-node"),
            "K8S_NODE_HOME": str(root / "opt/k8s-node"),
            "K8S_NODE_LOG": str(self.log),
            "K8S_NODE_PYTHON": sys.executable,
            "K8S_NODE_MODULE_PYTHON": sys.executable,
            "K8S_NODE_ANSIBLE_PLAYBOOK": str(Path(sys.executable).parent / "ansible-playbook"),
            "K8S_NODE_PLAYBOOK_DIR": str(standin),
            "K8S_NODE_RETRIES": "3",
            "K8S_NODE_BACKOFF": "0.2",
            "K8S_NODE_BACKOFF_CAP": "1",
            "K8S_NODE_HTTP_TIMEOUT": "2",
            "K8S_FORMATION_CONSUL_RETRIES": "3",
            "ANSIBLE_LOCAL_TEMP": str(root / "ansible-tmp"),
            "ANSIBLE_HOME": str(root / "ansible-home"),
            "STANDIN_OUT": str(self.out),
        }

    def run(self, timeout: float = 120, **env) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        proc = subprocess.run([NODE_PYTHON, str(self.bootstrap)], env={**self.env, **env}, capture_output=True,
                              text=True, timeout=timeout)
        return proc, time.monotonic() - started

    def log_text(self) -> str:
        return self.log.read_text()

    def fatal_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if "k8s-node-bootstrap: FATAL:" in line]


def status(consul: ConsulServer, node: str):
    return consul.get_json(f"{PREFIX}status/{node}")


def assert_private_log(node: Node) -> None:
    assert stat.S_IMODE(node.log.stat().st_mode) == 0o600
    assert node.token not in node.log_text()


def test_happy_path_records_phases_and_runs_the_role_playbook(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-general-1", "worker", pool="general",
                                        labels=json.dumps({"tier": "general"}),
                                        taints=json.dumps(["dedicated=general:NoSchedule"]))
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    proc, _ = node.run()
    assert proc.returncode == 0, node.log_text() + proc.stderr
    handed = json.loads(node.out.read_text())
    assert handed == {"node_name": "dev-general-1", "node_role": "worker", "node_pool": "general",
                      "node_labels": {"tier": "general"}, "node_taints": ["dedicated=general:NoSchedule"],
                      "cluster_name": "dev", "pod_cidr": "10.244.0.0/16",
                      "token_is_a_variable": False,
                      "token_sha256": __import__("hashlib").sha256(CLUSTER_TOKEN.encode()).hexdigest()}
    record = status(consul, "dev-general-1")
    assert record["phase"] == "provisioning" and record["last_error"] is None
    assert [h["phase"] for h in record["history"]] == ["booting", "provisioning"]
    assert (record["role"], record["pool"]) == ("worker", "general")
    node_file = tmp_path / "etc/k8s-node/node.json"
    assert stat.S_IMODE(node_file.stat().st_mode) == 0o644
    # The bundle was unpacked from the real user-data.
    assert (tmp_path / "opt/k8s-node/ansible/worker.yml").is_file()
    assert (tmp_path / "opt/k8s-node/ansible/roles/k8s_formation/files/k8s_formation.py").is_file()
    assert_private_log(node)
    assert "<redacted>" in node.log_text()
    assert node.token not in proc.stdout + proc.stderr


@pytest.mark.safety("bad-input")
def test_no_role_in_metadata_fails_fast(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-general-2", None, pool="general")
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    proc, took = node.run()
    assert proc.returncode == 2
    assert took < 30
    assert len(node.fatal_lines()) == 1 and "no `role`" in node.fatal_lines()[0]
    record = status(consul, "dev-general-2")
    assert record["phase"] == "failed" and "role" in record["last_error"]
    assert not node.out.exists()
    assert_private_log(node)


@pytest.mark.safety("bad-input")
def test_unknown_role_fails(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-db-1", "database")
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    proc, took = node.run()
    assert proc.returncode == 2
    assert took < 30
    assert len(node.fatal_lines()) == 1 and "unknown role 'database'" in node.fatal_lines()[0]
    record = status(consul, "dev-db-1")
    assert record["phase"] == "failed" and "database" in record["last_error"]
    assert not node.out.exists()


@pytest.mark.safety("bad-input")
def test_unreachable_consul_fails_after_bounded_retries(tmp_path, metadata):
    metadata.document = server_metadata("dev-cp-1", "control-plane")
    node = Node(tmp_path, metadata, f"127.0.0.1:{free_port()}", "control-plane")
    proc, took = node.run(timeout=90)
    assert proc.returncode == 4
    assert took < 60
    assert len(node.fatal_lines()) == 1 and "Consul unreachable" in node.fatal_lines()[0]
    assert not node.out.exists()
    assert_private_log(node)


@pytest.mark.safety("bad-input")
def test_rejected_consul_token_fails(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-general-3", "worker", pool="general")
    node = Node(tmp_path, metadata, consul.http_addr, "worker", token=str(uuid.uuid4()))
    proc, took = node.run()
    assert proc.returncode == 3
    assert took < 30
    assert len(node.fatal_lines()) == 1 and "rejected the token" in node.fatal_lines()[0]
    assert status(consul, "dev-general-3") is None
    assert not node.out.exists()
    assert_private_log(node)


@pytest.mark.safety("bad-input")
def test_unreachable_metadata_service_fails_after_bounded_retries(tmp_path, metadata, consul):
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    node.env["K8S_NODE_METADATA_URL"] = f"http://127.0.0.1:{free_port()}/openstack/latest/meta_data.json"
    proc, took = node.run()
    assert proc.returncode == 2
    assert took < 30
    assert len(node.fatal_lines()) == 1 and "metadata service" in node.fatal_lines()[0]


@pytest.mark.safety("bad-input")
def test_failed_playbook_is_recorded(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-cp-2", "control-plane")
    node = Node(tmp_path, metadata, consul.http_addr, "control-plane")
    proc, _ = node.run(STANDIN_FAIL="1")
    assert proc.returncode == 1
    assert len(node.fatal_lines()) == 1 and "playbook control-plane.yml failed" in node.fatal_lines()[0]
    record = status(consul, "dev-cp-2")
    assert record["phase"] == "failed"
    assert [h["phase"] for h in record["history"]] == ["booting", "provisioning", "failed"]
    assert "control-plane.yml" in record["last_error"]
    assert_private_log(node)


@pytest.mark.safety("bad-input")
def test_cluster_mismatch_is_refused(tmp_path, metadata, consul):
    metadata.document = server_metadata("prod-general-1", "worker", cluster="prod")
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    proc, _ = node.run()
    assert proc.returncode == 2
    assert "does not match" in node.fatal_lines()[0]
    assert not node.out.exists()


@pytest.mark.safety("bad-input")
def test_hung_playbook_is_killed_at_the_deadline(tmp_path, metadata, consul):
    metadata.document = server_metadata("dev-general-4", "worker", pool="general")
    node = Node(tmp_path, metadata, consul.http_addr, "worker")
    proc, took = node.run(STANDIN_HANG="1", K8S_NODE_PLAYBOOK_TIMEOUT="8")
    assert proc.returncode == 1
    assert took < 40
    assert "killed after 8s" in node.log_text()
    assert "playbook worker.yml failed" in node.fatal_lines()[0]
    assert status(consul, "dev-general-4")["phase"] == "failed"
