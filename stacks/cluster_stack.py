"""ClusterStack: the one place that maps settings to construct props."""
from __future__ import annotations

import functools

from cdktf import (
    ConsulBackend,
    LocalBackend,
    S3Backend,
    TerraformOutput,
    TerraformStack,
    TerraformVariable,
)
from cdktf_cdktf_provider_openstack.data_openstack_images_image_v2 import DataOpenstackImagesImageV2
from cdktf_cdktf_provider_openstack.data_openstack_keymanager_secret_v1 import DataOpenstackKeymanagerSecretV1
from cdktf_cdktf_provider_openstack.data_openstack_networking_network_v2 import DataOpenstackNetworkingNetworkV2
from cdktf_cdktf_provider_openstack.provider import OpenstackProvider
from constructs import Construct

from constructs.api_endpoint import ApiEndpoint, ApiEndpointProps
from constructs.bastion import Bastion, BastionProps
from constructs.control_plane import ControlPlane, ControlPlaneProps
from constructs.network import Network, NetworkProps
from constructs.node_group import ServerProps
from constructs.security_groups import SecurityGroups, SecurityGroupsProps
from constructs.user_data import render_user_data
from constructs.worker_pool import WorkerPool, WorkerPoolProps
from stacks.node_facts import control_plane_ips, node_inputs
from stacks.settings import Settings

SSH_USER = "ubuntu"
PROVIDER_CONSTRAINT = "~> 3.0"
# Relative to the stack's working directory cdktf.out/stacks/<env>: the project root.
LOCAL_STATE_DIR = "../../.."


class ClusterStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, settings: Settings) -> None:
        super().__init__(scope, id)
        s = settings
        name = s.cluster.name
        OpenstackProvider(self, "openstack", cloud=s.openstack.cloud)
        # The bindings pin the exact provider release they were generated from (3.0.0); any
        # 3.x keeps those schemas, and 3.0.0 itself is no longer served everywhere.
        self.add_override("terraform.required_providers.openstack.version", PROVIDER_CONSTRAINT)
        self._backend(id, s)

        external = DataOpenstackNetworkingNetworkV2(self, "external_network", name=s.openstack.external_network,
                                                    external=True)
        image = DataOpenstackImagesImageV2(self, "image", name=s.openstack.image, most_recent=True)
        consul_token = self._consul_token(s)

        low, high = s.network.dhcp_pool
        network = Network(self, "network", props=NetworkProps(
            name=name, cidr=s.network.node_cidr, external_network_id=external.id,
            dhcp_start=low, dhcp_end=high, dns_servers=list(s.network.dns_servers),
        ))
        groups = SecurityGroups(self, "security_groups", props=SecurityGroupsProps(
            name_prefix=name,
            node_cidr=s.network.node_cidr,
            ssh_allowed_cidrs=list(s.access.ssh_allowed_cidrs),
            api_allowed_cidrs=list(s.access.api_allowed_cidrs),
            cni=s.kubernetes.cni.name,
            calico_encapsulation=s.kubernetes.cni.calico_encapsulation,
            api_endpoint_type=s.kubernetes.api_endpoint.type,
            consul_on_bastion=s.consul.mode == "bastion",
        ))
        cp_ips = control_plane_ips(s)
        api = ApiEndpoint(self, "api", props=ApiEndpointProps(
            cluster_name=name,
            type=s.kubernetes.api_endpoint.type,
            address=s.network.api_vip,
            network_id=network.network_id,
            subnet_id=network.subnet_id,
            members=cp_ips,
            allowed_cidrs=list(s.access.api_allowed_cidrs),
            internal_cidr=s.network.node_cidr,
            external_network_name=s.openstack.external_network,
            floating_ip=s.kubernetes.api_endpoint.floating_ip,
            idle_timeout_ms=s.kubernetes.api_endpoint.idle_timeout_ms,
            security_group_ids=[groups.control_plane_id],
            floating_ip_depends_on=[network.router_interface],
        ))
        facts, secrets = node_inputs(s, api.public_address, consul_token)

        @functools.cache
        def user_data(role: str) -> str:
            # One expression per role, shared by its servers and pools: each render is two jsii calls.
            return render_user_data(role, facts, secrets)

        image_id = image.id
        zones = list(s.openstack.availability_zones)

        def server(flavor: str, security_group_id: str, role: str, volume_gb: int) -> ServerProps:
            return ServerProps(flavor=flavor, image_id=image_id, key_pair=s.openstack.key_pair,
                               network_id=network.network_id, subnet_id=network.subnet_id,
                               security_group_ids=[security_group_id], user_data=user_data(role),
                               availability_zones=zones, boot_volume_size_gb=volume_gb)

        volumes = s.openstack.boot_volume_size_gb
        bastion = Bastion(self, "bastion", props=BastionProps(
            cluster_name=name, fixed_ip=s.network.bastion_ip,
            server=server(s.bastion.flavor, groups.bastion_id, "bastion", volumes.bastion),
            external_network_name=s.openstack.external_network,
            floating_ip_depends_on=[network.router_interface],
        ))
        ControlPlane(self, "control_plane", props=ControlPlaneProps(
            cluster_name=name, fixed_ips=cp_ips,
            server=server(s.control_plane.flavor, groups.control_plane_id, "control-plane", volumes.control_plane),
            server_group_policy=s.control_plane.server_group_policy,
            api_vip=s.network.api_vip if s.kubernetes.api_endpoint.type == "vip" else "",
        ))
        for pool in s.worker_pools:
            WorkerPool(self, f"pool_{pool.name}", props=WorkerPoolProps(
                cluster_name=name, pool_name=pool.name, count=pool.count,
                server=server(pool.flavor, groups.worker_id, "worker", volumes.worker),
                labels=dict(pool.labels), taints=list(pool.taints), server_group_policy=pool.server_group_policy,
            ))

        api_host = api.public_address or api.address
        TerraformOutput(self, "bastion_address", static_id=True, value=bastion.public_address,
                        description="Public address of the bastion (SSH entry point)")
        TerraformOutput(self, "api_endpoint", static_id=True, value=f"https://{api_host}:6443",
                        description="Kubernetes API endpoint")
        TerraformOutput(self, "api_internal_address", static_id=True, value=api.address,
                        description="Kubernetes API address inside the node network (certificate SAN)")
        TerraformOutput(self, "control_plane_addresses", static_id=True, value=cp_ips,
                        description="Fixed addresses of the control-plane nodes")
        TerraformOutput(self, "ssh_via_bastion", static_id=True,
                        value=f"ssh -J {SSH_USER}@{bastion.public_address} {SSH_USER}@<node-address>",
                        description="How to reach a node: through the bastion as jump host")

    def _backend(self, env: str, s: Settings) -> None:
        backend = s.state_backend
        if backend.type == "local":
            LocalBackend(self, path=backend.path or f"{LOCAL_STATE_DIR}/terraform.{env}.tfstate")
        elif backend.type == "consul":
            # The binding insists on access_token; drop it so the token comes from CONSUL_HTTP_TOKEN
            # at init time, never from the repository.
            ConsulBackend(self, address=backend.address, path=backend.path, scheme=backend.scheme, lock=True,
                          access_token="from-environment")
            self.add_override("terraform.backend.consul.access_token", None)
        else:
            S3Backend(
                self, bucket=backend.bucket, key=backend.key, region=backend.region,
                endpoints={"s3": backend.endpoint}, use_path_style=True,
                skip_credentials_validation=True, skip_region_validation=True,
                skip_requesting_account_id=True, skip_metadata_api_check=True,
            )
            # cdktf 0.20's S3Backend predates S3-native locking (Terraform/OpenTofu >= 1.10).
            self.add_override("terraform.backend.s3.use_lockfile", backend.use_lockfile)

    def _consul_token(self, s: Settings) -> str:
        token = s.consul.token
        if token.type == "variable":
            return TerraformVariable(
                self, token.variable, type="string", sensitive=True, nullable=False,
                description="Consul ACL token of this cluster (set TF_VAR_%s)" % token.variable,
            ).string_value
        return DataOpenstackKeymanagerSecretV1(self, "consul_token_secret", name=token.secret_name).payload
