"""The api_vip role: the keepalived configuration it renders for each staging control-plane node, checked by
the real keepalived (`--config-test`), and real VRRP between two keepalived instances in network namespaces."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stacks.node_facts import node_facts
from stacks.settings import load_settings
from tests.helpers import ROOT, require_root, require_tool
from tests.node.test_ansible import ANSIBLE, ansible_env, tool

KEEPALIVED = ".tools/keepalived/bin/keepalived"


def staging_facts() -> dict:
    return node_facts(load_settings(str(ROOT / "stacks" / "staging.yaml")))


def run_role(tmp_path: Path, facts: dict, interface: str, **role_vars) -> subprocess.CompletedProcess:
    """Runs the role's configuration tasks (tag `api_vip_config`) once per control-plane node, each node an
    inventory host with its own `node_name`, exactly as the bootstrap passes node.json."""
    names = list(facts["control_plane_addresses"])
    out = tmp_path / "rendered"
    out.mkdir()
    inventory = {"all": {"hosts": {name: {"ansible_connection": "local", "node_name": name,
                                          "api_vip_config_file": str(out / f"{name}.conf")} for name in names}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "Render the API VIP configuration", "hosts": "all", "gather_facts": False,
        "roles": [{"role": "api_vip"}]}]))
    extra = {"ansible_python_interpreter": sys.executable, **facts, "api_vip_interface": interface,
             "api_vip_owner": str(os.getuid()), "api_vip_group": str(os.getgid()), "api_vip_manage_service": False,
             **role_vars}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    return subprocess.run([tool("ansible-playbook"), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
                           "--tags", "api_vip_config", "-e", f"@{tmp_path / 'extra.json'}"],
                          cwd=tmp_path, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300)


def render_configs(tmp_path: Path, facts: dict, interface: str, **role_vars) -> dict[str, str]:
    proc = run_role(tmp_path, facts, interface, **role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "rendered"
    return {name: (out / f"{name}.conf").read_text() for name in facts["control_plane_addresses"]
            if (out / f"{name}.conf").exists()}


def block(text: str, keyword: str) -> list[str]:
    """The lines inside `keyword { ... }` (the blocks this template writes are not nested)."""
    match = re.search(r"^\s*" + re.escape(keyword) + r" \{\n(.*?)^\s*\}", text, re.M | re.S)
    assert match, f"no {keyword} block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def setting(lines: list[str], key: str) -> str:
    values = [line.split(None, 1)[1] if " " in line else "" for line in lines if line.split()[0] == key]
    assert len(values) == 1, (key, lines)
    return values[0]


def config_test(conf: Path, interface: str) -> subprocess.CompletedProcess:
    """`keepalived --config-test` in a fresh network namespace that has the node's interface.

    keepalived is pid 1 of a fresh pid namespace: Debian bookworm's 2.2.7 otherwise SIGTERMs itself during
    --config-test when `script_user` is set (upstream issues 2587/2617, fixed in 2.2.8, Ubuntu 24.04's).
    """
    keepalived = require_tool("keepalived", KEEPALIVED)
    ip = require_tool("ip", "/usr/sbin/ip", "/sbin/ip")
    unshare = require_tool("unshare", "/usr/bin/unshare")
    script = f'{ip} link add "$1" type veth peer name vip-peer && exec "$0" --config-test --use-file "$2"'
    return subprocess.run([unshare, "--net", "--pid", "--fork", "--kill-child", "sh", "-c", script,
                           keepalived, interface, str(conf)], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def staging_configs(tmp_path_factory) -> dict[str, str]:
    return render_configs(tmp_path_factory.mktemp("staging"), staging_facts(), "ens3")


def test_every_staging_control_plane_gets_a_unicast_vrrp_instance(staging_configs):
    facts = staging_facts()
    addresses = facts["control_plane_addresses"]
    assert facts["api_endpoint"]["type"] == "vip" and len(addresses) == 3
    assert set(staging_configs) == set(addresses)
    priorities = {}
    for name, text in staging_configs.items():
        instance = block(text, "vrrp_instance api")
        assert setting(instance, "interface") == "ens3"
        assert setting(instance, "unicast_src_ip") == addresses[name]
        assert sorted(block(text, "unicast_peer")) == sorted(ip for n, ip in addresses.items() if n != name)
        prefix = facts["node_cidr"].split("/")[1]
        assert block(text, "virtual_ipaddress") == [f"{facts['api_endpoint']['host']}/{prefix} dev ens3"]
        assert block(text, "track_script") == ["apiserver"]
        code = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if line.startswith(("authentication", "auth_", "mcast"))]
        script = block(text, "vrrp_script apiserver")
        assert setting(script, "script") == '"/usr/bin/curl -fsk --max-time 2 https://127.0.0.1:6443/healthz"'
        weight = int(setting(script, "weight"))
        assert weight > 0
        assert "init_fail" in script, "a restarted node must not claim a healthy apiserver before checking"
        priorities[name] = int(setting(instance, "priority"))
    assert len(set(priorities.values())) == 3
    # Any node with a healthy apiserver outranks every node without one.
    assert min(priorities.values()) + weight > max(priorities.values())
    assert max(priorities.values()) + weight < 255


@pytest.mark.parametrize("node", ["staging-cp-1", "staging-cp-2", "staging-cp-3"])
def test_real_keepalived_accepts_the_rendered_config(staging_configs, node, tmp_path):
    require_root('network and pid namespaces')
    conf = tmp_path / "keepalived.conf"
    conf.write_text(staging_configs[node])
    proc = config_test(conf, "ens3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == "", "warnings mean keepalived dropped part of the configuration"


def test_real_keepalived_rejects_a_broken_config(staging_configs, tmp_path):
    """The config test really parses: a malformed source address is an error."""
    require_root('network and pid namespaces')
    conf = tmp_path / "keepalived.conf"
    conf.write_text(re.sub(r"unicast_src_ip \S+", "unicast_src_ip 10.30.0.300", staging_configs["staging-cp-1"]))
    proc = config_test(conf, "ens3")
    assert proc.returncode != 0
    assert "malformed src address" in proc.stderr


def test_octavia_endpoint_renders_nothing(tmp_path):
    facts = staging_facts()
    facts["api_endpoint"] = {**facts["api_endpoint"], "type": "octavia"}
    assert render_configs(tmp_path, facts, "ens3") == {}


def test_a_node_missing_from_the_control_plane_is_refused(tmp_path):
    facts = staging_facts()
    facts["control_plane_addresses"] = {"other-cp-1": "10.30.0.11"}
    proc = run_role(tmp_path, facts, "ens3", node_name="staging-cp-1")
    assert proc.returncode != 0
    assert "api_vip_node_name in api_vip_peers" in proc.stdout
    assert not (tmp_path / "rendered" / "other-cp-1.conf").exists()


def test_role_runs_before_formation_and_not_with_formation_tags(tmp_path):
    plays = yaml.safe_load((ANSIBLE / "control-plane.yml").read_text())
    order = [r["role"] for r in plays[0]["roles"]]
    assert order.index("api_vip") < order.index("k8s_formation")

    def tasks(tags: str) -> str:
        proc = subprocess.run([tool("ansible-playbook"), "--list-tasks", "--tags", tags, "control-plane.yml"],
                              cwd=ANSIBLE, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "api_vip :" not in tasks("formation")
    listed = tasks("api_vip")
    assert "api_vip : Configure the VRRP instance for the API VIP" in listed
    assert "k8s_formation :" not in listed


# --- real VRRP between two namespaces -------------------------------------------------------------------

APISERVER = """
import http.server, ssl, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 6443), Health)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""

