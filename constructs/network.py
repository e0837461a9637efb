"""Network: the cluster's network, node subnet and router to the external network."""
from __future__ import annotations

from dataclasses import dataclass, field

from cdktf_cdktf_provider_openstack.networking_network_v2 import NetworkingNetworkV2
from cdktf_cdktf_provider_openstack.networking_router_interface_v2 import NetworkingRouterInterfaceV2
from cdktf_cdktf_provider_openstack.networking_router_v2 import NetworkingRouterV2
from cdktf_cdktf_provider_openstack.networking_subnet_v2 import NetworkingSubnetV2, NetworkingSubnetV2AllocationPool
from constructs import Construct


@dataclass(frozen=True)
class NetworkProps:
    name: str
    cidr: str
    external_network_id: str
    dhcp_start: str
    dhcp_end: str
    dns_servers: list[str] = field(default_factory=list)


class Network(Construct):
    """Network + subnet + router; the DHCP pool leaves the low addresses for fixed IPs."""

    def __init__(self, scope: Construct, id: str, *, props: NetworkProps) -> None:
        super().__init__(scope, id)
        self.network = NetworkingNetworkV2(self, "network", name=props.name, admin_state_up=True)
        # Read once: every attribute read is a round trip to the jsii runtime.
        self.network_id: str = self.network.id
        self.subnet = NetworkingSubnetV2(
            self, "subnet",
            name=f"{props.name}-nodes",
            network_id=self.network_id,
            cidr=props.cidr,
            ip_version=4,
            dns_nameservers=props.dns_servers,
            allocation_pool=[NetworkingSubnetV2AllocationPool(start=props.dhcp_start, end=props.dhcp_end)],
        )
        self.router = NetworkingRouterV2(
            self, "router",
            name=props.name,
            admin_state_up=True,
            external_network_id=props.external_network_id,
        )
        self.subnet_id: str = self.subnet.id
        self.router_interface = NetworkingRouterInterfaceV2(
            self, "router_interface", router_id=self.router.id, subnet_id=self.subnet_id,
        )
