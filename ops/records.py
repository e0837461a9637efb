"""Status records (`<kv_prefix>/<cluster>/status/<node>`) and the cluster view built from them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Optional

PHASES = (
    "booting",
    "provisioning",
    "waiting-for-lock",
    "initializing",
    "waiting-for-initialized",
    "joining",
    "joined",
)
FAILED = "failed"
PENDING = "pending"  # expected by the settings, no record written yet
INVALID = "invalid"  # a record that does not parse; shown, never trusted
ALL_PHASES = PHASES + (FAILED,)
TERMINAL = {"joined", FAILED}


@dataclass(frozen=True)
class Transition:
    phase: str
    at: float


@dataclass(frozen=True)
class NodeStatus:
    node: str
    role: str
    pool: str
    phase: str
    since: Optional[float] = None
    updated: Optional[float] = None
    history: tuple[Transition, ...] = ()
    last_error: Optional[str] = None
    expected: bool = True

    def in_phase(self, now: float) -> Optional[float]:
        return None if self.since is None else max(0.0, now - self.since)

    def failed_during(self) -> Optional[str]:
        """The phase a failed node was in when it failed."""
        before = [h.phase for h in self.history if h.phase != FAILED]
        return before[-1] if before else None


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeStatus, ...]

    @property
    def expected(self) -> list[NodeStatus]:
        return [n for n in self.nodes if n.expected]

    @property
    def failed(self) -> list[NodeStatus]:
        return [n for n in self.expected if n.phase == FAILED]

    @property
    def unfinished(self) -> list[NodeStatus]:
        """Nodes `wait` still waits for (see `must_join`)."""
        return [n for n in self.expected if must_join(n) and n.phase != "joined"]

    @property
    def done(self) -> bool:
        return not self.unfinished

    @property
    def all_terminal(self) -> bool:
        """Nothing will change any more: every node that must join has joined or failed."""
        return all(n.phase in TERMINAL for n in self.expected if must_join(n) or n.phase == FAILED)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.phase] = out.get(n.phase, 0) + 1
        return out


def must_join(node: NodeStatus) -> bool:
    """The bastion is not a Kubernetes node: `wait` only requires it not to have failed.

    A bastion that does write a `joined` record is shown like any other node.
    """
    return node.role != "bastion"


class RecordError(ValueError):
    pass


def parse_record(key: str, raw: bytes | str | None) -> NodeStatus:
    """One status record; a malformed one becomes an INVALID entry naming what is wrong."""
    name = key.rstrip("/").rsplit("/", 1)[-1]
    try:
        data = json.loads(raw or b"")
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        history = tuple(
            Transition(str(h["phase"]), float(h["at"])) for h in data.get("history") or []
        )
        return NodeStatus(
            node=str(data.get("node") or name),
            role=str(data.get("role") or ""),
            pool=str(data.get("pool") or ""),
            phase=str(data["phase"]),
            since=float(data["since"]) if data.get("since") is not None else None,
            updated=float(data["updated"]) if data.get("updated") is not None else None,
            history=history,
            last_error=data.get("last_error") or None,
        )
    except (ValueError, KeyError, TypeError) as exc:
        what = exc.args[0] if isinstance(exc, KeyError) else type(exc).__name__
        return NodeStatus(node=name, role="", pool="", phase=INVALID,
                          last_error=f"unreadable status record ({what})")


def record_from_dict(data: dict) -> NodeStatus:
    return parse_record(str(data.get("node", "?")), json.dumps(data))


def build_view(expected: Iterable, records: Iterable[NodeStatus]) -> ClusterView:
    """Expected nodes in settings order (pending if silent), then records of nodes not in the settings."""
    by_name = {r.node: r for r in records}
    nodes: list[NodeStatus] = []
    for spec in expected:
        rec = by_name.pop(spec.name, None)
        if rec is None:
            nodes.append(NodeStatus(node=spec.name, role=spec.role, pool=spec.pool, phase=PENDING))
        else:
            # The settings are authoritative for role/pool: a record cannot move a node to another pool.
            nodes.append(NodeStatus(**{**rec.__dict__, "role": spec.role,
                                       "pool": spec.pool, "expected": True}))
    for name in sorted(by_name):
        rec = by_name[name]
        nodes.append(NodeStatus(**{**rec.__dict__, "expected": False}))
    return ClusterView(tuple(nodes))
