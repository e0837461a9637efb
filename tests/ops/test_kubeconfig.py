from __future__ import annotations

import base64
import socket
import stat
import uuid

import pytest
import yaml

from ops import access
from tests.consul_fixture import ConsulServer
from tests.helpers import require_root, require_tool
from tests.ops import formation_records as fr
from tests.ops.conftest import STATUS, run_cli
from tests.ops.netlab import start_lab

SECRET_MARK = f"LEAKCHECK-{uuid.uuid4()}"


def _admin_conf() -> bytes:
    """Shaped like kubeadm's admin.conf; the key carries a marker the tests look for in all output."""
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "certificate-authority-data": b64("-----BEGIN CERTIFICATE-----\nMIIC-ca\n-----END CERTIFICATE-----\n"),
            "server": "https://10.20.0.10:6443"}}],
        "contexts": [{"name": "kubernetes-admin@kubernetes",
                      "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}],
        "current-context": "kubernetes-admin@kubernetes",
        "preferences": {},
        "users": [{"name": "kubernetes-admin", "user": {
            "client-certificate-data": b64("-----BEGIN CERTIFICATE-----\nMIIC-admin\n-----END CERTIFICATE-----\n"),
            "client-key-data": b64(f"-----BEGIN RSA PRIVATE KEY-----\n{SECRET_MARK}\n-----END RSA PRIVATE KEY-----\n"),
        }}],
    }
    return yaml.safe_dump(doc).encode()


ADMIN_CONF = _admin_conf()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    for tool in ("unshare", "nsenter", "ip"):
        require_tool(tool)
    require_root("network and mount namespaces for the sshd lab")
    sshd = require_tool("sshd", ".tools/openssh/bin/sshd")
    ssh = require_tool("ssh", ".tools/openssh/usr/bin/ssh")
    keygen = require_tool("ssh-keygen", ".tools/openssh/usr/bin/ssh-keygen")
    lab = start_lab(tmp_path_factory.mktemp("sshlab"), sshd, ssh, keygen, ADMIN_CONF, "dev-cp-1")
    yield lab
    lab.stop()


def _ssh_args(lab) -> list[str]:
    return ["--bastion", lab.bastion.address, "--ssh-config", str(lab.ssh_config), "--ssh-binary", lab.ssh]


def _ssh_banner(addr: str, port: int) -> bytes:
    """The first bytes a server sends; b"" when nothing SSH-like answers (this machine's uplink may
    accept any outbound TCP connection and then stay silent)."""
    try:
        with socket.create_connection((addr, port), timeout=2) as sock:
            sock.settimeout(2)
            return sock.recv(64)
    except OSError:
        return b""


def test_control_plane_is_only_reachable_through_the_bastion(lab):
    assert not _ssh_banner(lab.cp.address, 22).startswith(b"SSH-")
    assert _ssh_banner(lab.bastion.address, 22).startswith(b"SSH-2.0-OpenSSH_9.2")


def test_kubeconfig_fetched_via_jump_host_and_written_0600(lab, tmp_path, capfd):
    target = tmp_path / "dev.kubeconfig"
    target.write_text("stale\n")
    target.chmod(0o644)  # a world-readable file in the way must not lend its mode to the credential
    res = run_cli("kubeconfig", "dev", "-o", str(target), "--api-endpoint", "203.0.113.10", *_ssh_args(lab))
    assert res.code == 0, res
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    got = yaml.safe_load(target.read_bytes())
    want = yaml.safe_load(ADMIN_CONF)
    assert got["clusters"][0]["cluster"]["server"] == "https://203.0.113.10:6443"
    want["clusters"][0]["cluster"]["server"] = "https://203.0.113.10:6443"
    assert got == want  # nothing else changed
    assert res.out == (f"wrote {target} (mode 0600) from dev-cp-1 via {lab.bastion.address}; "
                       "server: https://203.0.113.10:6443\n")
    # The credential never reached the terminal, neither from us nor from ssh.
    captured = capfd.readouterr()
    key_b64 = want["users"][0]["user"]["client-key-data"]
    for stream in (res.out, res.err, captured.out, captured.err):
        assert SECRET_MARK not in stream and key_b64 not in stream
    # The node saw the login come from the bastion's inner address: the jump host was used.
    assert "Accepted publickey for root from " + lab.cp.address.rsplit(".", 1)[0] + ".5" in lab.cp.log()
    assert not list(tmp_path.glob(".dev.kubeconfig.*"))  # no temp file left behind


def test_kubeconfig_defaults_to_settings_vip_and_first_cp(lab, tmp_path, monkeypatch):
    monkeypatch.setattr(access, "stack_dir", lambda env: tmp_path / "no-such-stack")
    target = tmp_path / "kc"
    res = run_cli("kubeconfig", "dev", "-o", str(target), *_ssh_args(lab))
    assert res.code == 0, res
    assert "from dev-cp-1 " in res.out
    assert yaml.safe_load(target.read_bytes())["clusters"][0]["cluster"]["server"] == "https://10.20.0.10:6443"


def test_kubeconfig_unknown_node_fails_without_writing(lab, tmp_path):
    target = tmp_path / "kc"
    res = run_cli("kubeconfig", "dev", "-o", str(target), "--node", "dev-cp-9",
                  "--api-endpoint", "203.0.113.10", *_ssh_args(lab))
    assert res.code == 3
    assert res.err.startswith(f"kubeconfig: could not read /etc/kubernetes/admin.conf on dev-cp-9 via {lab.bastion.address}: ")
    assert not target.exists()


def test_kubeconfig_needs_a_bastion(tmp_path, monkeypatch):
    monkeypatch.setattr(access, "stack_dir", lambda env: tmp_path / "no-such-stack")
    res = run_cli("kubeconfig", "dev", "-o", str(tmp_path / "kc"), "--api-endpoint", "203.0.113.10")
    assert res.code == 3
    assert res.err.startswith("kubeconfig: no bastion address: pass --bastion HOST, or deploy the stack first")


def test_status_and_wait_through_a_bastion_tunnel(lab, consul_bin, monkeypatch):
    """Bastion mode: Consul listens on the bastion's private address (settings: 10.20.0.5:8500), which
    only the bastion can reach; status/wait get there through `ssh -N -L` via the bastion."""
    from stacks.settings import load_settings

    private = load_settings("dev").network.bastion_ip
    bpid = str(lab.bastion.proc.pid)
    import subprocess
    subprocess.run(["nsenter", "-t", bpid, "-n", "ip", "addr", "add", f"{private}/32", "dev", "lo"],
                   check=True, capture_output=True)
    with ConsulServer(consul_bin, lab.root / "consul", bind=private, http_port=8500,
                      prefix_cmd=("nsenter", "-t", bpid, "-n"),
                      client_addrs=(private, lab.bastion.address)) as server:
        server.operator_token = server.create_read_token("k8s-formation/dev/")
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", server.operator_token)
        fr.write_all(server, STATUS, fr.ALL_JOINED)
        res = run_cli("status", "dev", *_ssh_args(lab))
        assert res.code == 0, res
        assert res.out.splitlines()[2].split()[:4] == ["dev-cp-1", "control-plane", "-", "joined"]
        res = run_cli("wait", "dev", "--timeout", "20", *_ssh_args(lab))
        assert res.code == 0, res


def test_tunnel_failure_is_reported(lab, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "x")
    res = run_cli("status", "dev", "--bastion", f"{lab.bastion.address}:2", "--ssh-config", str(lab.ssh_config),
                  "--ssh-binary", lab.ssh)
    assert res.code == 3
    assert res.err.startswith(f"status: SSH tunnel to 10.20.0.5:8500 via {lab.bastion.address}:2 failed: ")
