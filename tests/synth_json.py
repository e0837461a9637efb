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
    """Every rule instance of the for_each rule resources, with group names resolved."""
    def group_name(ref: str) -> str:
        _, body = referenced(doc, ref)
        return body["name"].removeprefix(f"{cluster}-")

    rules = []
    for body in resources(doc, "openstack_networking_secgroup_rule_v2").values():
        assert body["direction"] == "ingress" and body["ethertype"] == "IPv4"
        by_group = "remote_group_id" in body
        for key, rule in body["for_each"].items():
            low, high = rule["port_range_min"], rule["port_range_max"]
            rules.append(IngressRule(
                group=group_name(rule["security_group_id"]),
                protocol=rule["protocol"],
                ports=(low, high) if low else None,
                remote_group=group_name(rule["source"]) if by_group else None,
                remote_cidr=None if by_group else rule["source"],
            ))
    return rules


def outside(cidr: str, node_cidr: str) -> bool:
    """True when a source CIDR reaches beyond the cluster's own subnet."""
    return not netaddr.IPNetwork(cidr) in netaddr.IPNetwork(node_cidr)
