"""WorkerPool: one pool of identical workers; labels and taints travel in the metadata."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from constructs import Construct

from constructs.node_group import NodeGroup, NodeGroupProps, ServerProps


@dataclass(frozen=True)
class WorkerPoolProps:
    cluster_name: str
    pool_name: str
    count: int
    server: ServerProps
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[str] = field(default_factory=list)
    server_group_policy: str = "soft-anti-affinity"


def worker_names(cluster_name: str, pool_name: str, count: int) -> list[str]:
    return [f"{cluster_name}-{pool_name}-{i}" for i in range(1, count + 1)]


class WorkerPool(Construct):
    def __init__(self, scope: Construct, id: str, *, props: WorkerPoolProps) -> None:
        super().__init__(scope, id)
        self.node_names = worker_names(props.cluster_name, props.pool_name, props.count)
        self.nodes = NodeGroup(self, "nodes", props=NodeGroupProps(
            name=f"{props.cluster_name}-{props.pool_name}",
            node_names=self.node_names,
            server=props.server,
            metadata={
                "cluster": props.cluster_name,
                "role": "worker",
                "pool": props.pool_name,
                "labels": json.dumps(props.labels, sort_keys=True, separators=(",", ":")),
                "taints": json.dumps(props.taints, separators=(",", ":")),
            },
            server_group_policy=props.server_group_policy,
        ))
