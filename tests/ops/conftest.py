from __future__ import annotations

import io

import pytest

from tests.helpers import require_tool
from tests.ops.consul_server import start_consul

PREFIX = "k8s-formation/dev/"
STATUS = PREFIX + "status/"


@pytest.fixture(scope="session")
def consul_bin() -> str:
    return require_tool("consul", ".tools/consul/usr/bin/consul")


@pytest.fixture(scope="session")
def consul(consul_bin, tmp_path_factory):
    server = start_consul(consul_bin, tmp_path_factory.mktemp("consul"))
    server.operator_token = server.make_read_token(PREFIX)
    yield server
    server.stop()


@pytest.fixture
def kv(consul, monkeypatch):
    """A clean `dev` prefix, and the operator's read-only token in the environment."""
    consul.delete_tree(PREFIX)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", consul.operator_token)
    yield consul
    consul.delete_tree(PREFIX)


class Run:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


class TtyIO(io.StringIO):
    """An output stream that says it is a terminal, to exercise the live redraw."""

    def isatty(self) -> bool:
        return True


def run_cli(*argv: str, out: io.StringIO | None = None) -> Run:
    from ops.cli import main

    out = out or io.StringIO()
    err = io.StringIO()
    code = main(list(argv), out=out, err=err)
    return Run(code, out.getvalue(), err.getvalue())
