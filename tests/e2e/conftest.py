"""Fixtures for the end-to-end tests against the mini OpenStack (tests/e2e/openstack/up.sh).

The credentials file is written by up.sh, root-only. A missing file or a cloud
that does not answer skips the e2e tests on a developer machine and FAILS them
in CI (CI=true), where `make e2e` must have brought the cloud up.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import in_ci

STATE_DIR = Path(os.environ.get("K8S_E2E_OS_STATE", "/var/lib/k8s-e2e-openstack"))
CLOUDS_FILE = Path(os.environ.get("K8S_E2E_CLOUDS", STATE_DIR / "clouds.yaml"))
USER_CLOUD = "k8s-e2e"
ADMIN_CLOUD = "k8s-e2e-admin"


def _unavailable(reason: str):
    message = f"mini OpenStack not available: {reason} (bring it up with: sudo tests/e2e/openstack/up.sh)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def clouds_file() -> Path:
    """Path of the clouds.yaml holding both the non-admin (k8s-e2e) and the admin cloud."""
    if not CLOUDS_FILE.is_file():
        _unavailable(f"{CLOUDS_FILE} does not exist")
    if not os.access(CLOUDS_FILE, os.R_OK):
        _unavailable(f"{CLOUDS_FILE} is not readable by this user (it is root-only)")
    return CLOUDS_FILE


def _connect(clouds_file: Path, cloud: str):
    try:
        import openstack
        from openstack.config import loader
    except ImportError as exc:  # pinned in requirements.txt
        _unavailable(f"openstacksdk missing: {exc}")
    config = loader.OpenStackConfig(config_files=[str(clouds_file)], load_envvars=False)
    # A stuck API must fail the test, not hang it.
    conn = openstack.connection.Connection(config=config.get_one(cloud=cloud, api_timeout=60))
    try:
        conn.authorize()
    except Exception as exc:  # any failure here means: no usable cloud
        _unavailable(f"cannot authenticate as cloud {cloud!r}: {exc.__class__.__name__}")
    return conn


@pytest.fixture(scope="session")
def os_user(clouds_file):
    """openstacksdk Connection as the non-admin user of project k8s-e2e."""
    conn = _connect(clouds_file, USER_CLOUD)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def os_admin(clouds_file):
    """openstacksdk Connection as the cloud admin (to read server hosts)."""
    conn = _connect(clouds_file, ADMIN_CLOUD)
    yield conn
    conn.close()
