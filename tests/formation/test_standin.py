"""The kubeadm stand-in follows kubeadm's CLI contract and validates joins; the engine's scrubber and
output parsing work on what kubeadm prints."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.formation.harness import ENGINE, STANDIN_KUBEADM

spec = importlib.util.spec_from_file_location("k8s_formation", ENGINE)
engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(engine)

INIT_CONFIG = """apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration: {name: cp-1}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.34.2
controlPlaneEndpoint: 10.20.0.10:6443
networking: {podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12}
"""


@pytest.fixture
def kubeadm(tmp_path):
    def run(node: str, *args: str, **env: str) -> subprocess.CompletedProcess:
        full = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
                    KUBEADM_STANDIN_STATE=str(tmp_path / "state.json"), KUBEADM_STANDIN_LOG=str(tmp_path / "log"),
                    KUBEADM_STANDIN_KUBE_DIR=str(tmp_path / node), KUBEADM_STANDIN_NODE=node, **env)
        return subprocess.run([str(STANDIN_KUBEADM), *args], env=full, capture_output=True, text=True, timeout=30)
    (tmp_path / "init.yaml").write_text(INIT_CONFIG)
    run.dir = tmp_path
    return run


def test_init_prints_kubeadm_join_commands_and_the_engine_parses_and_scrubs_them(kubeadm):
    out = kubeadm("cp-1", "init", "--config", str(kubeadm.dir / "init.yaml"), "--upload-certs")
    assert out.returncode == 0, out.stderr
    assert "Your Kubernetes control-plane has initialized successfully!" in out.stdout
    material = engine.parse_join_command(out.stdout)
    assert set(material) == {"token", "ca_cert_hash", "certificate_key"}
    scrubbed = engine.scrub(out.stdout)
    for secret in material.values():
        assert secret not in scrubbed
        assert secret.split(":")[-1] not in scrubbed


def test_joins_are_validated_like_kubeadm(kubeadm):
    assert kubeadm("w-1", "join", "10.20.0.10:6443", "--token", "abcdef.0123456789abcdef",
                   "--discovery-token-ca-cert-hash", "sha256:" + "0" * 64).returncode == 1  # no cluster yet
    out = kubeadm("cp-1", "init", "--config", str(kubeadm.dir / "init.yaml"), "--upload-certs").stdout
    m = engine.parse_join_command(out)
    base = ["join", "10.20.0.10:6443", "--discovery-token-ca-cert-hash", m["ca_cert_hash"]]
    assert kubeadm("w-1", *base, "--token", "abcdef.0123456789abcdef").returncode == 1
    assert kubeadm("w-1", "join", "10.20.0.10:6443", "--token", m["token"],
                   "--discovery-token-ca-cert-hash", "sha256:" + "1" * 64).returncode == 1
    assert kubeadm("cp-2", *base, "--token", m["token"], "--control-plane",
                   "--certificate-key", "2" * 64).returncode == 1
    assert kubeadm("w-1", *base, "--token", m["token"]).returncode == 0
    again = kubeadm("w-1", *base, "--token", m["token"])
    assert again.returncode == 1 and "kubelet.conf already exists" in again.stderr
    assert kubeadm("cp-2", *base, "--token", m["token"], "--control-plane",
                   "--certificate-key", m["certificate_key"]).returncode == 0
    assert kubeadm("w-1", "reset").returncode == 1  # needs -f without a terminal
    assert kubeadm("w-1", "reset", "-f").returncode == 0
    state = json.loads((kubeadm.dir / "state.json").read_text())
    assert set(state["members"]) == {"cp-1", "cp-2"}
    log = [json.loads(line) for line in (kubeadm.dir / "log").read_text().splitlines()]
    assert all(m["token"] not in json.dumps(r) for r in log)


def test_refresh_commands_need_a_control_plane_and_replace_the_certificate_key(kubeadm):
    kubeadm("cp-1", "init", "--config", str(kubeadm.dir / "init.yaml"), "--upload-certs")
    assert kubeadm("w-9", "token", "create", "--print-join-command").returncode == 1  # no admin.conf
    created = kubeadm("cp-1", "token", "create", "--ttl", "1h0m0s", "--print-join-command")
    assert created.returncode == 0 and created.stdout.startswith("kubeadm join 10.20.0.10:6443 --token ")
    uploaded = kubeadm("cp-1", "init", "phase", "upload-certs", "--upload-certs")
    key = engine.parse_certificate_key(uploaded.stdout)
    assert key and json.loads((kubeadm.dir / "state.json").read_text())["certificate_key"]["key"] == key
    assert len(kubeadm("cp-1", "certs", "certificate-key").stdout.strip()) == 64


def test_init_can_be_told_to_fail_and_refuses_to_run_twice_without_reset(kubeadm):
    cfg = str(kubeadm.dir / "init.yaml")
    failed = kubeadm("cp-1", "init", "--config", cfg, "--upload-certs", KUBEADM_STANDIN_FAIL_INIT="1")
    assert failed.returncode == 1 and "could not initialize" in failed.stderr
    again = kubeadm("cp-1", "init", "--config", cfg, "--upload-certs")
    assert again.returncode == 1 and "kube-apiserver.yaml already exists" in again.stderr
    assert kubeadm("cp-1", "reset", "-f").returncode == 0
    assert kubeadm("cp-1", "init", "--config", cfg, "--upload-certs").returncode == 0


def test_rendered_role_template_is_what_the_standin_accepts(tmp_path):
    import jinja2
    from tests.formation.harness import INIT_TEMPLATE
    facts = {"cluster_name": "dev", "kubernetes_version": "1.34.2",
             "api_endpoint": {"host": "10.20.0.10", "port": 6443},
             "api_cert_sans": ["10.20.0.10"], "pod_cidr": "10.244.0.0/16", "service_cidr": "10.96.0.0/12",
             "join": {"token_ttl_hours": 24}}
    import yaml
    docs = list(yaml.safe_load_all(jinja2.Template(INIT_TEMPLATE.read_text()).render(
        k8s_formation_facts=facts, k8s_formation_node_name="dev-cp-1")))
    cluster = next(d for d in docs if d["kind"] == "ClusterConfiguration")
    init = next(d for d in docs if d["kind"] == "InitConfiguration")
    assert cluster["controlPlaneEndpoint"] == "10.20.0.10:6443" and cluster["kubernetesVersion"] == "v1.34.2"
    assert cluster["apiServer"]["certSANs"] == ["10.20.0.10"]
    assert init["bootstrapTokens"][0]["ttl"] == "86400s" and init["nodeRegistration"]["name"] == "dev-cp-1"


def test_kubectl_standin_lists_the_members(kubeadm):
    kubeadm("cp-1", "init", "--config", str(kubeadm.dir / "init.yaml"), "--upload-certs")
    kubectl = STANDIN_KUBEADM.parent / "kubectl"
    env = dict(os.environ, KUBEADM_STANDIN_STATE=str(kubeadm.dir / "state.json"),
               KUBEADM_STANDIN_KUBE_DIR=str(kubeadm.dir / "cp-1"))
    out = subprocess.run([str(kubectl), "get", "nodes", "-o", "name"], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["node/cp-1"]
    env["KUBEADM_STANDIN_KUBE_DIR"] = str(kubeadm.dir / "nowhere")
    assert subprocess.run([str(kubectl), "get", "nodes"], env=env, capture_output=True).returncode == 1
