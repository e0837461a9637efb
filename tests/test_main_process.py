"""main.py as a process: how it exits and what it loads (the synth benchmark relies on both)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import synth_env
from tests.helpers import ROOT

# Runs main.py as a child of a subreaper, so the jsii Node.js processes it leaves behind are
# reparented here and can be waited for; reports main.py's status and how long they lived on.
PROBE = """
import ctypes, json, os, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
exited = time.monotonic()
stuck = True
while time.monotonic() < exited + 10:
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0):
            time.sleep(0.01)
    except ChildProcessError:
        stuck = False
        break
print(json.dumps({"status": status, "stragglers_s": time.monotonic() - exited, "stuck": stuck}))
"""


def run_probe(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out)


def test_synth_exit_leaves_no_node_process_behind(tmp_path):
    """main.py skips jsii's graceful shutdown; the Node.js processes must still end by themselves."""
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path), "CLUSTER_ENVS": "dev"}
    result = run_probe(env)
    assert result["status"] == 0
    assert not result["stuck"] and result["stragglers_s"] < 5, result
    assert json.loads((tmp_path / "stacks" / "dev" / "cdk.tf.json").read_text())["resource"]


def test_bad_input_exit_status_survives_the_fast_exit(tmp_path):
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "dev.yaml").write_text((ROOT / "stacks" / "dev.yaml").read_text() + "\nbogus: 1\n")
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path / "out"), "CLUSTER_STACKS_DIR": str(stacks)}
    assert run_probe(env)["status"] == 2
    assert not (tmp_path / "out").exists()


def test_synth_loads_only_the_provider_bindings_it_uses(tmp_path):
    """The package's own __init__ would import all ~150 resource bindings (a fifth of a second)."""
    code = ("import runpy, sys; sys.argv = ['main.py']; import main; main.synth(['dev']); "
            "print(sorted(m for m in sys.modules if m.startswith('cdktf_cdktf_provider_openstack.')))")
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path)}
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                                       text=True, timeout=300, check=True).stdout.replace("'", '"'))
    assert "cdktf_cdktf_provider_openstack.compute_instance_v2" in loaded
    assert "cdktf_cdktf_provider_openstack.networking_port_v2" in loaded
    assert "cdktf_cdktf_provider_openstack.vpnaas_service_v2" not in loaded
    assert len([m for m in loaded if m.count(".") == 1]) < 30, loaded
