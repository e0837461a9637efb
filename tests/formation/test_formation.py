"""The formation protocol against a real Consul 1.8.7 (ACLs on) with simulated nodes.

Nodes run the project's playbooks (`ansible/<role>.yml --tags formation`), except the repeated races,
which drive the role's script (ansible/roles/k8s_formation/files/k8s_formation.py) directly to keep CI
time sane: the same code the role's command task runs.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.consul_fixture import KV_PREFIX, ConsulHTTPError
from tests.formation.harness import ENGINE, STANDIN_KUBEADM, Timing, check_invariants, check_no_secrets

pytestmark = pytest.mark.slow


def start_all(nodes, mode="playbook", workers_mode=None):
    """Control planes (and workers unless workers_mode says otherwise) run the playbook. Fault tests run
    their workers through the engine directly to keep the module under its CI time budget."""
    for node in nodes:
        node.start(workers_mode if (workers_mode and node.role == "worker") else mode)


def wait_all(nodes, timeout):
    for node in nodes:
        rc = node.wait(timeout)
        assert rc == 0, f"{node.name} exited {rc}:\n{node.output()[-4000:]}"


def phases(node) -> list[str]:
    return [h["phase"] for h in (node.status() or {}).get("history", [])]


# --------------------------------------------------------------------------- ACLs

@pytest.mark.safety("secret-leak")
def test_cluster_token_is_confined_and_a_rejected_token_fails_fast(make_cluster, consul):
    cluster = make_cluster()
    node = cluster.add_node("worker", 1, "general")
    with pytest.raises(ConsulHTTPError) as denied:
        consul.call("PUT", f"/v1/kv/{KV_PREFIX}/other-cluster/x", b"1", token=cluster.token)
    assert denied.value.code == 403
    assert consul.call("PUT", f"/v1/kv/{cluster.prefix}probe", b"1", token=cluster.token) is True

    ok = node.run_engine("record-phase", "--phase", "booting", "--role", "worker")
    assert ok.returncode == 0, ok.stderr
    assert node.status()["phase"] == "booting"

    node.paths()["secrets"].write_text(json.dumps({"consul_token": "00000000-0000-4000-8000-000000000000"}))
    started = time.monotonic()
    bad = node.run_engine("worker")
    assert bad.returncode == 3
    assert time.monotonic() - started < 10, "a 403 must not be retried"
    assert "Consul rejected the token (HTTP 403" in bad.stderr
    assert "00000000-0000-4000-8000-000000000000" not in bad.stderr + bad.stdout


# --------------------------------------------------------------------------- the normal race

def test_normal_race_three_control_planes_three_workers(make_cluster):
    cluster = make_cluster(Timing(init=3, join=1, cp_join=1.5))
    nodes = cluster.add_nodes(3, 3)
    start_all(nodes)
    wait_all(nodes, 180)
    summary = check_invariants(cluster, nodes)
    assert len(summary["cp_joins"]) == 2
    for node in nodes:
        assert re.search(r"Form or join the cluster under the Consul lock\] \*+\nchanged", node.output())
    # The refresher units are rendered on control-plane nodes only.
    for node in nodes:
        unit = node.paths()["systemd"] / "k8s-join-refresher.timer"
        assert unit.exists() == (node.role == "control-plane")
    workers = [n for n in nodes if n.role == "worker"]
    for node in workers:
        assert phases(node)[:1] == ["waiting-for-initialized"] and phases(node)[-2:] == ["joining", "joined"]
    holder = cluster.nodes[summary["init"]["node"]]
    assert phases(holder) == ["initializing", "joined"]
    attempts = {k: v for k, v in summary["kv"].items() if "/init/attempts/" in k}
    assert [v["result"] for v in attempts.values()] == ["succeeded"]


# --------------------------------------------------------------------------- faults

@pytest.mark.safety("fault")
def test_init_holder_killed_mid_init(make_cluster):
    cluster = make_cluster(Timing(init=4, join=1, cp_join=1, session_ttl=10, lock_delay=1))
    nodes = cluster.add_nodes(3, 1)
    start_all(nodes, workers_mode="engine")
    first = cluster.wait_for(lambda: next((r for r in cluster.invocations()
                                           if r["cmd"] == "init" and r["event"] == "start"), None),
                             120, "the first kubeadm init to start")
    victim = cluster.nodes[first["node"]]
    time.sleep(1)
    victim.kill()  # power loss: ansible, engine and kubeadm die together; the session is not destroyed
    killed_at = time.time()
    survivors = [n for n in nodes if n is not victim]
    wait_all(survivors, 240)
    summary = check_invariants(cluster, survivors, dead=(victim.name,))
    assert summary["init"]["node"] != victim.name
    # The takeover needed the dead holder's session to expire (>= TTL) and no more than TTL x2 + slack.
    takeover = min(r["t"] for r in summary["inv"] if r["cmd"] == "init" and r["node"] != victim.name)
    assert 7 <= takeover - killed_at <= 40
    attempts = [v for k, v in sorted(summary["kv"].items()) if "/init/attempts/" in k]
    assert [(a["node"], a["result"]) for a in attempts] == [(victim.name, "abandoned"),
                                                            (summary["init"]["node"], "succeeded")]


@pytest.mark.safety("fault")
def test_init_fails_once_then_another_node_retries(make_cluster):
    cluster = make_cluster(Timing(init=2, join=1, cp_join=1, fail_init=1, retry_backoff=3))
    nodes = cluster.add_nodes(3, 1)
    start_all(nodes, workers_mode="engine")
    wait_all(nodes, 180)
    summary = check_invariants(cluster, nodes)
    inv = cluster.invocations()
    failed = [r for r in inv if r["cmd"] == "init" and r["event"] == "end" and r["rc"] != 0]
    assert len(failed) == 1
    loser = failed[0]["node"]
    assert summary["init"]["node"] != loser, "another node should take the retry"
    resets = [r for r in inv if r["cmd"] == "reset" and r["event"] == "end"]
    assert [r["node"] for r in resets] == [loser] and resets[0]["t"] < summary["init"]["start"]
    attempts = [v for k, v in sorted(summary["kv"].items()) if "/init/attempts/" in k]
    assert [(a["node"], a["result"]) for a in attempts] == [(loser, "failed"), (summary["init"]["node"], "succeeded")]
    assert "could not initialize a Kubernetes cluster" in attempts[0]["reason"]
    assert "initializing" in phases(cluster.nodes[loser])


@pytest.mark.safety("fault")
def test_consul_restarted_mid_formation(make_cluster, consul):
    cluster = make_cluster(Timing(init=6, join=1, cp_join=2, session_ttl=20))
    nodes = cluster.add_nodes(3, 2)
    start_all(nodes, workers_mode="engine")
    cluster.wait_for(lambda: any(r["cmd"] == "init" for r in cluster.invocations()), 120, "kubeadm init")
    consul.restart()  # same data dir, same ports
    wait_all(nodes, 240)
    check_invariants(cluster, nodes)
    outputs = "\n".join(n.output() for n in nodes)
    assert "retry 1/" in outputs, "nodes should have seen Consul go away and retried"


@pytest.mark.safety("fault")
def test_worker_after_material_expired_waits_for_refresher(make_cluster):
    ttl = 12.0
    cluster = make_cluster(Timing(init=1, join=0.5, cp_join=0.5, token_ttl=ttl, cert_key_ttl=ttl, expiry_margin=1))
    cp = cluster.add_node("control-plane", 1)
    early = cluster.add_node("worker", 1, "general")
    start_all([cp], mode="playbook")  # renders the refresher unit used below
    start_all([early], mode="engine")
    wait_all([cp, early], 180)
    old = cluster.consul.get_json(cluster.prefix + "join/material")
    # The engine dates expiry from the start of `kubeadm init` (conservative); kubeadm from its end.
    time.sleep(max(0.0, old["token_expires_at"] - time.time()) + cluster.timing.init + 1)

    # kubeadm (stand-in) itself refuses the expired token: a worker must not try it.
    late = cluster.add_node("worker", 2, "general")
    stale_join = subprocess.run([str(STANDIN_KUBEADM), "join", "10.20.0.10:6443", "--token", old["token"],
                                 "--discovery-token-ca-cert-hash", old["ca_cert_hash"]],
                                env={**late.env(), "KUBEADM_STANDIN_LOG": ""}, capture_output=True, text=True)
    assert stale_join.returncode == 1 and "expired" in stale_join.stderr
    late.kube_dir.joinpath("kubelet.conf").unlink(missing_ok=True)

    late.start()
    cluster.wait_for(lambda: (late.status() or {}).get("phase") == "waiting-for-initialized", 120,
                     "the late worker to wait for fresh material")
    time.sleep(1)
    assert late.proc.poll() is None
    # The refresher, exactly as its systemd unit runs it on the control-plane node.
    unit = (cp.paths()["systemd"] / "k8s-join-refresher.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", unit, re.S | re.M).group(1).replace("\\\n", " ").split()
    refresh = subprocess.run(exec_start, env=cp.env(), capture_output=True, text=True, timeout=60)
    assert refresh.returncode == 0, refresh.stderr
    assert "join material refreshed" in refresh.stderr
    wait_all([late], 120)
    new = cluster.consul.get_json(cluster.prefix + "join/material")
    assert new["token"] != old["token"] and new["token_expires_at"] > old["token_expires_at"]
    late_join = [r for r in cluster.invocations() if r["node"] == late.name and r["cmd"] == "join"
                 and r["event"] == "end" and r["rc"] == 0]
    assert len(late_join) == 1
    fresh_token = [r for r in cluster.invocations() if r["cmd"] == "token-create" and r["event"] == "end"]
    assert late_join[0]["token_fp"] == fresh_token[-1]["token_fp"]
    check_invariants(cluster, [cp, early, late], same_material=False)
    check_no_secrets(cluster, old)
    for secret in (new["token"], old["token"], new["certificate_key"]):
        assert secret not in refresh.stderr + refresh.stdout
    # Nothing left to do right after a refresh.
    again = subprocess.run(exec_start, env=cp.env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to refresh" in again.stderr


@pytest.mark.safety("fault")
def test_rebooted_node_that_already_joined_does_nothing(make_cluster):
    cluster = make_cluster(Timing(init=1, join=0.5, cp_join=0.5))
    cp, worker = cluster.add_node("control-plane", 1), cluster.add_node("worker", 1, "general")
    start_all([cp, worker], mode="engine")
    wait_all([cp, worker], 120)
    before = len(cluster.invocations())
    for node in (cp, worker):
        # What the bootstrap script records after a reboot, then the playbook again.
        for phase in ("booting", "provisioning"):
            assert node.run_engine("record-phase", "--phase", phase, "--role", node.role).returncode == 0
        node.start("playbook")
    wait_all([cp, worker], 180)
    assert len(cluster.invocations()) == before, "a joined node must not run kubeadm again"
    for node in (cp, worker):
        out = node.runs[-1]["out"].read_text()
        assert re.search(r"Form or join the cluster under the Consul lock\] \*+\nok:", out)
        assert phases(node)[-3:] == ["booting", "provisioning", "joined"]
    check_invariants(cluster, [cp, worker])


# --------------------------------------------------------------------------- repeated race

@pytest.mark.parametrize("round_", range(20))
@pytest.mark.safety("fault")
def test_race_repeated(make_cluster, round_):
    cluster = make_cluster(Timing(init=0.3, join=0.2, cp_join=0.2, reset=0.05))
    nodes = cluster.add_nodes(3, 3)
    start_all(nodes, mode="engine")
    wait_all(nodes, 120)
    check_invariants(cluster, nodes)


def test_engine_is_stdlib_only():
    # It runs on the node's system python3 before any package is installed.
    src = ENGINE.read_text()
    imports = set(re.findall(r"^(?:from|import) ([a-z_0-9]+)", src, re.M))
    allowed = {"__future__", "argparse", "base64", "json", "os", "random", "re", "signal", "socket", "subprocess",
               "sys", "threading", "time", "urllib"}
    assert imports <= allowed, imports - allowed
