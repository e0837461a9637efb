"""The `status` table: stable, aligned columns; colour only for a terminal."""
from __future__ import annotations

from typing import Optional

from ops.records import FAILED, INVALID, PENDING, ClusterView, NodeStatus

COLUMNS = ("NODE", "ROLE", "POOL", "PHASE", "IN PHASE", "LAST ERROR")
_COLOURS = {"joined": "32", FAILED: "31", INVALID: "31", PENDING: "90"}
_BUSY = "33"


def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _cells(n: NodeStatus, now: float) -> list[str]:
    return [n.node, n.role or "-", n.pool or "-", n.phase, duration(n.in_phase(now)),
            _one_line(n.last_error) if n.last_error else "-"]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render(view: ClusterView, now: float, colour: bool = False) -> list[str]:
    rows = [list(COLUMNS)] + [_cells(n, now) for n in view.nodes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for idx, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        if colour and idx > 0:
            node = view.nodes[idx - 1]
            code = _COLOURS.get(node.phase, _BUSY)
            cells[3] = f"\x1b[{code}m{cells[3]}\x1b[0m"
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return lines


def summary(view: ClusterView) -> str:
    counts = view.counts()
    total = len(view.nodes)
    parts = [f"{counts.get('joined', 0)}/{total} joined"]
    for phase in (FAILED, INVALID, PENDING):
        if counts.get(phase):
            parts.append(f"{counts[phase]} {phase}")
    busy = total - sum(counts.get(p, 0) for p in ("joined", FAILED, INVALID, PENDING))
    if busy:
        parts.append(f"{busy} in progress")
    return ", ".join(parts)
