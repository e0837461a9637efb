"""The typed settings loader: shipped environments, defaults and every field's validation."""
from __future__ import annotations

import copy

import pytest
import yaml

from stacks.settings import Settings, SettingsError, environments, load_settings, parse_settings

MINIMAL = {
    "cluster": {"name": "demo"},
    "openstack": {"external_network": "public", "image": "ubuntu-24.04", "key_pair": "ops"},
    "access": {"ssh_allowed_cidrs": ["198.51.100.0/24"], "api_allowed_cidrs": ["198.51.100.0/24"]},
    "worker_pools": [{"name": "general", "count": 2, "flavor": "m1.large"}],
}


def test_shipped_environments_load():
    assert environments() == ["dev", "prod", "staging"]
    dev, prod = load_settings("dev"), load_settings("prod")
    # dev mirrors the original write-up: bastion, 3 control-plane nodes, 2 workers.
    assert [n.role for n in dev.expected_nodes()].count("control-plane") == 3
    assert sum(p.count for p in dev.worker_pools) == 2
    assert dev.consul.mode == "bastion" and dev.state_backend.type == "local"
    assert prod.control_plane.count == 3
    assert len(prod.worker_pools) >= 2
    assert len({p.flavor for p in prod.worker_pools}) >= 2
    assert prod.consul.mode == "external" and prod.state_backend.type in {"consul", "s3"}


def test_defaults_filled():
    s = parse_settings(copy.deepcopy(MINIMAL), "demo.yaml")
    assert s.network.node_cidr == "10.20.0.0/24"
    assert s.network.pod_cidr == "10.244.0.0/16"
    assert s.network.service_cidr == "10.96.0.0/12"
    assert s.kubernetes.version == "1.34.2" and s.kubernetes.minor == "1.34"
    assert (s.kubernetes.cni.name, s.kubernetes.cni.version) == ("calico", "v3.30.3")
    assert s.kubernetes.api_endpoint.type == "octavia"
    assert s.kubernetes.api_endpoint.idle_timeout_ms >= 3_600_000
    assert s.control_plane.count == 3 and s.control_plane.server_group_policy == "anti-affinity"
    assert s.worker_pools[0].server_group_policy == "soft-anti-affinity"
    assert s.consul.mode == "bastion" and s.consul.kv_prefix == "k8s-formation"
    assert s.consul.token.type == "variable" and s.consul.token.variable == "consul_token"
    assert s.state_backend.type == "local"
    assert s.openstack.availability_zones == ["nova"]
    assert s.openstack.boot_volume_size_gb.control_plane == 0
    assert not s.access.allow_world


def test_fixed_addresses_stay_outside_dhcp_pool():
    s = parse_settings(copy.deepcopy(MINIMAL), "demo.yaml")
    assert (s.network.bastion_ip, s.network.api_vip) == ("10.20.0.5", "10.20.0.10")
    assert s.network.dhcp_pool == ("10.20.0.16", "10.20.0.254")


def test_expected_nodes_names_roles_pools():
    s = parse_settings(copy.deepcopy(MINIMAL), "demo.yaml")
    assert [(n.name, n.role, n.pool) for n in s.expected_nodes()] == [
        ("demo-bastion", "bastion", ""),
        ("demo-cp-1", "control-plane", ""), ("demo-cp-2", "control-plane", ""), ("demo-cp-3", "control-plane", ""),
        ("demo-general-1", "worker", "general"), ("demo-general-2", "worker", "general"),
    ]


def test_world_open_needs_explicit_override():
    data = copy.deepcopy(MINIMAL)
    data["access"]["ssh_allowed_cidrs"] = ["0.0.0.0/0"]
    with pytest.raises(SettingsError, match="access.ssh_allowed_cidrs.*allow_world"):
        parse_settings(data, "demo.yaml")
    data["access"]["allow_world"] = True
    assert parse_settings(data, "demo.yaml").access.allow_world


def test_settings_are_immutable():
    s = parse_settings(copy.deepcopy(MINIMAL), "demo.yaml")
    with pytest.raises(Exception):
        s.cluster.name = "other"  # type: ignore[misc]


def test_every_field_documented():
    """The generated README reference needs a description on every field."""
    def walk(model):
        for name, field in model.model_fields.items():
            if name != "type":
                assert field.description, f"{model.__name__}.{name}"
            ann = field.annotation
            for sub in getattr(ann, "__args__", (ann,)):
                if isinstance(sub, type) and issubclass(sub, Settings.__mro__[1]) and sub is not model:
                    walk(sub)
    walk(Settings)


def test_duplicate_yaml_keys_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "cluster:\n  name: again\n")
    with pytest.raises(SettingsError, match=r"dup.yaml: \(yaml\): duplicate key 'cluster'"):
        load_settings(path)
