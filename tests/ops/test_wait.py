from __future__ import annotations

import threading
import time


from tests.ops import formation_records as fr
from tests.ops.conftest import STATUS, run_cli
from tests.ops.test_status import _replay


def test_wait_returns_as_soon_as_the_last_node_joins(kv):
    """Replays a formation while `wait` runs: it must return right after the last write,
    which only a blocking query does (the refresh interval here is far longer)."""
    t0 = time.time()
    done_at = {}

    def writer():
        _replay(kv, fr.ALL_JOINED, 0.005, t0)
        done_at["t"] = time.monotonic()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "60")
        returned = time.monotonic()
    finally:
        thread.join()
    assert res.code == 0, res
    assert returned - done_at["t"] < 2.5  # the blocking query itself waits up to 60s
    assert res.out.startswith("cluster dev formed: all 5 Kubernetes nodes joined (waited ")
    # Progress is reported on stderr, one line per phase change, in order.
    assert "wait: dev-cp-1: waiting-for-lock -> initializing\n" in res.err
    assert res.err.index("dev-cp-3: waiting-for-initialized -> joining") < res.err.index("dev-cp-3: joining -> joined")


def test_wait_all_joined_already(kv):
    fr.write_all(kv, STATUS, fr.ALL_JOINED)
    res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "5")
    assert res.code == 0, res


def test_wait_does_not_need_a_bastion_record(kv):
    fr.write_all(kv, STATUS, [r for r in fr.ALL_JOINED if r[1] != "bastion"])
    res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "5")
    assert res.code == 0, res


def test_wait_one_node_failed(kv):
    fr.write_all(kv, STATUS, fr.ONE_FAILED)
    started = time.monotonic()
    res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "60")
    assert res.code == 1, res
    assert time.monotonic() - started < 5  # fails fast, does not sit out the timeout
    assert res.err.rstrip().endswith(
        "wait: node dev-general-2 failed during joining: " + fr.JOIN_TIMEOUT)


def test_wait_failure_while_waiting(kv):
    fr.write_all(kv, STATUS, [r for r in fr.ONE_FAILED if r[0] != "dev-general-2"])
    t0 = time.time()
    thread = threading.Thread(target=_replay, args=(kv, [r for r in fr.ONE_FAILED if r[0] == "dev-general-2"],
                                                    0.002, t0))
    thread.start()
    try:
        res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "60")
    finally:
        thread.join()
    assert res.code == 1, res
    assert "wait: dev-general-2: joining -> failed" in res.err
    assert "node dev-general-2 failed during joining: kubeadm join failed" in res.err


def test_wait_times_out_naming_the_stuck_nodes(kv):
    fr.write_all(kv, STATUS, fr.STUCK)
    started = time.monotonic()
    res = run_cli("wait", "dev", "--consul-addr", kv.http_addr, "--timeout", "3")
    elapsed = time.monotonic() - started
    assert res.code == 4, res
    assert 3 <= elapsed < 10
    last = res.err.rstrip().splitlines()[-1]
    assert last.startswith("wait: timed out after 3s; not joined: dev-cp-3 (joining for 4m")
    assert f"last error: {fr.CP_JOIN_WAIT})" in last
    assert last.endswith("; dev-general-2 (pending: no status record yet)")


def test_wait_exit_codes_are_distinct():
    from ops import cli

    codes = [cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_ERROR, cli.EXIT_TIMEOUT]
    assert len(set(codes)) == len(codes)


def test_wait_keeps_going_through_a_consul_restart(consul_bin, tmp_path, monkeypatch):
    """Formation outlives a Consul restart; so must `wait` (it retries, then sees the change)."""
    from tests.consul_fixture import ConsulServer

    server = ConsulServer(consul_bin, tmp_path / "consul").start()
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", server.master_token)
    fr.write_all(server, STATUS, fr.STUCK)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("res", run_cli(
        "wait", "dev", "--consul-addr", server.http_addr, "--timeout", "90")))
    thread.start()
    try:
        time.sleep(1.0)
        server.restart()  # dev mode: the data is gone, as after losing a single server
        fr.write_all(server, STATUS, fr.ALL_JOINED)
        thread.join(timeout=60)
    finally:
        server.stop()
    res = box["res"]
    assert res.code == 0, res
    assert "cannot reach Consul" in res.err and "retrying" in res.err
