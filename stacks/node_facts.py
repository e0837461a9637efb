"""The node contract's non-secret cluster facts (cluster.json), derived from settings."""
from __future__ import annotations

from typing import Optional

import netaddr

from constructs.user_data import ROLES, prerender
from stacks.settings import Settings

CONSUL_HTTP_PORT = 8500
API_PORT = 6443


def consul_addresses(settings: Settings) -> list[str]:
    if settings.consul.mode == "bastion":
        return [f"{settings.network.bastion_ip}:{CONSUL_HTTP_PORT}"]
    return list(settings.consul.addresses)


def control_plane_ips(settings: Settings) -> dict[str, str]:
    """Fixed control-plane addresses: .11 upwards, below the DHCP pool."""
    net = netaddr.IPNetwork(settings.network.node_cidr)
    return {f"{settings.cluster.name}-cp-{i}": str(net[10 + i]) for i in range(1, settings.control_plane.count + 1)}


def node_inputs(settings: Settings, api_public_address: Optional[str], consul_token: str) -> tuple[dict, dict]:
    """The facts and secrets every node's user-data carries (tokens allowed in both)."""
    return node_facts(settings, api_public_address), {"consul_token": consul_token}


def prerender_user_data(settings: Settings) -> None:
    """Renders every role's cloud-config once with stand-in tokens where ClusterStack has real
    ones, so that the stack's own rendering is a cache hit. Pure Python: main.py runs it while
    the jsii runtime loads."""
    stand_in = "${TfToken[PRERENDER]}"
    public = stand_in if settings.kubernetes.api_endpoint.floating_ip else None
    facts, secrets = node_inputs(settings, public, stand_in)
    for role in ROLES:
        prerender(role, facts, secrets)


def node_facts(settings: Settings, api_public_address: Optional[str] = None) -> dict:
    """`api_public_address` may be a Terraform token: it is only known after apply."""
    k8s = settings.kubernetes
    sans = [settings.network.api_vip] + ([api_public_address] if api_public_address else [])
    return {
        "cluster_name": settings.cluster.name,
        "kubernetes_version": k8s.version,
        "kubernetes_minor": k8s.minor,
        "api_endpoint": {"host": settings.network.api_vip, "port": API_PORT, "type": k8s.api_endpoint.type},
        # The VIP variant's keepalived peers; also the etcd members a join should expect.
        "control_plane_addresses": control_plane_ips(settings),
        "api_cert_sans": sans,
        "node_cidr": settings.network.node_cidr,
        "pod_cidr": settings.network.pod_cidr,
        "service_cidr": settings.network.service_cidr,
        "cni": {
            "name": k8s.cni.name,
            "version": k8s.cni.version,
            "calico_encapsulation": k8s.cni.calico_encapsulation,
        },
        "consul": {
            "mode": settings.consul.mode,
            "addresses": consul_addresses(settings),
            "scheme": settings.consul.scheme,
            "kv_prefix": settings.consul.kv_prefix,
        },
        "join": {"token_ttl_hours": k8s.token_ttl_hours, "certificate_key_ttl_hours": 2},
        "bastion_consul_server": settings.consul.mode == "bastion",
    }
