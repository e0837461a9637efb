"""OpenTofu accepts what the app synthesizes: `tofu init` + `tofu validate` per stack, fully offline.

The provider comes from the filesystem mirror that tests/tools/install-tofu.sh builds; the project
tofurc has no registry fallback, so these tests also prove that `tofu init` never needs a registry.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, in_ci, require_tool

TOFU_HOME = ROOT / ".tools" / "tofu"
TOFURC = TOFU_HOME / "tofurc"
PROVIDER_SOURCE = "terraform-provider-openstack/openstack"
ENVIRONMENTS = sorted(p.stem for p in (ROOT / "stacks").glob("*.yaml"))

# cdktf keeps tofu's working state next to cdk.tf.json; a copy must start without it so that
# init really resolves the provider from the mirror instead of reusing an old selection.
_TOFU_STATE = {".terraform", ".terraform.lock.hcl", "terraform.tfstate", "terraform.tfstate.backup"}


@pytest.fixture(scope="session")
def tofu() -> str:
    return require_tool("tofu", ".tools/tofu/bin/tofu")


@pytest.fixture(scope="session")
def tofu_env(tofu: str) -> dict[str, str]:
    if not TOFURC.is_file():
        message = f"{TOFURC} missing; run tests/tools/install-tofu.sh"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "OS_"))}
    env.update(TF_CLI_CONFIG_FILE=str(TOFURC), TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    return env


def run_tofu(tofu: str, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tofu, *args], cwd=cwd, env=env, text=True, capture_output=True, timeout=300, check=False)


def init_and_validate(tofu: str, env: dict[str, str], workdir: Path) -> dict:
    init = run_tofu(tofu, env, workdir, "init", "-backend=false", "-input=false", "-no-color")
    assert init.returncode == 0, (
        f"tofu init failed (the mirror holds openstack {sorted(mirrored_versions())}):\n{init.stdout}\n{init.stderr}")
    validate = run_tofu(tofu, env, workdir, "validate", "-json", "-no-color")
    report = json.loads(validate.stdout)
    errors = [d for d in report.get("diagnostics", []) if d.get("severity") == "error"]
    assert report["valid"] and report["error_count"] == 0 and not errors, json.dumps(errors, indent=2)
    assert validate.returncode == 0
    return report


def locked_provider(workdir: Path) -> tuple[str, str, list[str]]:
    """(address, version, hashes) of the openstack provider in the dependency lock file."""
    text = (workdir / ".terraform.lock.hcl").read_text()
    block = re.search(r'provider "([^"]*/' + re.escape(PROVIDER_SOURCE) + r')" \{(.*?)\n\}', text, re.S)
    assert block, f"openstack provider not locked:\n{text}"
    version = re.search(r'^\s*version\s*=\s*"([^"]+)"', block.group(2), re.M)
    hashes = re.findall(r'"((?:h1|zh):[^"]+)"', block.group(2))
    assert version, text
    return block.group(1), version.group(1), hashes


def mirrored_versions() -> set[str]:
    base = TOFU_HOME / "mirror" / "registry.opentofu.org" / PROVIDER_SOURCE
    return {p.name for p in base.iterdir()} if base.is_dir() else set()


def test_minimal_openstack_config_inits_offline_and_locks_mirror_hash(tofu, tofu_env, tmp_path):
    version = max(mirrored_versions(), default=None)
    assert version, "the mirror holds no openstack provider"
    config = {
        "terraform": {"required_providers": {"openstack": {"source": PROVIDER_SOURCE, "version": f"~> {version}"}}},
        "provider": {"openstack": [{"auth_url": "http://127.0.0.1:5000/v3", "region": "RegionOne"}]},
        "resource": {"openstack_networking_network_v2": {"net": {"name": "validate-only", "admin_state_up": True}}},
        "output": {"network_id": {"value": "${openstack_networking_network_v2.net.id}"}},
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))

    init_and_validate(tofu, tofu_env, tmp_path)
    address, locked, hashes = locked_provider(tmp_path)
    assert address == f"registry.opentofu.org/{PROVIDER_SOURCE}"
    assert locked == version
    assert any(h.startswith("h1:") for h in hashes), hashes

    # A lock file that disagrees with the mirrored binary must stop init: the hash is really checked.
    lock = tmp_path / ".terraform.lock.hcl"
    lock.write_text(re.sub(r'"h1:[^"]+"', '"h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="', lock.read_text()))
    shutil.rmtree(tmp_path / ".terraform")
    tampered = run_tofu(tofu, tofu_env, tmp_path, "init", "-backend=false", "-input=false", "-no-color")
    assert tampered.returncode != 0
    assert "checksum" in (tampered.stdout + tampered.stderr).lower()


@pytest.mark.slow
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_synthesized_stack_validates_offline(environment, synth_dir, tofu, tofu_env, tmp_path):
    """`synth_dir` (tests/conftest.py) is one run of main.py over every stacks/*.yaml."""
    stack_dir = synth_dir / "stacks" / environment
    assert (stack_dir / "cdk.tf.json").is_file(), f"no stack {environment!r} synthesized into {synth_dir}"
    workdir = tmp_path / environment
    shutil.copytree(stack_dir, workdir, ignore=lambda _dir, names: [n for n in names if n in _TOFU_STATE])

    init_and_validate(tofu, tofu_env, workdir)
    _, locked, hashes = locked_provider(workdir)
    assert locked in mirrored_versions()
    assert any(h.startswith("h1:") for h in hashes), hashes


def test_cdktf_wrapper_locks_providers_from_the_mirror(tofu, tmp_path):
    """cdktf runs `<engine> providers lock -platform=linux_amd64`, which ignores the CLI config."""
    wrapper = TOFU_HOME / "bin" / "tofu-cdktf"
    assert os.access(wrapper, os.X_OK), f"{wrapper} missing; run tests/tools/install-tofu.sh"
    version = max(mirrored_versions())
    config = {"terraform": {"required_providers": {"openstack": {"source": PROVIDER_SOURCE, "version": version}}}}
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env["TF_CLI_CONFIG_FILE"] = "/nonexistent/tofurc"  # the wrapper must not depend on the caller's config
    lock = subprocess.run([str(wrapper), "providers", "lock", "-platform=linux_amd64", "-no-color"], cwd=tmp_path,
                          env=env, text=True, capture_output=True, timeout=120, check=False)
    assert lock.returncode == 0, lock.stdout + lock.stderr
    _, locked, hashes = locked_provider(tmp_path)
    assert locked == version and any(h.startswith("h1:") for h in hashes), hashes


CDKTF_PROBE_APP = '''
from cdktf import App, LocalBackend, TerraformOutput, TerraformStack
app = App()
stack = TerraformStack(app, "probe")
LocalBackend(stack, path=%(state)r)
stack.add_override("terraform.required_providers.openstack", {"source": %(source)r, "version": %(version)r})
stack.add_override("provider.openstack", [{"auth_url": "http://127.0.0.1:9/v3"}])
stack.add_override("resource.terraform_data.probe", {"input": "engine-probe"})
TerraformOutput(stack, "probe", value="${terraform_data.probe.output}")
app.synth()
'''


@pytest.mark.slow
def test_cdktf_deploy_and_destroy_run_on_opentofu(tmp_path):
    """cdktf-cli drives OpenTofu through TERRAFORM_BINARY_NAME (init, providers lock, apply, destroy),
    in a pty from @cdktf/node-pty-prebuilt-multiarch, without any registry."""
    cdktf = require_tool("cdktf", "node_modules/.bin/cdktf")
    require_tool("tofu", ".tools/tofu/bin/tofu")
    wrapper = TOFU_HOME / "bin" / "tofu-cdktf"
    version = f"~> {max(mirrored_versions())}"
    state_file = tmp_path / "probe.tfstate"
    (tmp_path / "main.py").write_text(
        CDKTF_PROBE_APP % {"source": PROVIDER_SOURCE, "version": version, "state": str(state_file)})
    (tmp_path / "cdktf.json").write_text(json.dumps({
        "language": "python", "app": f"{ROOT / '.venv' / 'bin' / 'python'} main.py", "projectId": "engine-probe",
        "sendCrashReports": "false", "terraformProviders": [], "terraformModules": [], "context": {}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(PATH=os.pathsep.join([str(ROOT / "node_modules" / ".bin"), env.get("PATH", "")]),
               TERRAFORM_BINARY_NAME=str(wrapper), CHECKPOINT_DISABLE="1", CI="1")

    def cdktf_run(*args: str) -> str:
        result = subprocess.run([cdktf, *args, "--auto-approve"], cwd=tmp_path, env=env, text=True,
                                capture_output=True, timeout=600, check=False)
        output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", result.stdout + result.stderr)
        assert result.returncode == 0, output
        return output

    deployed = cdktf_run("deploy")
    assert "OpenTofu" in deployed and "Apply complete! Resources: 1 added" in deployed, deployed
    state = json.loads(state_file.read_text())
    assert [r["type"] for r in state["resources"]] == ["terraform_data"]
    assert state["outputs"]["probe"]["value"] == "engine-probe"
    lock = (tmp_path / "cdktf.out" / "stacks" / "probe" / ".terraform.lock.hcl").read_text()
    assert f'provider "registry.opentofu.org/{PROVIDER_SOURCE}"' in lock

    destroyed = cdktf_run("destroy")
    assert "Destroy complete! Resources: 1 destroyed" in destroyed, destroyed
    assert json.loads(state_file.read_text())["resources"] == []
