"""Snapshot of each environment's complete synthesized JSON.

A diff here that renames a resource changes a Terraform address: real servers would be
destroyed and recreated. Review such a diff as a breaking change; update with
`pytest tests/test_snapshots.py --snapshot-update` only when it is meant.
"""
from __future__ import annotations

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.settings import environments


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("env", environments())
def test_synthesized_stack_snapshot(synthesized, env, snapshot_json):
    assert synthesized[env] == snapshot_json


def test_resource_addresses_snapshot(synthesized, snapshot_json):
    """The addresses alone: the short list to read when a snapshot diff is large."""
    addresses = {env: sorted(f"{rtype}.{rid}" for rtype, items in doc["resource"].items() for rid in items)
                 for env, doc in synthesized.items()}
    assert addresses == snapshot_json
