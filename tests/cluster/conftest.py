"""Fixtures of the cluster tier: one control plane and one lab per test module, torn down whatever happens."""

from __future__ import annotations

import os

import pytest

from tests.cluster.cluster import ClusterLab, build_cluster, started_plane, upstream_charts
from tests.engine.engine import build_engine


@pytest.fixture(scope="session")
def cluster_dir() -> str:
    return build_cluster()


@pytest.fixture(scope="session")
def charts():
    return upstream_charts()


@pytest.fixture(scope="module")
def plane(cluster_dir, charts):
    """A running control plane with the Gateway stand-in, gone with its files at the end of the module."""
    with started_plane(cluster_dir) as control:
        yield control


@pytest.fixture(scope="module")
def lab(plane, charts) -> ClusterLab:
    engine = build_engine()
    return ClusterLab(engine, os.path.join(plane.scratch, "lab"), plane, charts)
