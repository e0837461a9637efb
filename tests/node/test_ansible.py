"""The playbooks and roles through the real Ansible tools: ansible-lint (production), syntax check,
and the parts that can run on any machine (rendered metadata block, label/taint shaping)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

ANSIBLE = ROOT / "ansible"
PLAYBOOKS = ("control-plane.yml", "worker.yml", "bastion.yml")
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    # ansible-core and ansible-lint are pinned in requirements.txt and live beside this interpreter.
    return str(VENV_BIN / name)


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_HOME": str(tmp_path / "home"),
            "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles")}


@pytest.mark.slow
def test_ansible_lint_production_profile_is_clean(tmp_path):
    env = ansible_env(tmp_path)
    env.pop("ANSIBLE_CONFIG")
    proc = subprocess.run([tool("ansible-lint"), "--profile", "production", "--nocolor", "ansible/"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failure(s), 0 warning(s)" in proc.stdout + proc.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook, tmp_path):
    proc = subprocess.run([tool("ansible-playbook"), "--syntax-check", playbook], cwd=ANSIBLE,
                          env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbooks_run_locally(playbook):
    plays = yaml.safe_load((ANSIBLE / playbook).read_text())
    for play in plays:
        assert (play["hosts"], play["connection"]) == ("localhost", "local")


def test_formation_roles_are_tagged():
    for playbook in ("control-plane.yml", "worker.yml"):
        roles = {r["role"]: r.get("tags", []) for r in yaml.safe_load((ANSIBLE / playbook).read_text())[0]["roles"]}
        assert "formation" in roles["k8s_formation"]
    cp = {r["role"]: r.get("tags", []) for r in yaml.safe_load((ANSIBLE / "control-plane.yml").read_text())[0]["roles"]}
    assert "formation" in cp["join_refresher"]


def run_play(tmp_path: Path, tasks: list, extra_vars: dict, vars_files: list[str] = ()) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Test play", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ANSIBLE / f) for f in vars_files], "tasks": tasks}]))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}))
    return subprocess.run([tool("ansible-playbook"), str(playbook), "-e", f"@{extra}"], cwd=tmp_path,
                          env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300)


def render_metadata_block(tmp_path: Path, pod_cidr: str) -> str:
    out = tmp_path / "metadata-block.nft"
    tasks = [{"name": "Render", "ansible.builtin.copy": {
        "dest": str(out), "mode": "0644",
        "content": "{{ lookup('ansible.builtin.template', '%s') }}"
                   % (ANSIBLE / "roles/node_base/templates/metadata-block.nft.j2")}}]
    proc = run_play(tmp_path, tasks, {"pod_cidr": pod_cidr}, ["roles/node_base/defaults/main.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out.read_text()


@pytest.mark.parametrize("pod_cidr", ["10.244.0.0/16", "192.168.128.0/17"])
def test_rendered_metadata_block_drops_pod_traffic_to_the_metadata_service(tmp_path, pod_cidr):
    text = render_metadata_block(tmp_path, pod_cidr)
    rules = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    # Reloadable: the table is declared, deleted and redefined in one file.
    assert rules[:3] == ["table ip k8s_metadata_block", "delete table ip k8s_metadata_block",
                         "table ip k8s_metadata_block {"]
    hook = next(r for r in rules if r.startswith("type filter hook"))
    assert re.fullmatch(r"type filter hook prerouting priority -\d+; policy accept;", hook)
    assert int(re.search(r"priority (-\d+)", hook).group(1)) < -300, "must run before conntrack and NAT"
    drops = [r for r in rules if r.endswith("drop")]
    assert drops == [f"ip saddr {pod_cidr} ip daddr 169.254.169.254 counter drop"]


CALICO_UPSTREAM = """\
kind: ConfigMap
data:
  calico_backend: "bird"
---
kind: DaemonSet
spec:
  containers:
    - name: calico-node
      env:
        - name: CALICO_IPV4POOL_IPIP
          value: "Always"
        - name: CALICO_IPV4POOL_VXLAN
          value: "Never"
        # - name: CALICO_IPV4POOL_CIDR
        #   value: "192.168.0.0/16"
      livenessProbe:
        command:
          - /bin/calico-node
          - -felix-live
          - -bird-live
      readinessProbe:
        command:
          - /bin/calico-node
          - -felix-ready
          - -bird-ready
"""


def calico_manifest(tmp_path: Path, encapsulation: str) -> list:
    import base64
    out = tmp_path / "calico.yaml"
    tasks = [{"name": "Render", "ansible.builtin.copy": {"dest": str(out), "mode": "0644",
                                                           "content": "{{ cni_calico_manifest }}"}}]
    proc = run_play(tmp_path, tasks, {
        "cni": {"name": "calico", "version": "v3.30.3", "calico_encapsulation": encapsulation},
        "pod_cidr": "10.244.0.0/16",
        "cni_calico_upstream": {"content": base64.b64encode(CALICO_UPSTREAM.encode()).decode()},
    }, ["roles/cni/defaults/main.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return list(yaml.safe_load_all(out.read_text()))


@pytest.mark.parametrize("encapsulation, ipip, vxlan, backend, bird_checks", [
    ("ipip", "Always", "Never", "bird", True),
    ("vxlan", "Never", "Always", "vxlan", False),
])
def test_calico_manifest_gets_the_cluster_settings(tmp_path, encapsulation, ipip, vxlan, backend, bird_checks):
    config, daemonset = calico_manifest(tmp_path, encapsulation)
    assert config["data"]["calico_backend"] == backend
    node = daemonset["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in node["env"]}
    assert env == {"CALICO_IPV4POOL_IPIP": ipip, "CALICO_IPV4POOL_VXLAN": vxlan,
                   "CALICO_IPV4POOL_CIDR": "10.244.0.0/16"}
    assert ("-bird-live" in node["livenessProbe"]["command"]) is bird_checks
    assert ("-bird-ready" in node["readinessProbe"]["command"]) is bird_checks
    assert "-felix-live" in node["livenessProbe"]["command"]


CONTAINERD_1_7_DEFAULT = """\
version = 2
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = ""
      SystemdCgroup = false
"""

CONTAINERD_2_DEFAULT = """\
version = 3
[plugins]
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.10'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = ''
    SystemdCgroup = false
"""


@pytest.mark.parametrize("default, image_line", [
    (CONTAINERD_1_7_DEFAULT, 'sandbox_image = "registry.k8s.io/pause:3.10.1"'),
    (CONTAINERD_2_DEFAULT, "sandbox = 'registry.k8s.io/pause:3.10.1'"),
])
def test_containerd_config_uses_systemd_cgroups(tmp_path, default, image_line):
    out = tmp_path / "config.toml"
    tasks = [{"name": "Render", "ansible.builtin.copy": {"dest": str(out), "mode": "0644",
                                                           "content": "{{ containerd_config }}"}}]
    proc = run_play(tmp_path, tasks, {"containerd_default_config": {"stdout": default}},
                    ["roles/containerd/defaults/main.yml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before, after = default.splitlines(), out.read_text().splitlines()
    assert len(after) == len(before)
    # Exactly two lines change; everything else stays at the packaged default.
    changed = [new.strip() for old, new in zip(before, after) if old != new]
    assert changed == [image_line, "SystemdCgroup = true"]
