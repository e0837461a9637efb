from __future__ import annotations

import io

import pytest

from tests.consul_fixture import ConsulServer

PREFIX = "k8s-formation/dev/"
STATUS = PREFIX + "status/"


@pytest.fixture(scope="session")
def consul(consul_bin, tmp_path_factory):
    with ConsulServer(consul_bin, tmp_path_factory.mktemp("consul")) as server:
        server.operator_token = server.create_read_token(PREFIX)
        yield server


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
