"""ControlPlane: the HA control plane, every node created at once (the Consul lock orders them)."""
from __future__ import annotations

from dataclasses import dataclass

from constructs import Construct

from constructs.node_group import NodeGroup, NodeGroupProps, ServerProps


@dataclass(frozen=True)
class ControlPlaneProps:
    cluster_name: str
    fixed_ips: dict[str, str]
    server: ServerProps
    server_group_policy: str = "anti-affinity"
    api_vip: str = ""  # set for the VIP endpoint: the ports may then carry that address


class ControlPlane(Construct):
    """Nodes have fixed addresses so the load balancer members are known at synth time."""

    def __init__(self, scope: Construct, id: str, *, props: ControlPlaneProps) -> None:
        super().__init__(scope, id)
        self.nodes = NodeGroup(self, "nodes", props=NodeGroupProps(
            name=f"{props.cluster_name}-control-plane",
            node_names=sorted(props.fixed_ips),
            fixed_ips=props.fixed_ips,
            server=props.server,
            metadata={"cluster": props.cluster_name, "role": "control-plane", "pool": ""},
            server_group_policy=props.server_group_policy,
            allowed_address_pairs=[props.api_vip] if props.api_vip else [],
        ))
        self.node_addresses: dict[str, str] = dict(props.fixed_ips)
