#!/usr/bin/env python3
"""Synth cost against its floor, measured in one run; rerun with `make bench`.

floor:   python -c "import cdktf, cdktf_cdktf_provider_openstack"  (jsii + both assemblies)
imports: the imports main.py itself does (cdktf, the ~20 provider bindings the constructs
         use, the project's modules) without building a stack: what synth adds on top of
         the library work it needs. Reported beside the floor, not instead of it.
all:     python main.py for dev, staging and prod
large:   one prod-like stack, 3 control-plane nodes and 500 workers in 2 pools
Each is run REPEAT times interleaved; medians are compared. Peak memory is the largest
resident set of the process tree (Python + the jsii Node.js kernel).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
LIMITS = {"all": 1.5, "large": 2.5}
IMPORTS_ONLY = (
    "import gc, sys; gc.disable(); sys.path.insert(0, %r); import main; "
    "main.register_provider_package_only(); import cdktf, stacks.cluster_stack" % str(ROOT)
)


def env_for(outdir: str, stacks_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ, CDKTF_OUTDIR=outdir, CLUSTER_ENVS="")
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env['PATH']}"
    if stacks_dir:
        env["CLUSTER_STACKS_DIR"] = stacks_dir
    return env


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and the peak RSS in MiB of the command's largest process (measured in a
    fresh helper process, so RUSAGE_CHILDREN covers only this command's tree)."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    seconds, kib = json.loads(out)
    return seconds, kib // 1024


def large_stack(stacks_dir: Path) -> None:
    prod = yaml.safe_load((ROOT / "stacks" / "prod.yaml").read_text())
    prod["cluster"]["name"] = "large"
    prod["worker_pools"][0]["count"] = 350
    prod["worker_pools"][1]["count"] = 150
    (stacks_dir / "large.yaml").write_text(yaml.safe_dump(prod))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "large-stacks").mkdir()
        large_stack(tmp_path / "large-stacks")
        cases = {
            "floor": ([PYTHON, "-c", "import cdktf, cdktf_cdktf_provider_openstack"], env_for(tmp)),
            "imports": ([PYTHON, "-c", IMPORTS_ONLY], env_for(tmp)),
            "all": ([PYTHON, str(ROOT / "main.py")], env_for(str(tmp_path / "out-all"))),
            "large": ([PYTHON, str(ROOT / "main.py")],
                      env_for(str(tmp_path / "out-large"), str(tmp_path / "large-stacks"))),
        }
        samples: dict[str, list[tuple[float, int]]] = {name: [] for name in cases}
        for _ in range(REPEAT):
            for name, (cmd, env) in cases.items():
                samples[name].append(timed(cmd, env))
        doc = json.loads((tmp_path / "out-large" / "stacks" / "large" / "cdk.tf.json").read_text())
        ports = doc["resource"]["openstack_networking_port_v2"].values()
        nodes = sum(len(p["for_each"]) for p in ports if isinstance(p.get("for_each"), dict))
        assert nodes == 503, f"the large stack should have 503 nodes, has {nodes}"
    median = {name: statistics.median(s for s, _ in runs) for name, runs in samples.items()}
    peak = {name: max(m for _, m in runs) for name, runs in samples.items()}
    result = {
        "repeat": REPEAT,
        "large_stack_nodes": 503,
        "median_seconds": {k: round(v, 3) for k, v in median.items()},
        "peak_rss_mib": peak,
        "ratio_to_floor": {k: round(median[k] / median["floor"], 3) for k in ("all", "large")},
        "ratio_to_imports": {k: round(median[k] / median["imports"], 3) for k in ("all", "large")},
        "limits": LIMITS,
    }
    result["ok"] = all(result["ratio_to_floor"][k] <= LIMITS[k] for k in LIMITS)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "synth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':<8}{'median s':>10}{'ratio':>8}{'limit':>7}{'peak MiB':>10}")
    for name in cases:
        ratio = f"{median[name] / median['floor']:.2f}"
        limit = f"{LIMITS[name]:.1f}" if name in LIMITS else ""
        print(f"{name:<8}{median[name]:>10.2f}{ratio:>8}{limit:>7}{peak[name]:>10}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