VIP = "10.30.0.10"


class Lan:
    """A bridge in its own namespace and one namespace per node, each with `eth0` on the bridge."""

    def __init__(self, ip: str, prefix: str):
        self.ip, self.prefix = ip, prefix
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str) -> str:
        return subprocess.run([self.ip, *args], check=True, capture_output=True, text=True, timeout=30).stdout

    def add_namespace(self, name: str) -> str:
        ns = f"{self.prefix}{name}"
        self.run("netns", "add", ns)
        self.namespaces.append(ns)
        self.run("-n", ns, "link", "set", "lo", "up")
        return ns

    def start(self, ns: str, argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            proc = subprocess.Popen([self.ip, "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole node: keepalived and its VRRP child
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        for ns in self.namespaces:
            subprocess.run([self.ip, "netns", "del", ns], capture_output=True, timeout=30)


def holders(lan: Lan, nodes: dict[str, str]) -> set[str]:
    return {name for name, ns in nodes.items()
            if f" {VIP}/22 " in lan.run("-n", ns, "-4", "-o", "addr", "show", "dev", "eth0")}


def wait_for_holder(lan: Lan, nodes: dict[str, str], expected: set[str], timeout: float = 20) -> None:
    """Waits until exactly `expected` hold the VIP, then requires that to last 2 s (no flapping)."""
    deadline = time.monotonic() + timeout
    stable_since = None
    while time.monotonic() < deadline:
        if holders(lan, nodes) == expected:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 2:
                return
        else:
            stable_since = None
        time.sleep(0.2)
    raise AssertionError(f"VIP holders {holders(lan, nodes)}, expected {expected}")


def test_two_keepalived_nodes_hand_the_vip_to_the_healthy_one_and_fail_over(tmp_path):
    """The kubeadm-init story with the rendered configs: nobody healthy -> the higher base priority holds the
    VIP; the apiserver comes up on the other (init) node -> the VIP moves there; that node dies -> the VIP
    comes back. Checks use the role's own curl against a TLS endpoint on each namespace's 127.0.0.1:6443."""
    require_root('network and pid namespaces')
    keepalived = require_tool("keepalived", KEEPALIVED)
    ip = require_tool("ip", "/usr/sbin/ip", "/sbin/ip")
    openssl = require_tool("openssl", "/usr/bin/openssl")
    require_tool("curl", "/usr/bin/curl")
    facts = staging_facts()
    facts["control_plane_addresses"] = {"t-cp-1": "10.30.0.11", "t-cp-2": "10.30.0.12"}
    configs = render_configs(tmp_path, facts, "eth0")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=apiserver", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    (tmp_path / "apiserver.py").write_text(APISERVER)

    lan = Lan(ip, f"kav{os.getpid()}-")
    try:
        bridge = lan.add_namespace("lan")
        lan.run("-n", bridge, "link", "add", "br0", "type", "bridge")
        lan.run("-n", bridge, "link", "set", "br0", "up")
        nodes, keepalivers = {}, {}
        for index, (name, address) in enumerate(facts["control_plane_addresses"].items()):
            ns = nodes[name] = lan.add_namespace(name)
            lan.run("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{index}", "netns", bridge)
            lan.run("-n", bridge, "link", "set", f"port{index}", "master", "br0", "up")
            lan.run("-n", ns, "addr", "add", f"{address}/22", "dev", "eth0")
            lan.run("-n", ns, "link", "set", "eth0", "up")
            conf = tmp_path / f"{name}.conf"
            conf.write_text(configs[name])
            run = tmp_path / name
            run.mkdir()
            keepalivers[name] = lan.start(ns, [
                keepalived, "--dont-fork", "--log-console", "--vrrp", "--use-file", str(conf),
                "--pid", str(run / "keepalived.pid"), "--vrrp_pid", str(run / "vrrp.pid"),
                "--checkers_pid", str(run / "checkers.pid")], tmp_path / f"{name}.log")

        try:
            # No apiserver anywhere yet: exactly one node, the higher base priority, holds the VIP.
            wait_for_holder(lan, nodes, {"t-cp-1"})
            # The init node's apiserver becomes healthy: the VIP follows it while kubeadm init runs.
            lan.start(nodes["t-cp-2"], [sys.executable, str(tmp_path / "apiserver.py"), str(tmp_path / "cert.pem"),
                                        str(tmp_path / "key.pem")], tmp_path / "apiserver.log")
            wait_for_holder(lan, nodes, {"t-cp-2"})
            # The holder dies (keepalived killed, node cut off): the survivor takes the VIP.
            lan.kill(keepalivers["t-cp-2"])
            lan.run("-n", bridge, "link", "set", "port1", "down")
            wait_for_holder(lan, {"t-cp-1": nodes["t-cp-1"]}, {"t-cp-1"})
        except AssertionError:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
            raise AssertionError(logs) from None
    finally:
        lan.close()
