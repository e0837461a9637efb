"""SecurityGroups: one group per role, rules derived from the role, the CNI and where Consul runs.

Intra-cluster rules name a remote *group*; CIDRs appear only for the operator-facing
entry points (allowed CIDRs) and for traffic that can only be described by the node
subnet (NodePorts and the Octavia amphora, which sit in the subnet).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from cdktf import TerraformIterator
from cdktf_cdktf_provider_openstack.networking_secgroup_rule_v2 import NetworkingSecgroupRuleV2
from cdktf_cdktf_provider_openstack.networking_secgroup_v2 import NetworkingSecgroupV2
from constructs import Construct

ROLES = ("bastion", "control_plane", "worker")
NODE_ROLES = ("control_plane", "worker")
PROTOCOL_IPIP = "4"
PROTOCOL_VRRP = "112"


@dataclass(frozen=True)
class Rule:
    """One ingress rule: into `group`, from `remote_group` or `remote_cidr`."""

    group: str
    protocol: str
    port_min: Optional[int]
    port_max: Optional[int]
    description: str
    remote_group: Optional[str] = None
    remote_cidr: Optional[str] = None

    @property
    def key(self) -> str:
        ports = "all" if self.port_min is None else (
            str(self.port_min) if self.port_min == self.port_max else f"{self.port_min}-{self.port_max}")
        source = self.remote_group or self.remote_cidr.replace("/", "_").replace(".", "-")
        return f"{self.group}_{self.protocol}_{ports}_from_{source}"


@dataclass(frozen=True)
class SecurityGroupsProps:
    name_prefix: str
    node_cidr: str
    ssh_allowed_cidrs: list[str]
    api_allowed_cidrs: list[str]
    cni: Literal["calico", "cilium"] = "calico"
    calico_encapsulation: Literal["ipip", "vxlan"] = "ipip"
    api_endpoint_type: Literal["octavia", "vip"] = "octavia"
    consul_on_bastion: bool = True


def _cni_rules(props: SecurityGroupsProps) -> list[tuple[str, int | None, int | None, str]]:
    if props.cni == "cilium":
        return [
            ("udp", 8472, 8472, "Cilium VXLAN overlay"),
            ("tcp", 4240, 4240, "Cilium health checks"),
            ("icmp", None, None, "Cilium health ICMP probes"),
        ]
    rules = [
        ("tcp", 179, 179, "Calico BGP"),
        ("tcp", 5473, 5473, "Calico Typha"),
    ]
    if props.calico_encapsulation == "ipip":
        rules.append((PROTOCOL_IPIP, None, None, "Calico IP-in-IP"))
    else:
        rules.append(("udp", 4789, 4789, "Calico VXLAN"))
    return rules


def security_rules(props: SecurityGroupsProps) -> list[Rule]:
    """Every ingress rule of the three groups; egress keeps Neutron's default allow."""
    rules: list[Rule] = []

    def add(group, protocol, low, high, description, *, groups=(), cidrs=()):
        rules.extend(Rule(group, protocol, low, high, description, remote_group=g) for g in groups)
        rules.extend(Rule(group, protocol, low, high, description, remote_cidr=c) for c in cidrs)

    add("bastion", "tcp", 22, 22, "SSH from operators", cidrs=props.ssh_allowed_cidrs)
    if props.consul_on_bastion:
        add("bastion", "tcp", 8500, 8500, "Consul HTTP API for the formation lock", groups=NODE_ROLES)

    add("control_plane", "tcp", 6443, 6443, "Kubernetes API", groups=("control_plane", "worker", "bastion"))
    if props.api_endpoint_type == "octavia":
        # The amphora proxies and health-checks from its own address in the node subnet.
        add("control_plane", "tcp", 6443, 6443, "Kubernetes API via the load balancer", cidrs=[props.node_cidr])
    else:
        # The VIP's floating IP is NATed to the control-plane port holding the VIP.
        add("control_plane", "tcp", 6443, 6443, "Kubernetes API via the VIP", cidrs=props.api_allowed_cidrs)
        add("control_plane", PROTOCOL_VRRP, None, None, "keepalived VRRP for the API VIP", groups=("control_plane",))
    add("control_plane", "tcp", 2379, 2380, "etcd client and peer", groups=("control_plane",))
    add("control_plane", "tcp", 10257, 10257, "kube-controller-manager", groups=("control_plane",))
    add("control_plane", "tcp", 10259, 10259, "kube-scheduler", groups=("control_plane",))

    for role in NODE_ROLES:
        add(role, "tcp", 10250, 10250, "kubelet API from the control plane", groups=("control_plane",))
        add(role, "tcp", 22, 22, "SSH from the bastion", groups=("bastion",))
        for protocol, low, high, description in _cni_rules(props):
            add(role, protocol, low, high, description, groups=NODE_ROLES)

    for protocol in ("tcp", "udp"):
        add("worker", protocol, 30000, 32767, "NodePorts from the subnet and load balancer", cidrs=[props.node_cidr])
    return rules


class SecurityGroups(Construct):
    """The bastion, control-plane and worker groups; attach them to ports, not servers.

    Rules are two for_each resources keyed by Rule.key (one for group sources, one for
    CIDR sources): stable addresses, and synth cost that does not grow with the rule count.
    """

    def __init__(self, scope: Construct, id: str, *, props: SecurityGroupsProps) -> None:
        super().__init__(scope, id)
        self.groups: dict[str, NetworkingSecgroupV2] = {
            role: NetworkingSecgroupV2(
                self, role,
                name=f"{props.name_prefix}-{role.replace('_', '-')}",
                description=f"{props.name_prefix} {role.replace('_', ' ')} nodes",
            )
            for role in ROLES
        }
        group_ids = {role: group.id for role, group in self.groups.items()}
        self.rules = security_rules(props)

        def rule_map(rules: list[Rule], source: str) -> dict[str, dict]:
            # Port 0 leaves the range unset: the whole protocol (IP-in-IP, VRRP, ICMP).
            return {r.key: {
                "security_group_id": group_ids[r.group],
                "protocol": r.protocol,
                "port_range_min": r.port_min or 0,
                "port_range_max": r.port_max or 0,
                "description": r.description,
                "source": group_ids[r.remote_group] if source == "group" else r.remote_cidr,
            } for r in rules}

        by_group = rule_map([r for r in self.rules if r.remote_group], "group")
        by_cidr = rule_map([r for r in self.rules if r.remote_cidr], "cidr")
        for rule_id, rules, source_arg in (("group_rules", by_group, "remote_group_id"),
                                           ("cidr_rules", by_cidr, "remote_ip_prefix")):
            it = TerraformIterator.from_map(rules)
            NetworkingSecgroupRuleV2(
                self, rule_id,
                for_each=it,
                security_group_id="${each.value.security_group_id}",
                direction="ingress",
                ethertype="IPv4",
                protocol="${each.value.protocol}",
                port_range_min=it.get_number("port_range_min"),
                port_range_max=it.get_number("port_range_max"),
                description="${each.value.description}",
                **{source_arg: "${each.value.source}"},
            )
        self.bastion_id: str = group_ids["bastion"]
        self.control_plane_id: str = group_ids["control_plane"]
        self.worker_id: str = group_ids["worker"]
