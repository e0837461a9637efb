"""Where the secrets of a real formation run must never be found (DESIGN.md, issue 4).

One formation (3 control-plane nodes and 3 workers running the real playbooks against a real
Consul with ACLs) produces a bootstrap token, a CA certificate hash and a certificate key; with
the cluster's Consul token these are searched for in every place they must not reach.
"""
from __future__ import annotations

import json
import stat

import pytest

from tests.formation.harness import Cluster, Timing, check_invariants
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.safety("secret-leak")]


@pytest.fixture(scope="module")
def formation(consul, tmp_path_factory):
    cluster = Cluster(consul, tmp_path_factory.mktemp("secret-places"), "leaks", Timing(init=2, join=1, cp_join=1))
    nodes = cluster.add_nodes(3, 3)
    try:
        for node in nodes:
            node.start("playbook")
        for node in nodes:
            assert node.wait(180) == 0, node.output()[-3000:]
        material = check_invariants(cluster, nodes)["material"]
        secrets = [material["token"], material["ca_cert_hash"], material["certificate_key"], cluster.token]
        # Each half that is a secret on its own: the token's secret part, the bare hash.
        secrets += [material["token"].split(".", 1)[1], material["ca_cert_hash"].split(":", 1)[1]]
        yield cluster, nodes, secrets
    finally:
        cluster.close()


def assert_clean(texts: dict[str, str], secrets: list[str]) -> None:
    assert texts, "nothing was searched"
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"


def test_node_logs_and_console(formation):
    _, nodes, secrets = formation
    assert_clean({f"{n.name} output": n.output() for n in nodes}, secrets)


def test_consul_records_other_than_the_join_material(formation):
    cluster, _, secrets = formation
    records = {key: json.dumps(value) for key, value in cluster.kv().items() if not key.endswith("join/material")}
    assert any("/status/" in key for key in records)
    assert_clean(records, secrets)


def test_files_on_the_nodes_holding_secrets_are_0600(formation):
    """The stand-in kubeadm's own state (/etc/kubernetes) aside, a node file that holds a secret
    must be private."""
    _, nodes, secrets = formation
    seen, holding = 0, 0
    for node in nodes:
        for path in node.dir.rglob("*"):
            if not path.is_file() or node.kube_dir in path.parents:
                continue
            seen += 1
            text = path.read_bytes().decode("utf-8", "replace")
            if any(secret in text for secret in secrets):
                holding += 1
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} holds a secret and is not 0600"
    assert seen > holding >= len(nodes)  # at least every node's secrets.json was checked


def test_synthesized_user_data_outputs_and_variables(formation, synth_dir):
    _, _, secrets = formation
    texts = {str(p.relative_to(synth_dir)): p.read_text() for p in synth_dir.rglob("*.json")}
    assert any(name.endswith("cdk.tf.json") for name in texts)
    assert_clean(texts, secrets)


def test_committed_snapshots(formation):
    _, _, secrets = formation
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "tests" / "__snapshots__").rglob("*.json")}
    assert_clean(texts, secrets)
