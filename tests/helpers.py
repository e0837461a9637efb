"""Shared test helpers: locating the real tools the tests drive."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
# The node-side scripts (bootstrap, formation engine) run on the image's own python3: 3.10 on
# Ubuntu 22.04, 3.12 on 24.04. The tests run them on this interpreter unless pointed elsewhere.
NODE_PYTHON = os.environ.get("K8S_TEST_NODE_PYTHON", sys.executable)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, *candidates: str) -> str:
    """Absolute path of a tool: the first existing candidate (relative to the repo root), else PATH.

    A missing tool skips the test on a developer machine but fails it in CI, where
    `make test` must have installed everything.
    """
    for cand in candidates:
        path = Path(cand)
        if not path.is_absolute():
            path = ROOT / path
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    message = f"required tool {name!r} not found (looked in {list(candidates)} and PATH); run `make test` to install it"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_root(why: str) -> None:
    """Namespaces need root: skip on a developer machine, fail in CI (which runs as root)."""
    if os.geteuid() != 0:
        message = f"needs root: {why}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
