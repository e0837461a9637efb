"""Reading synthesized Terraform JSON: resources by type, references, security rules."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import netaddr

REF = re.compile(r"^\$\{([a-z0-9_]+)\.([A-Za-z0-9_]+)\.([a-z_]+)\}$")


def resources(doc: dict, rtype: str) -> dict[str, dict]:
    return doc.get("resource", {}).get(rtype, {})


def one(doc: dict, rtype: str) -> dict:
    found = list(resources(doc, rtype).values())
    assert len(found) == 1, f"expected one {rtype}, found {len(found)}"
    return found[0]


def by_name(doc: dict, rtype: str, name: str) -> dict:
    found = [r for r in resources(doc, rtype).values() if r.get("name") == name]
    assert len(found) == 1, f"expected one {rtype} named {name}, found {len(found)}"
    return found[0]


def referenced(doc: dict, ref: str) -> tuple[str, dict]:
    """The resource a `${type.id.attr}` reference points to, as (type, body)."""
    m = REF.match(ref)
    assert m, f"not a plain reference: {ref}"
    return m.group(1), doc["resource"][m.group(1)][m.group(2)]


@dataclass(frozen=True)
class IngressRule:
    group: str                       # name suffix of the target group: bastion, control-plane, worker
    protocol: str
    ports: Optional[tuple[int, int]]
    remote_group: Optional[str]
    remote_cidr: Optional[str]

    def covers(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]


def ingress_rules(doc: dict, cluster: str) -> list[IngressRule]:
    def group_name(ref: str) -> str:
        _, body = referenced(doc, ref)
        return body["name"].removeprefix(f"{cluster}-")

    rules = []
    for body in resources(doc, "openstack_networking_secgroup_rule_v2").values():
        assert body["direction"] == "ingress"
        low, high = body.get("port_range_min"), body.get("port_range_max")
        rules.append(IngressRule(
            group=group_name(body["security_group_id"]),
            protocol=body["protocol"],
            ports=(low, high) if low is not None else None,
            remote_group=group_name(body["remote_group_id"]) if body.get("remote_group_id") else None,
            remote_cidr=body.get("remote_ip_prefix"),
        ))
    return rules


def outside(cidr: str, node_cidr: str) -> bool:
    """True when a source CIDR reaches beyond the cluster's own subnet."""
    return not netaddr.IPNetwork(cidr) in netaddr.IPNetwork(node_cidr)
