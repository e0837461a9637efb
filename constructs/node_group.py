"""NodeGroup: a server group plus one port and one server per node name, via for_each.

Shared by ControlPlane and WorkerPool. for_each keeps synth cost flat in the number of
nodes and makes scaling add or remove only the named instances.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cdktf import Fn, TerraformIterator, Token
from cdktf_cdktf_provider_openstack.compute_instance_v2 import (
    ComputeInstanceV2,
    ComputeInstanceV2BlockDevice,
    ComputeInstanceV2Network,
    ComputeInstanceV2SchedulerHints,
)
from cdktf_cdktf_provider_openstack.compute_servergroup_v2 import ComputeServergroupV2
from cdktf_cdktf_provider_openstack.networking_port_v2 import (
    NetworkingPortV2,
    NetworkingPortV2AllowedAddressPairs,
    NetworkingPortV2FixedIp,
)
from constructs import Construct

# Inside a for_each resource; plain expressions rather than iterator tokens, each of which
# would cost a round trip to the jsii runtime.
EACH_KEY = "${each.key}"
EACH_VALUE = "${each.value}"

# A new image or new user-data must not replace running nodes behind the operator's
# back: both only apply to servers created from now on (or via `-replace`).
IGNORED_SERVER_CHANGES = ["user_data", "image_id", "image_name", "block_device"]


@dataclass(frozen=True)
class ServerProps:
    """What a server boots with and where it plugs in: shared by node groups and the bastion."""

    flavor: str
    image_id: str
    key_pair: str
    network_id: str
    subnet_id: str
    security_group_ids: list[str]
    user_data: str
    availability_zones: list[str] = field(default_factory=lambda: ["nova"])
    boot_volume_size_gb: int = 0


@dataclass(frozen=True)
class NodeGroupProps:
    name: str
    node_names: list[str]
    server: ServerProps
    metadata: dict[str, str]
    server_group_policy: str = "anti-affinity"
    fixed_ips: Optional[dict[str, str]] = None
    allowed_address_pairs: list[str] = field(default_factory=list)


def boot_source(image_id: str, volume_size_gb: int) -> dict:
    """Server arguments for booting from the image, or from a new volume made from it."""
    if not volume_size_gb:
        return {"image_id": image_id}
    return {"block_device": [ComputeInstanceV2BlockDevice(
        uuid=image_id, source_type="image", destination_type="volume",
        volume_size=volume_size_gb, boot_index=0, delete_on_termination=True,
    )]}


def availability_zone_map(node_names: list[str], zones: list[str]) -> dict[str, str]:
    return {name: zones[i % len(zones)] for i, name in enumerate(node_names)}


class NodeGroup(Construct):
    def __init__(self, scope: Construct, id: str, *, props: NodeGroupProps) -> None:
        super().__init__(scope, id)
        spec = props.server
        self.server_group = ComputeServergroupV2(
            self, "server_group", name=props.name, policies=[props.server_group_policy],
        )
        self.server_group_id: str = self.server_group.id
        # Keyed by node name; the value is the node's fixed address where it has one.
        port_iter = TerraformIterator.from_map(props.fixed_ips or {name: name for name in props.node_names})
        fixed_ip = NetworkingPortV2FixedIp(subnet_id=spec.subnet_id, ip_address=EACH_VALUE if props.fixed_ips else None)
        self.ports = NetworkingPortV2(
            self, "ports",
            for_each=port_iter,
            name=EACH_KEY,
            network_id=spec.network_id,
            admin_state_up=True,
            fixed_ip=[fixed_ip],
            security_group_ids=spec.security_group_ids,
            allowed_address_pairs=[NetworkingPortV2AllowedAddressPairs(ip_address=ip)
                                   for ip in props.allowed_address_pairs] or None,
        )
        server_iter = TerraformIterator.from_resources(self.ports)
        zones = sorted(set(spec.availability_zones))
        availability_zone = zones[0] if len(zones) == 1 else Fn.lookup(
            availability_zone_map(props.node_names, spec.availability_zones), Token.as_string(server_iter.key))
        boot = boot_source(spec.image_id, spec.boot_volume_size_gb)
        self.servers = ComputeInstanceV2(
            self, "servers",
            for_each=server_iter,
            name=EACH_KEY,
            flavor_name=spec.flavor,
            key_pair=spec.key_pair,
            availability_zone=availability_zone,
            user_data=spec.user_data,
            metadata=props.metadata,
            network=[ComputeInstanceV2Network(port="${each.value.id}")],
            scheduler_hints=[ComputeInstanceV2SchedulerHints(group=self.server_group_id)],
            lifecycle={"ignore_changes": IGNORED_SERVER_CHANGES},
            **boot,
        )
        self.node_names: list[str] = list(props.node_names)
        self.fixed_ips: dict[str, str] = dict(props.fixed_ips or {})
