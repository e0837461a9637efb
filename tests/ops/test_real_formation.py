"""status / wait / timeline on records written by a real formation run: the node-bootstrap harness
(tests/formation/) runs the formation engine the k8s_formation role installs, for nodes named like
the `dev` stack's, against a real Consul, with only kubeadm replaced by the stand-in."""
from __future__ import annotations

import threading

import pytest

from ops import timeline
from ops.records import record_from_dict
from tests.consul_fixture import ConsulServer
from tests.formation.harness import Cluster, Timing
from tests.ops.conftest import run_cli
from tests.ops.test_timeline import _bands


@pytest.fixture
def formation_consul(consul_bin, tmp_path):
    # One server per test: the harness creates a per-cluster ACL policy named after the cluster (`dev`).
    with ConsulServer(consul_bin, tmp_path / "formation-consul", persistent=True) as server:
        yield server


@pytest.fixture
def dev_cluster(formation_consul, tmp_path, monkeypatch):
    clusters = []

    def make(timing: Timing) -> Cluster:
        # Named `dev`, so node names and the KV prefix are the ones stacks/dev.yaml expects.
        cluster = Cluster(formation_consul, tmp_path / "dev", "dev", timing)
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", cluster.token)  # the cluster's own token can read its prefix
        clusters.append(cluster)
        return cluster

    yield make
    for c in clusters:
        c.close()


def _run_nodes(nodes):
    for node in nodes:
        node.start("engine")


@pytest.mark.slow
def test_wait_status_and_timeline_follow_a_real_formation(dev_cluster, tmp_path):
    cluster = dev_cluster(Timing(init=2.0, join=0.5, cp_join=0.8))
    nodes = cluster.add_nodes(3, 2)
    assert [n.name for n in nodes] == ["dev-cp-1", "dev-cp-2", "dev-cp-3", "dev-general-1", "dev-general-2"]
    box = {}
    waiter = threading.Thread(target=lambda: box.setdefault("res", run_cli(
        "wait", "dev", "--consul-addr", cluster.consul.http_addr, "--timeout", "150")))
    waiter.start()  # before the nodes: it sees every phase change as it happens
    _run_nodes(nodes)
    waiter.join(timeout=200)
    for node in nodes:
        assert node.wait(60) == 0, node.output()[-3000:]
    res = box["res"]
    assert res.code == 0, res
    assert res.out.startswith("cluster dev formed: all 5 Kubernetes nodes joined (waited ")
    for node in nodes:
        assert f"wait: {node.name}: joining -> joined\n" in res.err or f"{node.name}: initializing -> joined" in res.err

    status = run_cli("status", "dev", "--consul-addr", cluster.consul.http_addr)
    lines = status.out.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["dev-bastion"] + [n.name for n in nodes]
    assert [ln.split()[3] for ln in lines[1:]] == ["pending"] + ["joined"] * 5

    out = tmp_path / "formation.png"
    res = run_cli("timeline", "dev", "--consul-addr", cluster.consul.http_addr, "-o", str(out))
    assert res.code == 0, res
    records = {n.name: n.status() for n in nodes}
    tl = timeline.compute([record_from_dict(r) for r in records.values()])
    rendered = timeline.render(tl, str(out), "Formation of cluster dev")
    bands = _bands(str(out), rendered.plot_box)
    assert len(bands) == 5
    for seq, rec in zip(bands, records.values()):
        hist = [h["phase"] for h in rec["history"]]
        assert seq == [p for p in hist if p in seq] and seq[-1] == "joined", (rec["node"], seq, hist)


@pytest.mark.slow
def test_wait_reports_a_real_init_failure(dev_cluster):
    # Every kubeadm init fails: after the cluster-wide attempt limit a control-plane node gives up.
    cluster = dev_cluster(Timing(init=0.3, reset=0.1, fail_init=99, retry_backoff=0.2, lock_delay=0.2))
    nodes = cluster.add_nodes(3, 0)
    _run_nodes(nodes)
    try:
        res = run_cli("wait", "dev", "--consul-addr", cluster.consul.http_addr, "--timeout", "120")
    finally:
        for node in nodes:
            node.kill()
    assert res.code == 1, res
    last = res.err.rstrip().splitlines()[-1]
    assert last.startswith("wait: node dev-cp-")
    assert "failed during " in last and "kubeadm init failed 3 times" in last
