"""The real CLI: `cdktf synth` through cdktf-cli on Node.js 22, all three stacks."""
from __future__ import annotations

import json
import subprocess

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
