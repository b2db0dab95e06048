"""Fixtures of the cluster tier: one control plane and one lab per test module, torn down whatever happens."""

from __future__ import annotations

import os
import tempfile

import pytest

from tests.cluster.cluster import ClusterLab, build_cluster, network_namespaces_work, upstream_charts
from tests.cluster.controlplane import ControlPlane
from tests.cluster.standins import GatewayProgrammer
from tests.engine.engine import build_engine


@pytest.fixture(scope="session")
def cluster_dir() -> str:
    return build_cluster()


@pytest.fixture(scope="session")
def charts():
    return upstream_charts()


@pytest.fixture(scope="module")
def plane(cluster_dir, charts):
    """A running control plane with the Gateway stand-in; stopped, its namespace and files gone, on the way out
    (also after a failed test or Ctrl-C: pytest runs fixture finalizers then, and PR_SET_PDEATHSIG ends the
    processes if the test process itself is killed)."""
    network_namespaces_work()
    work = tempfile.mkdtemp(prefix="lab-cluster-")
    control = ControlPlane(os.path.join(cluster_dir, "bin"), os.path.join(work, "plane"))
    control.scratch = work  # the lab's files live beside it and go with it
    programmer = None
    try:
        control.start()
        programmer = GatewayProgrammer(control.kubectl).start()
        control.programmer = programmer
        yield control
    finally:
        if programmer is not None:
            programmer.stop()
        control.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(plane, charts) -> ClusterLab:
    engine = build_engine()
    return ClusterLab(engine, os.path.join(plane.scratch, "lab"), plane, charts)
