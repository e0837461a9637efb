"""The node_base metadata block through the real nft (Debian bookworm nftables 1.0.6): the rendered ruleset
passes `nft -c`, loads (twice: the file is its own reload), and really drops pod traffic to the metadata
service while other sources still reach it. Everything runs in throw-away network namespaces, never in
the host's ruleset."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import require_root, require_tool
from tests.node.test_ansible import render_metadata_block

NFT = ".tools/nftables/bin/nft"
POD_CIDRS = ["10.244.0.0/16", "192.168.128.0/17"]


def in_fresh_netns(*argv: str) -> subprocess.CompletedProcess:
    unshare = require_tool("unshare", "/usr/bin/unshare")
    return subprocess.run([unshare, "--net", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("pod_cidr", POD_CIDRS)
def test_nft_accepts_the_rendered_metadata_block(tmp_path, pod_cidr):
    require_root('network namespaces')
    nft = require_tool("nft", NFT)
    rules = tmp_path / "metadata-block.nft"
    rules.write_text(render_metadata_block(tmp_path, pod_cidr))
    proc = in_fresh_netns(nft, "-c", "-f", str(rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nft_check_really_parses(tmp_path):
    require_root('network namespaces')
    nft = require_tool("nft", NFT)
    rules = tmp_path / "metadata-block.nft"
    rules.write_text(render_metadata_block(tmp_path, "10.244.0.0/16").replace("10.244.0.0/16", "10.244.0.0/33"))
    proc = in_fresh_netns(nft, "-c", "-f", str(rules))
    assert proc.returncode != 0
    assert "Prefix length 33 is invalid" in proc.stderr


def test_reloading_the_block_is_idempotent(tmp_path):
    """The boot unit loads the file on every start: loading it twice leaves exactly one table and one rule."""
    require_root('network namespaces')
    nft = require_tool("nft", NFT)
    rules = tmp_path / "metadata-block.nft"
    rules.write_text(render_metadata_block(tmp_path, "10.244.0.0/16"))
    proc = in_fresh_netns("sh", "-c", '"$0" -f "$1" && "$0" -f "$1" && "$0" list ruleset', nft, str(rules))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("table ip k8s_metadata_block") == 1
    assert proc.stdout.count("drop") == 1
    assert "ip saddr 10.244.0.0/16 ip daddr 169.254.169.254 counter packets 0 bytes 0 drop" in proc.stdout


CONNECT = """
import socket, sys, time
source, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("169.254.169.254", 80), timeout=1, source_address=(source, 0)).close()
        print("connected")
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            print(type(exc).__name__)
            break
        time.sleep(0.2)
"""


@pytest.mark.safety("exposure")
def test_pod_traffic_to_the_metadata_service_is_dropped(tmp_path):
    """A 'node' namespace with the block loaded and a listener on 169.254.169.254:80, and a 'pod' namespace
    routed through it: from a pod-CIDR source the connection times out, from another source it connects."""
    require_root('network namespaces')
    nft = require_tool("nft", NFT)
    ip = require_tool("ip", "/usr/sbin/ip", "/sbin/ip")
    rules = tmp_path / "metadata-block.nft"
    rules.write_text(render_metadata_block(tmp_path, "10.244.0.0/16"))
    node, pod = f"mdb{os.getpid()}-node", f"mdb{os.getpid()}-pod"

    def run(*args: str) -> str:
        return subprocess.run([ip, *args], check=True, capture_output=True, text=True, timeout=30).stdout

    server = None
    run("netns", "add", node)
    try:
        run("netns", "add", pod)
        run("-n", node, "link", "set", "lo", "up")
        run("-n", pod, "link", "set", "lo", "up")
        run("-n", node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        for ns, host in ((node, "1"), (pod, "5")):
            run("-n", ns, "addr", "add", f"10.244.0.{host}/16", "dev", "eth0")
            run("-n", ns, "addr", "add", f"192.0.2.{host}/24", "dev", "eth0")
            run("-n", ns, "link", "set", "eth0", "up")
        run("-n", node, "addr", "add", "169.254.169.254/32", "dev", "lo")
        run("-n", pod, "route", "add", "169.254.169.254/32", "via", "10.244.0.1")
        proc = subprocess.run([ip, "netns", "exec", node, nft, "-f", str(rules)], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, proc.stderr
        server = subprocess.Popen([ip, "netns", "exec", node, sys.executable, "-m", "http.server", "--bind",
                                   "169.254.169.254", "80"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def connect(source: str, wait: float) -> str:
            return subprocess.run([ip, "netns", "exec", pod, sys.executable, "-c", CONNECT, source, str(wait)],
                                  capture_output=True, text=True, timeout=60).stdout.strip()

        # The other source first: proves the listener is up and the path works.
        assert connect("192.0.2.5", 10) == "connected"
        assert connect("10.244.0.5", 2) == "TimeoutError"
        counters = subprocess.run([ip, "netns", "exec", node, nft, "list", "table", "ip", "k8s_metadata_block"],
                                  capture_output=True, text=True, timeout=30).stdout
        packets = int(counters.split("counter packets ")[1].split()[0])
        assert packets >= 1
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for ns in (pod, node):
            subprocess.run([ip, "netns", "del", ns], capture_output=True, timeout=30)
