"""Fixtures shared by the synth-side tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def synth_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    env["CHECKPOINT_DISABLE"] = "1"
    if env.get("TF_CLI_CONFIG_FILE") and not Path(env["TF_CLI_CONFIG_FILE"]).exists():
        env.pop("TF_CLI_CONFIG_FILE")  # as the Makefile does: a missing file means a banner
    return env


def run_synth(outdir: Path, stacks_dir: Path | None = None, envs: str = "") -> subprocess.CompletedProcess:
    """`python main.py` exactly as cdktf runs it, into `outdir`."""
    env = synth_env()
    env["CDKTF_OUTDIR"] = str(outdir)
    env["CLUSTER_ENVS"] = envs
    if stacks_dir:
        env["CLUSTER_STACKS_DIR"] = str(stacks_dir)
    return subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("cdktf.out")
    result = run_synth(outdir)
    assert result.returncode == 0, result.stderr
    return outdir


@pytest.fixture(scope="session")
def synthesized(synth_dir) -> dict[str, dict]:
    """env -> the synthesized Terraform JSON of that stack."""
    stacks = synth_dir / "stacks"
    return {p.name: json.loads((p / "cdk.tf.json").read_text()) for p in sorted(stacks.iterdir())}
