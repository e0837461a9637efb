"""What the synthesized security groups expose, read from the JSON as a reachability table.

From outside the cluster (any source beyond the node subnet) only SSH to the bastion and
6443 towards the API endpoint may be open, each only from the allowed CIDRs.
"""
from __future__ import annotations

import pytest

from stacks.settings import environments, load_settings
from tests.synth_json import ingress_rules, outside, resources


@pytest.mark.safety("exposure")
@pytest.mark.parametrize("env", environments())
def test_only_bastion_ssh_and_api_reachable_from_outside(synthesized, env):
    doc, s = synthesized[env], load_settings(env)
    exposed = {(r.group, r.protocol, r.ports, r.remote_cidr)
               for r in ingress_rules(doc, s.cluster.name)
               if r.remote_cidr and outside(r.remote_cidr, s.network.node_cidr)}
    allowed = {("bastion", "tcp", (22, 22), c) for c in s.access.ssh_allowed_cidrs}
    if s.kubernetes.api_endpoint.type == "vip":
        allowed |= {("control-plane", "tcp", (6443, 6443), c) for c in s.access.api_allowed_cidrs}
    assert exposed <= allowed
    assert {e for e in allowed if e[0] == "bastion"} <= exposed
    for listener in resources(doc, "openstack_lb_listener_v2").values():
        assert listener["protocol_port"] == 6443
        assert set(listener["allowed_cidrs"]) == set(s.access.api_allowed_cidrs) | {s.network.node_cidr}


@pytest.mark.safety("exposure")
@pytest.mark.parametrize("env", environments())
def test_intra_cluster_rules_use_groups(synthesized, env):
    """etcd only between control-plane nodes, kubelet only from the control plane,
    NodePorts only from the subnet (nodes and the load balancer)."""
    doc, s = synthesized[env], load_settings(env)
    for rule in ingress_rules(doc, s.cluster.name):
        if rule.protocol == "tcp" and rule.ports and rule.ports[0] <= 2380 and rule.ports[1] >= 2379:
            assert (rule.group, rule.remote_group, rule.remote_cidr) == ("control-plane", "control-plane", None)
        if rule.protocol == "tcp" and rule.covers(10250) and rule.ports:
            assert rule.remote_group == "control-plane" and rule.remote_cidr is None
        if rule.ports and rule.ports[0] >= 30000:
            assert rule.remote_cidr == s.network.node_cidr and rule.group == "worker"
        if rule.remote_cidr is None:
            assert rule.remote_group in {"bastion", "control-plane", "worker"}
        assert rule.remote_cidr != "0.0.0.0/0"
