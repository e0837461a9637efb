#!/usr/bin/env python3
"""The CDKTF app: one ClusterStack per stacks/<env>.yaml.

`python main.py` is a plain synth (what `cdktf synth` runs). Operator commands
(`status`, `wait`, `timeline`, `kubeconfig`) are dispatched to ops.cli.
"""
from __future__ import annotations

import atexit
import gc
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

# The repo root must be on sys.path before `constructs` is first imported, so that the
# local constructs/ folder is merged into the PyPI package's namespace (see DESIGN.md).
ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OPS_COMMANDS = {"status", "wait", "timeline", "kubeconfig"}

# jsii's Node.js kernel trips a deprecation notice (util.isArray) on every run; keep synth
# output free of it without hiding other warnings.
os.environ["NODE_OPTIONS"] = " ".join(filter(None, [os.environ.get("NODE_OPTIONS"), "--disable-warning=DEP0044"]))


PROVIDER_PACKAGE = "cdktf_cdktf_provider_openstack"


def register_provider_package_only() -> None:
    """Let each construct module import just the provider bindings it names.

    The package's __init__ imports the Python bindings of all ~150 OpenStack resource
    types (a fifth of a second) although a stack uses about 20. Registering the package
    without running its __init__ keeps `import cdktf_cdktf_provider_openstack.<type>`
    working: each submodule loads the same jsii assembly through the package's `_jsii`.
    """
    if PROVIDER_PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PROVIDER_PACKAGE)
    if spec is None:
        return  # not installed: the construct imports report it
    sys.modules[PROVIDER_PACKAGE] = importlib.util.module_from_spec(spec)


def _load_and_prepare(envs: list[str] | None, stacks_dir: Path | None) -> dict:
    """Every environment's settings, validated, and its user-data rendered: pure Python work."""
    from stacks.node_facts import prerender_user_data
    from stacks.settings import STACKS_DIR, environments, load_settings

    stacks_dir = stacks_dir or STACKS_DIR
    settings = {env: load_settings(env, stacks_dir) for env in (envs or environments(stacks_dir))}
    for env_settings in settings.values():
        prerender_user_data(env_settings)
    return settings


def synth(envs: list[str] | None = None, stacks_dir: Path | None = None) -> None:
    # A short-lived process: the cyclic collector's passes over the many objects jsii's
    # bindings create while importing cost more than the little garbage they would free.
    gc.disable()
    # Settings and user-data are prepared on a second thread while this one loads the jsii
    # runtime, which mostly waits for Node.js: synth costs little more than that load.
    # Nothing is written before every environment is valid: bad input leaves cdktf.out as it was.
    register_provider_package_only()
    with ThreadPoolExecutor(max_workers=1) as pool:
        prepared = pool.submit(_load_and_prepare, envs, stacks_dir)
        from cdktf import App

        from stacks.cluster_stack import ClusterStack
        settings = prepared.result()
    app = App(stack_traces=False)
    for env, env_settings in settings.items():
        ClusterStack(app, env, settings=env_settings)
    app.synth()


def main(argv: list[str]) -> int:
    if argv and argv[0] in OPS_COMMANDS:
        from ops.cli import main as ops_main

        return ops_main(argv)
    from stacks.settings import SettingsError

    try:
        only = [e for e in os.environ.get("CLUSTER_ENVS", "").split(",") if e]
        stacks_dir = os.environ.get("CLUSTER_STACKS_DIR")
        synth(only or None, Path(stacks_dir) if stacks_dir else None)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def exit_without_teardown(status: int) -> NoReturn:
    """Exits as Python would, minus the interpreter's teardown.

    The exit handlers still run, jsii's among them: it stops its Node.js processes and relays
    what they print last. Only freeing the objects the jsii bindings created is skipped: about
    70 ms of a synth that takes under a second, with every file already written.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    args = sys.argv[1:]
    status = main(args)
    if args and args[0] in OPS_COMMANDS:
        sys.exit(status)
    exit_without_teardown(status)
