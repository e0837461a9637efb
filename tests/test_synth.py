"""Assertions on the synthesized Terraform JSON of every environment."""
from __future__ import annotations

import json

import pytest

from stacks.node_facts import control_plane_ips
from stacks.settings import environments, load_settings
from tests.synth_json import by_name, ingress_rules, one, referenced, resources

ENVS = environments()


@pytest.fixture(params=ENVS)
def env(request):
    return request.param


def test_all_environments_synthesized(synthesized):
    assert sorted(synthesized) == ENVS


def test_network_subnet_router(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    subnet = one(doc, "openstack_networking_subnet_v2")
    assert subnet["cidr"] == s.network.node_cidr
    assert subnet["dns_nameservers"] == s.network.dns_servers
    low, high = s.network.dhcp_pool
    assert subnet["allocation_pool"] == [{"start": low, "end": high}]
    router = one(doc, "openstack_networking_router_v2")
    assert router["external_network_id"] == "${data.openstack_networking_network_v2.external_network.id}"
    assert doc["data"]["openstack_networking_network_v2"]["external_network"]["name"] == s.openstack.external_network
    assert len(resources(doc, "openstack_networking_router_interface_v2")) == 1


def test_control_plane_nodes(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    name = s.cluster.name
    ips = control_plane_ips(s)
    ports = by_name_prefix_for_each(doc, "openstack_networking_port_v2", ips)
    assert ports["for_each"] == ips
    assert ports["fixed_ip"][0]["ip_address"] == "${each.value}"
    servers = for_each_over(doc, "openstack_compute_instance_v2", ports)
    assert servers["metadata"] == {"cluster": name, "role": "control-plane", "pool": ""}
    assert servers["flavor_name"] == s.control_plane.flavor
    assert "depends_on" not in servers  # all control-plane nodes are created together
    assert servers["user_data"].startswith('${base64gzip(join("", ["#cloud-config\\n')
    assert "user_data" in servers["lifecycle"]["ignore_changes"]
    group_type, group = referenced(doc, servers["scheduler_hints"][0]["group"])
    assert group["policies"] == [s.control_plane.server_group_policy]
    assert "security_groups" not in servers  # security groups go on ports
    _, sg = referenced(doc, ports["security_group_ids"][0])
    assert sg["name"] == f"{name}-control-plane"
    if s.openstack.boot_volume_size_gb.control_plane:
        assert servers["block_device"][0]["volume_size"] == s.openstack.boot_volume_size_gb.control_plane
        assert "image_id" not in servers
    else:
        assert "block_device" not in servers


def test_worker_pools(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    name = s.cluster.name
    for pool in s.worker_pools:
        names = {f"{name}-{pool.name}-{i}": None for i in range(1, pool.count + 1)}
        ports = by_name_prefix_for_each(doc, "openstack_networking_port_v2", names)
        assert "ip_address" not in ports["fixed_ip"][0]
        servers = for_each_over(doc, "openstack_compute_instance_v2", ports)
        assert servers["flavor_name"] == pool.flavor
        meta = servers["metadata"]
        assert (meta["cluster"], meta["role"], meta["pool"]) == (name, "worker", pool.name)
        assert json.loads(meta["labels"]) == pool.labels
        assert json.loads(meta["taints"]) == pool.taints
        _, group = referenced(doc, servers["scheduler_hints"][0]["group"])
        assert group["policies"] == [pool.server_group_policy]


def test_bastion(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    server = by_name(doc, "openstack_compute_instance_v2", f"{s.cluster.name}-bastion")
    assert server["metadata"]["role"] == "bastion"
    port = by_name(doc, "openstack_networking_port_v2", f"{s.cluster.name}-bastion")
    assert port["fixed_ip"][0]["ip_address"] == s.network.bastion_ip
    assert len(resources(doc, "openstack_networking_floatingip_associate_v2")) == 1


def test_api_endpoint(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    endpoint = s.kubernetes.api_endpoint
    if endpoint.type == "octavia":
        lb = one(doc, "openstack_lb_loadbalancer_v2")
        assert lb["vip_address"] == s.network.api_vip
        listener = one(doc, "openstack_lb_listener_v2")
        assert (listener["protocol"], listener["protocol_port"]) == ("TCP", 6443)
        assert listener["timeout_client_data"] >= 3_600_000
        assert listener["timeout_member_data"] >= 3_600_000
        assert set(listener["allowed_cidrs"]) == set(s.access.api_allowed_cidrs) | {s.network.node_cidr}
        members = one(doc, "openstack_lb_member_v2")
        assert members["for_each"] == control_plane_ips(s)
        assert members["protocol_port"] == 6443
        assert one(doc, "openstack_lb_monitor_v2")["type"] == "TCP"
        assert not any(p.get("allowed_address_pairs") for p in resources(doc, "openstack_networking_port_v2").values())
    else:
        vip = by_name(doc, "openstack_networking_port_v2", f"{s.cluster.name}-api")
        assert vip["fixed_ip"][0]["ip_address"] == s.network.api_vip
        assert not resources(doc, "openstack_lb_loadbalancer_v2")
        cp_ports = by_name_prefix_for_each(doc, "openstack_networking_port_v2", control_plane_ips(s))
        assert cp_ports["allowed_address_pairs"] == [{"ip_address": s.network.api_vip}]
    fips = len(resources(doc, "openstack_networking_floatingip_v2"))
    assert fips == 1 + int(endpoint.floating_ip)


def test_floating_ips_wait_for_the_router(synthesized, env):
    """Neutron refuses a floating IP on a port whose subnet is not yet routed to the external
    network (ExternalGatewayForFloatingIPNotFound): both users of one depend on the interface."""
    doc = synthesized[env]
    interface = "openstack_networking_router_interface_v2." + next(iter(
        resources(doc, "openstack_networking_router_interface_v2")))
    attached = [r for r in resources(doc, "openstack_networking_floatingip_v2").values() if "port_id" in r]
    attached += list(resources(doc, "openstack_networking_floatingip_associate_v2").values())
    assert attached
    for body in attached:
        assert body["depends_on"] == [interface]


@pytest.mark.safety("exposure")
def test_no_ssh_from_anywhere_to_nodes(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    for rule in ingress_rules(doc, s.cluster.name):
        if rule.protocol == "tcp" and rule.covers(22):
            assert rule.remote_cidr != "0.0.0.0/0"
            if rule.group in {"control-plane", "worker"}:
                assert rule.remote_group == "bastion" and rule.remote_cidr is None
            else:
                assert rule.remote_cidr in s.access.ssh_allowed_cidrs


def test_rule_sets_per_role(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    rules = ingress_rules(doc, s.cluster.name)

    def sources(group, protocol, port):
        return {r.remote_group or r.remote_cidr for r in rules
                if r.group == group and r.protocol == protocol and (port is None or r.covers(port))}

    assert sources("control-plane", "tcp", 2379) == {"control-plane"}
    assert sources("control-plane", "tcp", 2380) == {"control-plane"}
    assert sources("worker", "tcp", 10250) == {"control-plane"}
    assert sources("control-plane", "tcp", 10250) == {"control-plane"}
    assert sources("worker", "tcp", 30000) == {s.network.node_cidr}
    assert sources("worker", "udp", 32767) == {s.network.node_cidr}
    cni = s.kubernetes.cni
    if cni.name == "calico":
        assert sources("worker", "tcp", 179) == {"control-plane", "worker"}
        if cni.calico_encapsulation == "ipip":
            assert sources("worker", "4", None) == {"control-plane", "worker"}
        else:
            assert sources("worker", "udp", 4789) == {"control-plane", "worker"}
        assert not sources("worker", "udp", 8472)
    else:
        assert sources("worker", "udp", 8472) == {"control-plane", "worker"}
        assert sources("worker", "tcp", 4240) == {"control-plane", "worker"}
        assert not sources("worker", "tcp", 179)
    consul = sources("bastion", "tcp", 8500)
    assert consul == ({"control-plane", "worker"} if s.consul.mode == "bastion" else set())


@pytest.mark.safety("secret-leak")
def test_outputs_static_and_not_secret(synthesized, env):
    doc = synthesized[env]
    outputs = doc["output"]
    assert {"bastion_address", "api_endpoint", "ssh_via_bastion"} <= set(outputs)
    for name, body in outputs.items():
        assert "sensitive" not in body, name
        assert "var." not in json.dumps(body) and "payload" not in json.dumps(body), name


def test_consul_token_source(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    user_data = next(iter(resources(doc, "openstack_compute_instance_v2").values()))["user_data"]
    if s.consul.token.type == "variable":
        var = doc["variable"][s.consul.token.variable]
        assert var["sensitive"] is True and var["nullable"] is False
        assert '", var.%s, "' % s.consul.token.variable in user_data
    else:
        data = doc["data"]["openstack_keymanager_secret_v1"]["consul_token_secret"]
        assert data["name"] == s.consul.token.secret_name
        assert '", data.openstack_keymanager_secret_v1.consul_token_secret.payload, "' in user_data


def test_provider_constraint_accepts_any_3x(synthesized, env):
    provider = synthesized[env]["terraform"]["required_providers"]["openstack"]
    assert provider == {"source": "terraform-provider-openstack/openstack", "version": "~> 3.0"}


def test_state_backend(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    backend = doc["terraform"]["backend"]
    assert list(backend) == [s.state_backend.type]
    if s.state_backend.type == "s3":
        assert backend["s3"]["use_lockfile"] is True
    if s.state_backend.type == "consul":
        assert backend["consul"]["lock"] is True and "access_token" not in backend["consul"]


def by_name_prefix_for_each(doc: dict, rtype: str, keys: dict) -> dict:
    """The for_each resource of `rtype` whose keys are exactly `keys`."""
    found = [r for r in resources(doc, rtype).values()
             if isinstance(r.get("for_each"), dict) and set(r["for_each"]) == set(keys)]
    assert len(found) == 1, f"no single {rtype} for_each over {sorted(keys)}"
    return found[0]


def for_each_over(doc: dict, rtype: str, source: dict) -> dict:
    """The `rtype` resource whose for_each iterates over the resource `source`."""
    for rid, body in resources(doc, rtype).items():
        ref = body.get("for_each")
        if isinstance(ref, str) and ref.startswith("${"):
            _, target = referenced(doc, ref[:-1] + ".id}")
            if target is source:
                return body
    raise AssertionError(f"no {rtype} iterates over the given resource")


def test_prerendered_user_data_is_what_the_stack_uses():
    """main.py renders user-data beside the jsii load; the stack must then hit that cache."""
    from cdktf import Testing

    from constructs.user_data import _terraform_pieces
    from stacks.cluster_stack import ClusterStack
    from stacks.node_facts import prerender_user_data

    for env in ENVS:
        settings = load_settings(env)
        prerender_user_data(settings)
        misses = _terraform_pieces.cache_info().misses
        ClusterStack(Testing.app(), env, settings=settings)
        assert _terraform_pieces.cache_info().misses == misses, env
