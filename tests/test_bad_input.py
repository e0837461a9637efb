"""Bad settings, table-driven, through the real entry point (`python main.py`).

Each case must exit non-zero with exactly one stderr line naming the file, the field
path and what is allowed, with no traceback, and must leave an earlier cdktf.out as it was.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_synth

VALID = yaml.safe_load((Path(__file__).parent.parent / "stacks" / "dev.yaml").read_text())
DELETE = object()


def mutate(changes: dict) -> dict:
    data = copy.deepcopy(VALID)
    for path, value in changes.items():
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = int(parts[-1]) if isinstance(node, list) else parts[-1]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


# (case id, file content: dict of changes or raw text, field path in the message, what is allowed)
CASES = [
    ("empty-file", "", "(top level)", "mapping"),
    ("yaml-syntax-error", "cluster: {name: dev\n", "(yaml)", "line"),
    ("top-level-list", "- a\n- b\n", "(top level)", "mapping"),
    ("top-level-scalar", "42\n", "(top level)", "mapping"),
    ("duplicate-key", yaml.safe_dump(VALID) + "cluster: {name: x}\n", "(yaml)", "duplicate key"),
    ("unknown-top-level-key", {"clutser": {"name": "dev"}}, "clutser", "unknown key"),
    ("misspelt-nested-key", {"control_plane.cuont": 3}, "control_plane.cuont", "unknown key"),
    ("unknown-pool-key", {"worker_pools.0.flavour": "m1.large"}, "worker_pools[0].flavour", "unknown key"),
    ("missing-cluster", {"cluster": DELETE}, "cluster", "required"),
    ("missing-cluster-name", {"cluster.name": DELETE}, "cluster.name", "required"),
    ("cluster-name-uppercase", {"cluster.name": "Dev"}, "cluster.name", "pattern"),
    ("cluster-name-too-long", {"cluster.name": "a" * 40}, "cluster.name", "pattern"),
    ("cluster-name-wrong-type", {"cluster.name": 12}, "cluster.name", "string"),
    ("missing-image", {"openstack.image": DELETE}, "openstack.image", "required"),
    ("empty-key-pair", {"openstack.key_pair": ""}, "openstack.key_pair", "at least 1"),
    ("no-availability-zones", {"openstack.availability_zones": []}, "openstack.availability_zones", "at least 1"),
    ("negative-volume-size", {"openstack.boot_volume_size_gb": {"worker": -5}}, "openstack.boot_volume_size_gb.worker", "greater than or equal to 0"),
    ("invalid-node-cidr", {"network.node_cidr": "10.20.0.0/33"}, "network.node_cidr", "valid CIDR"),
    ("node-cidr-host-bits", {"network.node_cidr": "10.20.0.1/24"}, "network.node_cidr", "host bits"),
    ("node-cidr-too-small", {"network.node_cidr": "10.20.0.0/29"}, "network.node_cidr", "/28"),
    ("ipv6-pod-cidr", {"network.pod_cidr": "fd00::/64"}, "network.pod_cidr", "IPv4"),
    ("garbage-service-cidr", {"network.service_cidr": "banana"}, "network.service_cidr", "valid CIDR"),
    ("pod-overlaps-node", {"network.pod_cidr": "10.20.0.0/16"}, "network.pod_cidr", "disjoint"),
    ("service-overlaps-pod", {"network.service_cidr": "10.244.128.0/20"}, "network.service_cidr", "disjoint"),
    ("service-overlaps-node", {"network.service_cidr": "10.20.0.0/20"}, "network.service_cidr", "disjoint"),
    ("bad-dns-server", {"network.dns_servers": ["1.1.1.1", "dns.example"]}, "network.dns_servers", "IPv4 address"),
    ("unpinned-k8s-version", {"kubernetes.version": "1.34"}, "kubernetes.version", "x.y.z"),
    ("unsupported-k8s-minor", {"kubernetes.version": "1.29.4"}, "kubernetes.version", "allowed minors"),
    ("unknown-cni", {"kubernetes.cni": {"name": "flannel", "version": "v0.26.0"}}, "kubernetes.cni.name", "'calico' or 'cilium'"),
    ("unsupported-calico-version", {"kubernetes.cni.version": "v3.20.0"}, "kubernetes.cni.version", "allowed"),
    ("cilium-with-calico-version", {"kubernetes.cni": {"name": "cilium", "version": "v3.30.3"}}, "kubernetes.cni.version", "allowed"),
    ("unknown-endpoint-type", {"kubernetes.api_endpoint.type": "haproxy"}, "kubernetes.api_endpoint.type", "'octavia' or 'vip'"),
    ("short-lb-timeout", {"kubernetes.api_endpoint.idle_timeout_ms": 50000}, "kubernetes.api_endpoint.idle_timeout_ms", "greater than or equal to 3600000"),
    ("ssh-open-to-world", {"access.ssh_allowed_cidrs": ["0.0.0.0/0"]}, "access.ssh_allowed_cidrs", "allow_world"),
    ("api-open-to-world", {"access.api_allowed_cidrs": ["10.0.0.0/8", "0.0.0.0/0"]}, "access.api_allowed_cidrs", "allow_world"),
    ("no-ssh-cidrs", {"access.ssh_allowed_cidrs": []}, "access.ssh_allowed_cidrs", "at least 1"),
    ("invalid-ssh-cidr", {"access.ssh_allowed_cidrs": ["203.0.113.0/40"]}, "access.ssh_allowed_cidrs", "valid CIDR"),
    ("even-control-plane", {"control_plane.count": 2}, "control_plane.count", "1, 3 or 5"),
    ("zero-control-plane", {"control_plane.count": 0}, "control_plane.count", "1, 3 or 5"),
    ("string-control-plane-count", {"control_plane.count": "three"}, "control_plane.count", "1, 3 or 5"),
    ("bad-server-group-policy", {"control_plane.server_group_policy": "affinity"}, "control_plane.server_group_policy", "anti-affinity"),
    ("no-worker-pools", {"worker_pools": []}, "worker_pools", "at least 1"),
    ("duplicate-pool-names", {"worker_pools": [{"name": "a", "count": 1, "flavor": "f"}, {"name": "a", "count": 2, "flavor": "f"}]}, "worker_pools", "unique"),
    ("invalid-pool-name", {"worker_pools.0.name": "General_Pool"}, "worker_pools[0].name", "pattern"),
    ("reserved-pool-name", {"worker_pools.0.name": "cp"}, "worker_pools", "reserved"),
    ("negative-worker-count", {"worker_pools.0.count": -1}, "worker_pools[0].count", "greater than or equal to 0"),
    ("worker-count-float", {"worker_pools.0.count": 2.5}, "worker_pools[0].count", "integer"),
    ("bad-taint", {"worker_pools.0.taints": ["dedicated=gpu"]}, "worker_pools[0].taints", "NoSchedule"),
    ("bad-label-key", {"worker_pools.0.labels": {"-bad": "x"}}, "worker_pools[0].labels", "label key"),
    ("label-node-restriction", {"worker_pools.0.labels": {"node-role.kubernetes.io/worker": ""}}, "worker_pools[0].labels", "NodeRestriction"),
    ("pools-not-a-list", {"worker_pools": {"name": "general"}}, "worker_pools", "list"),
    ("external-consul-without-addresses", {"consul.mode": "external"}, "consul.addresses", "at least one address"),
    ("bastion-consul-with-addresses", {"consul.addresses": ["10.0.0.1:8500"]}, "consul.addresses", "bastion mode"),
    ("bad-consul-address", {"consul": {"mode": "external", "addresses": ["consul.example"]}}, "consul.addresses", "host:port"),
    ("unknown-consul-mode", {"consul.mode": "embedded"}, "consul.mode", "'bastion' or 'external'"),
    ("unknown-token-source", {"consul.token": {"type": "file", "path": "token.txt"}}, "consul.token", "'variable', 'barbican'"),
    ("barbican-without-name", {"consul.token": {"type": "barbican"}}, "consul.token.secret_name", "required"),
    ("unknown-backend", {"state_backend": {"type": "gcs"}}, "state_backend", "'local', 'consul', 's3'"),
    ("s3-without-bucket", {"state_backend": {"type": "s3", "key": "k", "endpoint": "https://s3"}}, "state_backend.bucket", "required"),
    ("s3-unlocked", {"state_backend": {"type": "s3", "bucket": "b", "key": "k", "endpoint": "https://s3", "use_lockfile": False}}, "state_backend.use_lockfile", "locked"),
]


@pytest.fixture
def earlier_output(tmp_path) -> tuple[Path, str]:
    out = tmp_path / "cdktf.out"
    stack = out / "stacks" / "dev"
    stack.mkdir(parents=True)
    (stack / "cdk.tf.json").write_text('{"earlier": "synth"}')
    (out / "manifest.json").write_text('{"earlier": true}')
    return out, tree_digest(out)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def test_table_is_large_and_distinct():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.safety("bad-input")
@pytest.mark.parametrize("case_id,content,field,allowed", CASES, ids=[c[0] for c in CASES])
def test_bad_settings_refused(tmp_path, earlier_output, case_id, content, field, allowed):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    settings_file = stacks / "dev.yaml"
    settings_file.write_text(content if isinstance(content, str) else yaml.safe_dump(mutate(content)))
    out, before = earlier_output

    result = run_synth(out, stacks_dir=stacks, envs="dev")

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "Traceback" not in result.stderr
    assert str(settings_file) in line
    assert f": {field}:" in line or f": {field}" in line, line
    assert allowed.lower() in line.lower(), line
    assert tree_digest(out) == before


@pytest.mark.safety("bad-input")
def test_missing_environment_file(tmp_path, earlier_output):
    out, before = earlier_output
    result = run_synth(out, stacks_dir=tmp_path, envs="qa")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {tmp_path / 'qa.yaml'}: (file): no such settings file; environments live in stacks/<env>.yaml"]
    assert tree_digest(out) == before
