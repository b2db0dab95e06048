"""The existing-cluster target's identity record under the real engine and command provider (issue #18).

pulumi-command runs a Command's create again on any change of its inputs, handing it the stored stdout: a stack
pointed at another kubeconfig file must keep the record of the cluster it was brought up on, and a run that reaches
another cluster must fail and leave the record as it was, or ``./lab.sh destroy`` would compare with the wrong one.
"""

from __future__ import annotations

import os

import pytest

from components.cluster import IDENTITY_RESOURCE
from lab import cluster_identity
from tests.engine.engine import EngineLab, build_engine
from tests.engine.fake_tool import kubeconfig

pytestmark = pytest.mark.engine

PROJECT = "istio-ambient-lab"
STACK = "l4-only"
CONTEXT = "kind-lab"


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> EngineLab:
    lab = EngineLab(build_engine(), str(tmp_path_factory.mktemp("engine-identity")))
    lab.new_stack(STACK)
    for key, value in (("target", "existing"), ("kubeContext", CONTEXT), ("preloadImages", "false")):
        lab.pulumi("config", "set", f"{PROJECT}:{key}", value)
    return lab


def _up_on(lab: EngineLab, uid: str, kubeconfig_name: str):
    """`pulumi up` with the stack's kubeconfig at a new path, on a cluster whose kube-system has this UID. The
    up then stops at the fake API server's refused port, after the identity Command (the provider waits for it)."""
    path = os.path.join(lab.project, kubeconfig_name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(kubeconfig("lab", str(lab.api_port)))
    lab.pulumi("config", "set", f"{PROJECT}:kubeconfigPath", path)
    lab.env["LAB_FAKE_KUBE_SYSTEM_UID"] = uid
    result = lab.pulumi("up", "--yes", "--skip-preview", check=False)
    return result, result.stdout + result.stderr


def _recorded(lab: EngineLab) -> tuple[cluster_identity.Identity | None, str]:
    identity = next(r for r in lab.resources(STACK) if r["urn"].endswith(f"::{IDENTITY_RESOURCE}"))
    return cluster_identity.from_record(identity["outputs"].get("stdout")), identity["inputs"]["environment"]["KUBECONFIG"]


def test_the_first_up_records_the_cluster(lab):
    _, output = _up_on(lab, "uid-first", "first.yaml")

    recorded, files = _recorded(lab)
    assert recorded is not None and recorded.uid == "uid-first", output
    assert files.endswith("first.yaml")


def test_another_kubeconfig_reaching_another_cluster_fails_and_keeps_the_record(lab):
    result, output = _up_on(lab, "uid-other", "other.yaml")

    assert result.returncode != 0, output
    assert "now reaches another cluster (kube-system UID uid-other" in output, output
    recorded, files = _recorded(lab)
    assert recorded.uid == "uid-first" and files.endswith("first.yaml"), (recorded, files)


def test_another_kubeconfig_reaching_the_same_cluster_keeps_the_record(lab):
    _, output = _up_on(lab, "uid-first", "moved.yaml")

    recorded, files = _recorded(lab)
    assert recorded.uid == "uid-first", output
    assert files.endswith("moved.yaml"), output  # the update ran, and kept the record
