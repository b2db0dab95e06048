"""The cluster tier's own parts that need no cluster: its build's skips and failures, kind's nodes, the Gateway
stand-in, the upstream chart cache. The tier itself is tests/cluster (marker `cluster`)."""

import hashlib
import json
import os
import subprocess

import pytest
import yaml
from _pytest.outcomes import Skipped

from lab import artifacts, catalog
from tests.cluster import cluster
from tests.cluster.fake_machine import node_objects
from tests.cluster.standins import STAND_INS, programmed
from tests.harness import ROOT, warm_cache


@pytest.mark.parametrize("ci", ["", "true"])
def test_not_built_yet_is_a_skip_with_the_way_to_build_it_and_a_failure_in_ci(monkeypatch, tmp_path, ci):
    """Outside CI the long build waits to be asked for; CI (.ci/run builds it first) runs the tier, so a missing
    build there fails."""
    if not any(os.access(os.path.join(folder, "go"), os.X_OK) for folder in os.environ["PATH"].split(os.pathsep)):
        pytest.skip("Go is not on PATH here: the earlier skip, for Go, applies first")
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv(cluster.BUILD_ENV, raising=False)
    monkeypatch.setenv("LAB_CLUSTER_DIR", str(tmp_path / "not-built"))
    with pytest.raises(pytest.fail.Exception if ci else Skipped,
                       match=r"the Kubernetes control plane is not built yet: run tools/cluster/build.sh"):
        cluster.build_cluster()


def test_ci_builds_the_control_plane_before_the_tests():
    """.ci/run builds both tiers' binaries before `./lab.sh test`, so the cluster tier runs in CI."""
    lines = [line.strip() for line in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8")
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines.index("tools/cluster/build.sh") < lines.index("./lab.sh test"), lines


def test_ci_without_go_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(pytest.fail.Exception, match="the cluster tests need Go on PATH"):
        cluster.build_cluster()


def test_the_build_without_go_fails_in_one_sentence(tmp_path):
    result = subprocess.run(["bash", os.path.join(ROOT, "tools", "cluster", "build.sh")], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "LAB_CLUSTER_DIR": str(tmp_path / "out")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Building the Kubernetes control plane needs Go 1.26 or newer on PATH (https://go.dev/dl/)."]


def test_the_kubernetes_wrapper_replaces_every_staging_module_with_the_release_of_its_minor():
    text = open(os.path.join(ROOT, "tools", "cluster", "kubernetes", "go.mod"), encoding="utf-8").read()
    required = [line.split()[2] for line in text.splitlines() if line.startswith("require k8s.io/kubernetes ")]
    assert len(required) == 1 and required[0].startswith("v1.36."), required
    replaced = [line.split() for line in text.splitlines() if "=>" in line]
    assert len(replaced) == 33, len(replaced)
    patch = required[0].split(".", 2)[2]
    assert all(words[0] == words[2] and words[3] == f"v0.36.{patch}" for words in replaced), replaced


def test_kind_nodes_are_named_labelled_and_tainted_as_kind_makes_them():
    config = {"nodes": [{"role": "control-plane", "labels": {"istio-ambient-lab/owner": "p.s.1234"}},
                        {"role": "worker"}, {"role": "worker"}]}

    nodes = {n["metadata"]["name"]: n for n in node_objects("lab", config)}

    assert list(nodes) == ["lab-control-plane", "lab-worker", "lab-worker2"]
    control = nodes["lab-control-plane"]
    assert control["metadata"]["labels"]["istio-ambient-lab/owner"] == "p.s.1234"
    assert control["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert control["spec"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    worker = nodes["lab-worker2"]
    assert "taints" not in worker["spec"]
    assert worker["metadata"]["labels"]["kubernetes.io/hostname"] == "lab-worker2"
    assert "node-role.kubernetes.io/control-plane" not in worker["metadata"]["labels"]
    assert all(n["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"} for n in nodes.values())


def _gateway(class_name: str, generation: int = 2, conditions=None) -> dict:
    return {"metadata": {"name": "g", "namespace": "default", "generation": generation},
            "spec": {"gatewayClassName": class_name}, "status": {"conditions": conditions or [
                {"type": "Accepted", "status": "Unknown", "reason": "Pending"},
                {"type": "Programmed", "status": "Unknown", "reason": "Pending"}]}}


def test_the_gateway_stand_in_sets_programmed_for_istiods_classes_only_and_keeps_the_rest():
    patch = programmed(_gateway("istio-waypoint"))

    conditions = patch["status"]["conditions"]
    assert conditions[0] == {"type": "Accepted", "status": "Unknown", "reason": "Pending"}
    assert conditions[1]["type"] == "Programmed" and conditions[1]["status"] == "True"
    assert conditions[1]["observedGeneration"] == 2
    assert programmed(_gateway("another-controller")) is None
    assert programmed(_gateway("istio", conditions=conditions)) is None  # done for this generation
    assert programmed(_gateway("istio", generation=3, conditions=conditions)) is not None
    assert set(STAND_INS) == {"docker", "kind", "kubelets", "istiod's Gateway status"}


def test_the_warm_cache_is_filled_from_the_upstream_charts(tmp_path):
    charts = cluster.upstream_charts()

    warm_cache(str(tmp_path), fetch=cluster.upstream_fetch(charts))

    for chart in artifacts.lab_charts(catalog.ISTIO_VERSION, catalog.ISTIO_CHART_REPOSITORY, True):
        cached = (tmp_path / "charts" / chart.file_name).read_bytes()
        upstream = (charts / chart.file_name).read_bytes()
        assert hashlib.sha256(cached).digest() == hashlib.sha256(upstream).digest(), chart.file_name
    bundle = tmp_path / "gateway-api" / f"standard-install-{catalog.GATEWAY_API_VERSION}.yaml"
    kinds = [doc["kind"] for doc in yaml.safe_load_all(bundle.read_text()) if doc]
    assert kinds.count("CustomResourceDefinition") == 10 and "ValidatingAdmissionPolicy" in kinds
    recorded = json.loads((tmp_path / "charts" / "digests.json").read_text())
    assert len(recorded) == 6
