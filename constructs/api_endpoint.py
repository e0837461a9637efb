"""ApiEndpoint: the stable Kubernetes API address, an Octavia load balancer or a VIP port.

The internal address is fixed at synth time (a reserved address of the node subnet), so
kubeadm's controlPlaneEndpoint and certificate SANs never depend on apply-time values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cdktf import TerraformIterator
from cdktf_cdktf_provider_openstack.lb_listener_v2 import LbListenerV2
from cdktf_cdktf_provider_openstack.lb_loadbalancer_v2 import LbLoadbalancerV2
from cdktf_cdktf_provider_openstack.lb_member_v2 import LbMemberV2
from cdktf_cdktf_provider_openstack.lb_monitor_v2 import LbMonitorV2
from cdktf_cdktf_provider_openstack.lb_pool_v2 import LbPoolV2
from cdktf_cdktf_provider_openstack.networking_floatingip_v2 import NetworkingFloatingipV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2, NetworkingPortV2FixedIp
from constructs import Construct

API_PORT = 6443


@dataclass(frozen=True)
class ApiEndpointProps:
    cluster_name: str
    type: Literal["octavia", "vip"]
    address: str
    network_id: str
    subnet_id: str
    members: dict[str, str]
    allowed_cidrs: list[str]
    internal_cidr: str
    external_network_name: str
    floating_ip: bool = True
    idle_timeout_ms: int = 3_600_000
    security_group_ids: list[str] = field(default_factory=list)
    # See BastionProps: the router interface, so the floating IP is not created before it.
    floating_ip_depends_on: list = field(default_factory=list)


class ApiEndpoint(Construct):
    def __init__(self, scope: Construct, id: str, *, props: ApiEndpointProps) -> None:
        super().__init__(scope, id)
        name = f"{props.cluster_name}-api"
        self.address: str = props.address
        if props.type == "octavia":
            self.load_balancer = LbLoadbalancerV2(
                self, "load_balancer", name=name, vip_subnet_id=props.subnet_id, vip_address=props.address,
            )
            self.listener = LbListenerV2(
                self, "listener",
                name=name,
                loadbalancer_id=self.load_balancer.id,
                protocol="TCP",
                protocol_port=API_PORT,
                # Nodes reach the API through the same VIP (controlPlaneEndpoint).
                allowed_cidrs=sorted(set(props.allowed_cidrs) | {props.internal_cidr}),
                # API watches are long-lived idle TCP streams: keep them for at least an hour.
                timeout_client_data=props.idle_timeout_ms,
                timeout_member_data=props.idle_timeout_ms,
            )
            self.pool = LbPoolV2(self, "pool", name=name, listener_id=self.listener.id,
                                 protocol="TCP", lb_method="LEAST_CONNECTIONS")
            self.monitor = LbMonitorV2(self, "monitor", name=name, pool_id=self.pool.id,
                                       type="TCP", delay=5, timeout=3, max_retries=3, max_retries_down=3)
            members = TerraformIterator.from_map(props.members)
            LbMemberV2(self, "members", for_each=members, name="${each.key}",
                       pool_id=self.pool.id, address="${each.value}",
                       protocol_port=API_PORT, subnet_id=props.subnet_id)
            vip_port_id = self.load_balancer.vip_port_id
        else:
            self.vip_port = NetworkingPortV2(
                self, "vip_port",
                name=name,
                network_id=props.network_id,
                admin_state_up=True,
                fixed_ip=[NetworkingPortV2FixedIp(subnet_id=props.subnet_id, ip_address=props.address)],
                security_group_ids=props.security_group_ids,
                description="Reserved Kubernetes API VIP, held by a control-plane node (keepalived)",
            )
            vip_port_id = self.vip_port.id
        self.public_address: str | None = None
        if props.floating_ip:
            self.floating_ip = NetworkingFloatingipV2(
                self, "floating_ip", pool=props.external_network_name, port_id=vip_port_id,
                description=f"{name} public address", depends_on=props.floating_ip_depends_on or None,
            )
            self.public_address = self.floating_ip.address
