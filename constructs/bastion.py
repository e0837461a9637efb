"""Bastion: the only SSH entry point (and, in bastion mode, the Consul server)."""
from __future__ import annotations

from dataclasses import dataclass, field

from cdktf_cdktf_provider_openstack.compute_instance_v2 import ComputeInstanceV2, ComputeInstanceV2Network
from cdktf_cdktf_provider_openstack.networking_floatingip_associate_v2 import NetworkingFloatingipAssociateV2
from cdktf_cdktf_provider_openstack.networking_floatingip_v2 import NetworkingFloatingipV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import NetworkingPortV2, NetworkingPortV2FixedIp
from constructs import Construct

from constructs.node_group import IGNORED_SERVER_CHANGES, ServerProps, boot_source


@dataclass(frozen=True)
class BastionProps:
    cluster_name: str
    fixed_ip: str
    server: ServerProps  # in the first of its availability zones
    external_network_name: str
    # A floating IP needs the router between its network and the subnet: pass the router
    # interface, or Terraform may create both at once and Neutron refuses the address.
    floating_ip_depends_on: list = field(default_factory=list)


class Bastion(Construct):
    def __init__(self, scope: Construct, id: str, *, props: BastionProps) -> None:
        super().__init__(scope, id)
        name = f"{props.cluster_name}-bastion"
        spec = props.server
        self.port = NetworkingPortV2(
            self, "port",
            name=name,
            network_id=spec.network_id,
            admin_state_up=True,
            fixed_ip=[NetworkingPortV2FixedIp(subnet_id=spec.subnet_id, ip_address=props.fixed_ip)],
            security_group_ids=spec.security_group_ids,
        )
        port_id = self.port.id
        self.server = ComputeInstanceV2(
            self, "server",
            name=name,
            flavor_name=spec.flavor,
            key_pair=spec.key_pair,
            availability_zone=spec.availability_zones[0],
            user_data=spec.user_data,
            metadata={"cluster": props.cluster_name, "role": "bastion", "pool": ""},
            network=[ComputeInstanceV2Network(port=port_id)],
            lifecycle={"ignore_changes": IGNORED_SERVER_CHANGES},
            **boot_source(spec.image_id, spec.boot_volume_size_gb),
        )
        self.floating_ip = NetworkingFloatingipV2(self, "floating_ip", pool=props.external_network_name,
                                                  description=f"{name} SSH entry point")
        self.public_address: str = self.floating_ip.address
        NetworkingFloatingipAssociateV2(self, "floating_ip_association",
                                        floating_ip=self.public_address, port_id=port_id,
                                        depends_on=props.floating_ip_depends_on or None)
        self.private_address: str = props.fixed_ip
