"""Fixtures for the formation tests: one real Consul server per module, one fresh cluster per test."""
from __future__ import annotations

import itertools
import uuid

import pytest

from tests.consul_fixture import ConsulServer
from tests.formation.harness import Cluster, Timing

_names = itertools.count(1)


@pytest.fixture(scope="module")
def consul(consul_bin, tmp_path_factory):
    with ConsulServer(consul_bin, tmp_path_factory.mktemp("consul"), persistent=True) as server:
        yield server


@pytest.fixture
def make_cluster(consul, tmp_path):
    """make_cluster(timing) -> a Cluster with its own name, KV prefix, ACL token and stand-in state."""
    clusters: list[Cluster] = []

    def factory(timing: Timing | None = None) -> Cluster:
        name = f"t{next(_names)}{uuid.uuid4().hex[:4]}"
        cluster = Cluster(consul, tmp_path / name, name, timing)
        clusters.append(cluster)
        return cluster

    yield factory
    for cluster in clusters:
        cluster.close()
