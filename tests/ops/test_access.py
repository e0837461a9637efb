from __future__ import annotations

import os
import stat

import pytest

from ops import access, kubeconfig
from ops.access import AccessError, SshTarget


@pytest.mark.parametrize("given,want", [
    ("203.0.113.10", "https://203.0.113.10:6443"),
    ("203.0.113.10:443", "https://203.0.113.10:443"),
    ("https://api.example.org", "https://api.example.org:6443"),
    ("https://api.example.org:8443/", "https://api.example.org:8443"),
])
def test_api_url(given, want):
    assert access.api_url(given) == want


def test_api_url_refuses_plain_http():
    with pytest.raises(AccessError, match="not https"):
        access.api_url("http://203.0.113.10:6443")


def test_api_endpoint_precedence():
    class Net:
        api_vip = "10.20.0.10"

    class S:
        network = Net()

    assert access.resolve_api_endpoint("198.51.100.1", {"api_endpoint": "203.0.113.10"}, S()) == "https://198.51.100.1:6443"
    assert access.resolve_api_endpoint(None, {"api_endpoint": "203.0.113.10"}, S()) == "https://203.0.113.10:6443"
    assert access.resolve_api_endpoint(None, {}, S()) == "https://10.20.0.10:6443"


@pytest.mark.parametrize("text,host,user,port,jump", [
    ("203.0.113.5", "203.0.113.5", None, None, "203.0.113.5"),
    ("debian@203.0.113.5:2222", "203.0.113.5", "debian", 2222, "debian@203.0.113.5:2222"),
    ("[2001:db8::5]:22", "2001:db8::5", None, 22, "[2001:db8::5]:22"),
])
def test_ssh_target(text, host, user, port, jump):
    t = SshTarget.parse(text)
    assert (t.host, t.user, t.port, t.jump_spec()) == (host, user, port, jump)


def test_ssh_target_default_user_and_bad_input():
    assert SshTarget.parse("b.example", default_user="ubuntu").ssh_args() == ["-l", "ubuntu", "b.example"]
    with pytest.raises(AccessError):
        SshTarget.parse("user@")


def test_bastion_from_flag_or_output(tmp_path, monkeypatch):
    assert access.resolve_bastion("198.51.100.7", {"bastion_address": "203.0.113.5"}, "dev") == "198.51.100.7"
    assert access.resolve_bastion(None, {"bastion_address": "203.0.113.5"}, "dev") == "203.0.113.5"
    with pytest.raises(AccessError, match=r"no bastion address: pass --bastion HOST, or deploy the stack first .*cdktf.out/stacks/dev"):
        access.resolve_bastion(None, {}, "dev")


def test_terraform_outputs_without_a_stack_is_empty(tmp_path, monkeypatch):
    monkeypatch.setattr(access, "stack_dir", lambda env: tmp_path / "absent")
    assert access.terraform_outputs("dev") == {}


def test_remote_command_quotes_the_path():
    cmd = kubeconfig.remote_command("/etc/kubernetes/admin.conf")
    assert cmd == ('if [ "$(id -u)" = 0 ]; then cat -- \'/etc/kubernetes/admin.conf\'; '
                   'else sudo -n cat -- \'/etc/kubernetes/admin.conf\'; fi')
    assert "'\\''" in kubeconfig.remote_command("/tmp/it's")


def test_rewrite_rejects_non_kubeconfig_without_echoing_it():
    secret = b"client-key-data: SECRET-VALUE\n  bad: [indent"
    with pytest.raises(kubeconfig.KubeconfigError) as exc:
        kubeconfig.rewrite_server(secret, "https://203.0.113.10:6443")
    assert "SECRET" not in str(exc.value)
    with pytest.raises(kubeconfig.KubeconfigError, match="no clusters"):
        kubeconfig.rewrite_server(b"kind: Config\nusers: []\n", "https://x:6443")


def test_write_private_replaces_a_world_readable_file(tmp_path):
    target = tmp_path / "kc"
    target.write_text("old")
    target.chmod(0o666)
    old_inode = target.stat().st_ino
    kubeconfig.write_private(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != old_inode  # a new file, renamed over; never a chmod of the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kc"]
