"""The `constructs` namespace trap (DESIGN.md): the local folder must merge into the
PyPI package, never shadow it, and cloudinit/ must not shadow cloud-init's package."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import synth_env
from tests.helpers import ROOT


def test_no_init_files_in_namespace_folders():
    assert not (ROOT / "constructs" / "__init__.py").exists()
    assert not (ROOT / "cloudinit" / "__init__.py").exists()


def test_both_imports_work_in_a_fresh_interpreter():
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from constructs import Construct\n"
        "from constructs.control_plane import ControlPlane\n"
        "from constructs.worker_pool import WorkerPool\n"
        "import cdktf\n"
        "assert issubclass(ControlPlane, Construct)\n"
        "print('ok')\n" % str(ROOT)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_main_puts_root_on_path_itself():
    """`python main.py` from another directory still finds the local constructs."""
    code = "import runpy, sys; sys.argv=['main.py']; import importlib.util as u; " \
           "spec=u.spec_from_file_location('m', %r); m=u.module_from_spec(spec); spec.loader.exec_module(m); " \
           "from constructs.api_endpoint import ApiEndpoint; print('ok')" % str(ROOT / "main.py")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr


def test_synth_imports_only_the_provider_bindings_it_uses(tmp_path):
    """main.py registers the provider package without its __init__, which would import all ~150
    resource bindings (a fifth of a second); the bindings a stack uses must still import."""
    code = ("import sys; sys.path.insert(0, %r); import main; main.synth(['dev']); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('cdktf_cdktf_provider_openstack.'))))"
            % str(ROOT))
    env = synth_env() | {"CDKTF_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = {m.split(".")[1] for m in result.stdout.split()}
    assert {"compute_instance_v2", "networking_port_v2", "lb_loadbalancer_v2"} <= loaded
    assert "vpnaas_service_v2" not in loaded and len(loaded) < 30, sorted(loaded)
    assert (tmp_path / "stacks" / "dev" / "cdk.tf.json").is_file()
