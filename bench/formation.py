#!/usr/bin/env python3
"""Formation benchmark: protocol overhead and lock hand-off latency against a real Consul 1.8.7.

Runs 3 control-plane + 20 worker simulated nodes twice in one go on one Consul server (ACLs on):
  1. blocking queries (the engine's normal mode),
  2. the original write-up's 20 s sleep-and-poll loop (engine's --poll-interval 20),
with the kubeadm stand-in's fixed durations (init 20 s, control-plane join 8 s, worker join 8 s).
Nodes run ansible/roles/k8s_formation/files/k8s_formation.py directly (the exact script the role runs;
23 concurrent ansible-playbook processes would measure Ansible's start-up on a 2-core machine instead).

  overhead  = wall time (all nodes started, i.e. after the harness's fork loop -> all joined) / critical path,
              critical path = init + max(2 x control-plane join, worker join)   (workers join in parallel
              with the serialised control-plane joins once `initialized` exists)
  hand-off  = next node's kubeadm start - end of the kubeadm step it waited for (init or a control-plane
              join); this includes the publishing transaction / lock release, so it bounds the
              release -> start latency from above.

Usage: .venv/bin/python bench/formation.py [--workers 20] [--init 20] [--join 8] [--poll 20]
Writes bench/results/formation.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.consul_fixture import ConsulServer  # noqa: E402
from tests.formation.harness import Cluster, Timing, check_invariants  # noqa: E402

CONSUL = ROOT / ".tools/consul/usr/bin/consul"


def handoffs(cluster: Cluster) -> dict[str, list[float]]:
    inv = cluster.invocations()
    init_end = next(r["end"] for r in inv if r["cmd"] == "init" and r["event"] == "end" and r["rc"] == 0)
    starts = [r for r in inv if r["event"] == "start" and r["cmd"] == "join"]
    cp_ends = sorted(r["end"] for r in inv if r["event"] == "end" and r["cmd"] == "join" and r.get("control_plane"))
    cp_starts = sorted(r["t"] for r in starts if r.get("control_plane"))
    worker = [r["t"] - init_end for r in starts if not r.get("control_plane")]
    # The first control-plane join waits for `initialized`, each later one for the previous join's lock release.
    cp = [s - e for s, e in zip(cp_starts, [init_end] + cp_ends)]
    return {"initialized_to_worker_join": worker, "lock_to_cp_join": cp, "all": worker + cp}


def run(consul: ConsulServer, workdir: Path, name: str, workers: int, timing: Timing) -> dict:
    cluster = Cluster(consul, workdir / name, name, timing)
    try:
        nodes = cluster.add_nodes(3, workers)
        spawn_begin = time.time()
        for node in nodes:
            node.start("engine")
        # "All nodes started": the harness needs ~0.3 s to fork 23 processes; the clock starts after that.
        started = time.time()
        for node in nodes:
            assert node.wait(900) == 0, node.output()[-3000:]
        wall = time.time() - started
        check_invariants(cluster, nodes)
        critical = timing.init + max(2 * timing.cp_join, timing.join)
        h = handoffs(cluster)
        inv = cluster.invocations()
        first_init = min(r["t"] for r in inv if r["cmd"] == "init")
        last_end = max(r["end"] for r in inv if r["event"] == "end")
        return {"mode": "poll %gs" % timing.poll_interval if timing.poll_interval else "blocking",
                "nodes": len(nodes), "wall_s": round(wall, 2), "critical_path_s": critical,
                "overhead_ratio": round(wall / critical, 4),
                "critical_path_brief_s": timing.init + 2 * timing.cp_join + timing.join,
                "overhead_ratio_brief": round(wall / (timing.init + 2 * timing.cp_join + timing.join), 4),
                "spawn_loop_s": round(started - spawn_begin, 3),
                "wall_from_first_spawn_s": round(time.time() - spawn_begin, 2),
                "startup_to_init_s": round(first_init - started, 3),
                "last_join_to_all_exited_s": round(started + wall - last_end, 3),
                "handoff_median_s": round(statistics.median(h["all"]), 3),
                "handoff_p95_s": round(sorted(h["all"])[int(0.95 * (len(h["all"]) - 1))], 3),
                "handoff_max_s": round(max(h["all"]), 3),
                "handoff_cp_join_s": [round(x, 3) for x in h["lock_to_cp_join"]]}
    finally:
        cluster.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--init", type=float, default=20.0)
    ap.add_argument("--join", type=float, default=8.0)
    ap.add_argument("--poll", type=float, default=20.0, help="poll interval of the comparison run (0: skip it)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/formation.json"))
    a = ap.parse_args()
    if not CONSUL.exists():
        print("consul missing: run tests/tools/install-consul.sh", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="formation-bench-") as tmp:
        consul = ConsulServer(str(CONSUL), Path(tmp) / "consul", persistent=True)
        consul.start()
        try:
            base = dict(init=a.init, join=a.join, cp_join=a.join, reset=1.0, session_ttl=30, lock_delay=15,
                        wait=60, expiry_margin=300)
            results.append(run(consul, Path(tmp), "benchblock", a.workers, Timing(**base)))
            if a.poll > 0:
                results.append(run(consul, Path(tmp), "benchpoll", a.workers, Timing(**base, poll_interval=a.poll)))
        finally:
            consul.stop()
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "consul": "1.8.7 (Debian bullseye)",
              "standin_durations_s": {"init": a.init, "control_plane_join": a.join, "worker_join": a.join},
              "driver": "k8s_formation.py run directly, one process per node", "runs": results}
    if len(results) == 2:
        report["handoff_median_ratio_poll_vs_blocking"] = round(
            results[1]["handoff_median_s"] / max(results[0]["handoff_median_s"], 1e-3), 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    cols = ["mode", "nodes", "wall_s", "critical_path_s", "overhead_ratio", "handoff_median_s", "handoff_p95_s",
            "handoff_max_s"]
    print(" | ".join(f"{c:>16}" for c in cols))
    for r in results:
        print(" | ".join(f"{str(r[c]):>16}" for c in cols))
    if "handoff_median_ratio_poll_vs_blocking" in report:
        print(f"hand-off median, polling / blocking: {report['handoff_median_ratio_poll_vs_blocking']}x")
    print(f"written: {a.out}")
    blocking = results[0]
    ok = blocking["overhead_ratio"] <= 1.05 and blocking["handoff_median_s"] < 0.5
    print("targets (overhead <= 1.05, hand-off median < 0.5 s):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
