"""Status records in the node contract's format, for the `dev` stack's nodes.

The histories follow the formation protocol as the node side runs it (3 control-plane nodes booted
together, one wins the init lock, the others wait for `initialized` and join one at a time, workers
join in parallel). They are written here because tests/formation/ (the simulated-node harness) does
not exist yet; `events()` replays them in time order, the way real nodes write them.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

# (node, role, pool, [(phase, seconds after t0)], last_error)
ALL_JOINED = [
    ("dev-bastion", "bastion", "", [("booting", 0), ("provisioning", 18), ("joined", 95)], None),
    ("dev-cp-1", "control-plane", "", [("booting", 2), ("provisioning", 21), ("waiting-for-lock", 140),
                                       ("initializing", 141), ("joined", 262)], None),
    ("dev-cp-2", "control-plane", "", [("booting", 3), ("provisioning", 22), ("waiting-for-lock", 138),
                                       ("waiting-for-initialized", 139), ("joining", 263), ("joined", 331)], None),
    ("dev-cp-3", "control-plane", "", [("booting", 2), ("provisioning", 20), ("waiting-for-lock", 143),
                                       ("waiting-for-initialized", 144), ("joining", 332), ("joined", 398)], None),
    ("dev-general-1", "worker", "general", [("booting", 4), ("provisioning", 25), ("waiting-for-initialized", 131),
                                            ("joining", 263), ("joined", 290)], None),
    ("dev-general-2", "worker", "general", [("booting", 5), ("provisioning", 24), ("waiting-for-initialized", 129),
                                            ("joining", 263), ("joined", 297)], None),
]

JOIN_TIMEOUT = ("kubeadm join failed (exit 1): error execution phase preflight: couldn't validate the identity "
                "of the API Server: Get \"https://10.20.0.10:6443/api/v1/namespaces/kube-public/configmaps/"
                "cluster-info?timeout=10s\": dial tcp 10.20.0.10:6443: i/o timeout")

ONE_FAILED = [r for r in ALL_JOINED if r[0] != "dev-general-2"] + [
    ("dev-general-2", "worker", "general", [("booting", 5), ("provisioning", 24), ("waiting-for-initialized", 129),
                                            ("joining", 263), ("failed", 563)], JOIN_TIMEOUT),
]

CP_JOIN_WAIT = "cp-join lock held by dev-cp-2 since 263s; waiting (blocking query)"

# dev-cp-3 never gets past joining; dev-general-2 never wrote anything (its VM never booted).
STUCK = [r for r in ALL_JOINED if r[0] not in {"dev-cp-3", "dev-general-2"}] + [
    ("dev-cp-3", "control-plane", "", [("booting", 2), ("provisioning", 20), ("waiting-for-lock", 143),
                                       ("waiting-for-initialized", 144), ("joining", 332)], CP_JOIN_WAIT),
]


def record(node: str, role: str, pool: str, history: list[tuple[str, float]], last_error: Optional[str],
           t0: float, upto: Optional[int] = None, heartbeat: Optional[float] = None) -> dict:
    hist = history[: upto or len(history)]
    stamps = [{"phase": p, "at": t0 + at} for p, at in hist]
    failed_or_last = hist[-1][0] == "failed" or upto in (None, len(history))
    return {
        "node": node, "role": role, "pool": pool,
        "phase": stamps[-1]["phase"], "since": stamps[-1]["at"],
        "updated": heartbeat if heartbeat is not None else stamps[-1]["at"],
        "history": stamps,
        "last_error": last_error if failed_or_last else None,
    }


def records(scenario: list, t0: float) -> dict[str, dict]:
    return {n: record(n, r, p, h, e, t0) for n, r, p, h, e in scenario}


def events(scenario: list, t0: float) -> Iterator[tuple[float, str, dict]]:
    """(offset, node, record-as-written) for every phase change, in time order."""
    steps = []
    for n, r, p, h, e in scenario:
        for i in range(1, len(h) + 1):
            steps.append((h[i - 1][1], n, record(n, r, p, h, e, t0, upto=i)))
    return iter(sorted(steps, key=lambda s: s[0]))


def write_all(consul, prefix: str, scenario: list, t0: Optional[float] = None) -> dict[str, dict]:
    t0 = time.time() - 600 if t0 is None else t0
    recs = records(scenario, t0)
    for node, rec in recs.items():
        consul.put(f"{prefix}{node}", rec)
    return recs
