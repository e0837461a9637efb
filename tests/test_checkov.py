"""checkov over every synthesized stack: zero failed checks (skips would be justified in .checkov.yaml)."""
from __future__ import annotations

import json
import subprocess

import pytest

from stacks.settings import environments
from tests.helpers import ROOT, require_tool


@pytest.mark.parametrize("env", environments())
def test_checkov_clean(synth_dir, env):
    checkov = require_tool("checkov", ".tools/checkov/bin/checkov")
    result = subprocess.run(
        [checkov, "-f", str(synth_dir / "stacks" / env / "cdk.tf.json"), "--framework", "terraform_json",
         "--skip-download", "--config-file", str(ROOT / ".checkov.yaml"), "--output", "json", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 0
    assert result.returncode == 0
