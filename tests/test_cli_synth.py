"""The real CLI: `cdktf synth` through cdktf-cli on Node.js 22, all three stacks."""
from __future__ import annotations

import json
import subprocess
import sys

from stacks.settings import environments
from tests.conftest import synth_env
from tests.helpers import ROOT, require_tool


def test_cdktf_synth_all_stacks_without_warnings(tmp_path):
    cdktf = require_tool("cdktf", "node_modules/.bin/cdktf")
    node = require_tool("node", "node_modules/.bin/node")
    assert subprocess.run([node, "--version"], capture_output=True, text=True).stdout.startswith("v22.")
    result = subprocess.run([cdktf, "synth", "--output", str(tmp_path)], cwd=ROOT, env=synth_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    output = (result.stdout + result.stderr).lower()
    for banner in ("warning", "deprecat", "end-of-life", "end of life", "unsupported"):
        assert banner not in output, output
    for env in environments():
        doc = json.loads((tmp_path / "stacks" / env / "cdk.tf.json").read_text())
        assert doc["resource"]["openstack_compute_instance_v2"]


def test_plain_synth_prints_nothing(tmp_path):
    """`python main.py` itself: any Node.js warning would reach its stderr."""
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    assert sorted(p.name for p in (tmp_path / "stacks").iterdir()) == sorted(environments())


def test_synth_still_relays_what_node_prints_at_exit(tmp_path):
    """main.py skips the interpreter's teardown but runs the exit handlers: jsii's must still
    relay a message its Node.js processes print at their very end."""
    hook = tmp_path / "last-words.js"
    hook.write_text("process.on('exit', () => console.error('LAST-WORDS ' + process.pid));\n")
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path / "out"), "CLUSTER_ENVS": "dev",
                         "NODE_OPTIONS": f"--require {hook}"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("LAST-WORDS") == 2, result.stderr  # the jsii host and its kernel
