"""ControlPlane: the HA control plane, every node created at once (the Consul lock orders them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from constructs import Construct

from constructs.node_group import NodeGroup, NodeGroupProps


@dataclass(frozen=True)
class ControlPlaneProps:
    cluster_name: str
    fixed_ips: dict[str, str]
    flavor: str
    image_id: str
    key_pair: str
    network_id: str
    subnet_id: str
    security_group_ids: list[str]
    user_data: str
    availability_zones: list[str] = field(default_factory=lambda: ["nova"])
    server_group_policy: str = "anti-affinity"
    boot_volume_size_gb: int = 0
    api_vip: str = ""  # set for the VIP endpoint: the ports may then carry that address


class ControlPlane(Construct):
    """Nodes have fixed addresses so the load balancer members are known at synth time."""

    def __init__(self, scope: Construct, id: str, *, props: ControlPlaneProps) -> None:
        super().__init__(scope, id)
        names = sorted(props.fixed_ips)
        self.nodes = NodeGroup(self, "nodes", props=NodeGroupProps(
            name=f"{props.cluster_name}-control-plane",
            node_names=names,
            fixed_ips=props.fixed_ips,
            flavor=props.flavor,
            image_id=props.image_id,
            key_pair=props.key_pair,
            network_id=props.network_id,
            subnet_id=props.subnet_id,
            security_group_ids=props.security_group_ids,
            user_data=props.user_data,
            metadata={"cluster": props.cluster_name, "role": "control-plane", "pool": ""},
            availability_zones=props.availability_zones,
            server_group_policy=props.server_group_policy,
            boot_volume_size_gb=props.boot_volume_size_gb,
            allowed_address_pairs=[props.api_vip] if props.api_vip else [],
        ))
        self.node_addresses: dict[str, str] = dict(props.fixed_ips)
