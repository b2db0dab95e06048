"""The lab on a real Kubernetes control plane under the real engine (issue #17).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run in a network namespace of the tier's own
(tests/cluster/controlplane.py); the engine, the kubernetes provider, kubectl, the lab's CLI and program are real, and
the charts are rebuilt from upstream sources (../shared/upstream/charts/MANIFEST.md says how they differ from the
published packages); what stands in for what is listed in tests/cluster/standins.py. What this shows: the releases
install into a real API server in order and end `deployed`, the CRDs are served and the lab's objects pass their
schemas and CEL rules (no admission webhook judges them: istiod does not run), every Deployment and DaemonSet becomes
ready (kwok plays the kubelets), a second up changes nothing, the mesh mode switches in place, destroy runs the
stored delete and deletes none of the state's objects itself. What it cannot: the data plane (no container runs), so
the verification fails here, and must say so.

    tools/cluster/build.sh && venv/bin/python -m pytest -m cluster

The tests of this module run in order on one stack.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from lab import catalog
from tests.cluster.cluster import dump_api_objects

pytestmark = pytest.mark.cluster

STACK = "l4-only"
PROJECT = "istio-ambient-lab"
RELEASE = "kubernetes:helm.sh/v3:Release"


def _output(result) -> str:
    return result.stdout + result.stderr


def _printed_json(result) -> dict:
    """The JSON a `./lab.sh pulumi ...` printed: the lab first says which pulumi it uses, on a line of its own."""
    return json.loads(result.stdout[result.stdout.index("\n{") + 1:])


def _counted_changes(stdout: str) -> list[str]:
    """Every line of pulumi's `Resources:` summaries (the preview's and the update's) that counts a change, i.e. all
    but `N unchanged`: ["~ 3 updated"], or [] when nothing changed. Fails when the output has no summary at all."""
    changes, summaries, inside = [], 0, False
    for line in stdout.splitlines():
        if line.strip() == "Resources:":
            inside, summaries = True, summaries + 1
        elif inside and line.strip():
            if not line.strip().endswith(" unchanged"):
                changes.append(line.strip())
        else:
            inside = False
    assert summaries, f"pulumi printed no Resources: summary:\n{stdout}"
    return changes


def _state(lab, stack: str = STACK) -> list[dict]:
    exported = lab.lab_sh("pulumi", "stack", "export", "--stack", stack)
    assert exported.returncode == 0, _output(exported)
    return _printed_json(exported)["deployment"].get("resources") or []


def _helm_releases(plane) -> dict[str, str]:
    """Each Helm release in the cluster and the status of its newest revision, as Helm's secrets record them."""
    secrets = plane.get_json("secrets", "-A", "-l", "owner=helm")["items"]
    newest: dict[str, tuple[int, str]] = {}
    for secret in secrets:
        labels = secret["metadata"]["labels"]
        version = int(labels["version"])
        if labels["name"] not in newest or newest[labels["name"]][0] < version:
            newest[labels["name"]] = (version, labels["status"])
    return {name: status for name, (_, status) in newest.items()}


def _not_ready(plane) -> list[str]:
    """Every Deployment and DaemonSet that is not fully ready, as `kind namespace/name ready/wanted`."""
    lagging = []
    for deployment in plane.get_json("deployments", "-A")["items"]:
        wanted = deployment["spec"].get("replicas", 1)
        ready = deployment.get("status", {}).get("readyReplicas", 0)
        if ready != wanted:
            lagging.append(f"Deployment {deployment['metadata']['namespace']}/{deployment['metadata']['name']} "
                           f"{ready}/{wanted}")
    for daemonset in plane.get_json("daemonsets", "-A")["items"]:
        status = daemonset.get("status", {})
        wanted, ready = status.get("desiredNumberScheduled", 0), status.get("numberReady", 0)
        if wanted == 0 or ready != wanted:
            lagging.append(f"DaemonSet {daemonset['metadata']['namespace']}/{daemonset['metadata']['name']} "
                           f"{ready}/{wanted}")
    return lagging


def test_the_nodes_are_the_ones_kind_would_make(lab, plane):
    """The fixture itself: before any up, no node; the fake kind's create registers kind's nodes, kwok readies
    them. (Checked through the first up's create in the next test; here the empty cluster and the namespace.)"""
    assert plane.get_json("nodes")["items"] == []
    # The namespace has loopback alone: no route to a pod, node or Service address, so nothing leaves the machine.
    routes = plane.run(["ip", "-4", "route", "show", "table", "all"]).stdout
    assert "10." not in routes and "172." not in routes, routes
    # No route: the connect fails in the kernel at once (ENETUNREACH), before any packet exists.
    unreachable = plane.run([sys.executable, "-c", "import socket; socket.create_connection(('10.96.0.1', 443), 5)"])
    assert unreachable.returncode != 0 and "Network is unreachable" in unreachable.stderr, unreachable.stderr


def test_up_installs_everything_into_the_real_api_server_and_the_verification_names_what_is_missing(lab, plane):
    result = lab.lab_sh("up", STACK)

    output = _output(result)
    # Everything the lab creates is there; only the verification, which needs a data plane, fails.
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert "Verification failed: 0 of " in output and " checks passed (mode l4-only" in output and "; failed: enrolment, " in output, output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("`pulumi up` failed: read its output above and the diagnostics in "), last

    nodes = {n["metadata"]["name"]: n for n in plane.get_json("nodes")["items"]}
    assert set(nodes) == {"ambient-l4-only-control-plane", "ambient-l4-only-worker", "ambient-l4-only-worker2"}
    control_plane = nodes["ambient-l4-only-control-plane"]
    assert "node-role.kubernetes.io/control-plane" in control_plane["metadata"]["labels"]
    assert control_plane["spec"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert control_plane["metadata"]["labels"]["istio-ambient-lab/owner"].startswith(f"{PROJECT}.{STACK}.")

    resources = _state(lab)
    releases = {r["outputs"]["name"] for r in resources if r["type"] == RELEASE}
    assert {chart.release for chart in catalog.ISTIO_CHARTS} <= releases, releases
    assert _helm_releases(plane) == {name: "deployed" for name in releases}

    crds = plane.get_json("crds")["items"]
    established = {c["metadata"]["name"] for c in crds
                   if any(x["type"] == "Established" and x["status"] == "True" for x in c["status"]["conditions"])}
    names = {c["metadata"]["name"] for c in crds}
    assert names == established, sorted(names - established)
    assert {"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
            "peerauthentications.security.istio.io", "authorizationpolicies.security.istio.io"} <= names

    # Every custom object of the lab's state (Gateways, HTTPRoute, PeerAuthentication, AuthorizationPolicies) is
    # stored by the API server as the state has it: it passed the CRDs' schemas and rules.
    # Each custom kind has a type token of its own (kubernetes:<group>/<version>:<Kind>), not one shared type.
    customs = [r for r in resources if r["type"].startswith("kubernetes:")
               and r["type"].rsplit(":", 1)[-1] in {"Gateway", "HTTPRoute", "PeerAuthentication", "AuthorizationPolicy"}]
    kinds = {r["outputs"]["kind"] for r in customs}
    assert {"Gateway", "HTTPRoute", "PeerAuthentication", "AuthorizationPolicy"} <= kinds, kinds
    for custom in customs:
        meta = custom["outputs"]["metadata"]
        group = custom["outputs"]["apiVersion"].split("/")[0]
        # kubectl takes a kind's singular name with its group (authorizationpolicy.security.istio.io); the plural is
        # not always the kind and an "s" (authorizationpolicies).
        stored = plane.get_json(f"{custom['outputs']['kind'].lower()}.{group}", meta["name"], "-n", meta["namespace"])
        assert stored["metadata"]["uid"] == meta["uid"]

    assert _not_ready(plane) == []
    assert plane.programmer.patched, "no Gateway waited for the stand-in's Programmed condition"


def test_with_fail_on_verification_error_false_the_up_completes_and_the_report_names_the_failed_checks(lab, plane):
    lab.set_config(STACK, "failOnVerificationError", False)

    result = lab.lab_sh("up", STACK)

    output = _output(result)
    assert result.returncode == 0, output
    assert f"The {STACK} lab is up" in output, output
    # The second up of the same resources (the setting is the verification's alone): it changes nothing, not even once.
    assert _counted_changes(result.stdout) == [], result.stdout
    shown = lab.lab_sh("pulumi", "stack", "output", "verification", "--json", "--stack", STACK)
    report = _printed_json(shown)
    assert report["passed"] is False, report
    assert "failed:" in report["summary"], report
    report_file = json.loads(open(f"{lab.project}/.lab/reports/{STACK}.json", encoding="utf-8").read())
    failed = [r for r in report_file["results"] if not r["passed"]]
    assert failed and all(r["name"] in report["summary"] for r in failed), (failed, report["summary"])
    # Each failed check says, in words, what it saw instead of what a working mesh shows.
    assert all(r["observed"].strip() and r["expected"].strip() for r in failed), failed


def test_a_second_look_finds_no_changes(lab, plane):
    preview = lab.lab_sh("pulumi", "preview", "--expect-no-changes", "--diff", "--stack", STACK)
    assert preview.returncode == 0, _output(preview)

    again = lab.lab_sh("up", STACK)
    assert again.returncode == 0, _output(again)
    assert _counted_changes(again.stdout) == [], again.stdout

    refresh = lab.lab_sh("pulumi", "refresh", "--expect-no-changes", "--yes", "--diff", "--stack", STACK)
    assert refresh.returncode == 0, _output(refresh)


def test_kubectl_kubeconfig_preflight_and_diagnose_work_on_the_stack_s_cluster(lab, plane):
    from lab.leaks import find_leaks

    listed = lab.lab_sh("kubectl", STACK, "get", "nodes", "-o", "name")
    assert listed.returncode == 0, _output(listed)
    assert sorted(listed.stdout.split()) == ["node/ambient-l4-only-control-plane", "node/ambient-l4-only-worker",
                                             "node/ambient-l4-only-worker2"]

    exported = lab.lab_sh("kubeconfig", STACK)
    assert exported.returncode == 0, _output(exported)
    line = [text for text in exported.stdout.splitlines() if text.startswith("export KUBECONFIG=")]
    assert len(line) == 1, exported.stdout
    path = line[0].split("=", 1)[1].strip("'\"")
    assert os.stat(path).st_mode & 0o077 == 0
    used = plane.run([lab.env["LAB_CLUSTER_KUBECTL"], "--kubeconfig", path, "get", "namespace", "istio-system",
                      "-o", "name"])
    assert used.stdout.strip() == "namespace/istio-system", used.stderr
    assert lab.kind_key not in exported.stdout

    checked = lab.lab_sh("preflight", STACK)
    assert checked.returncode == 0, _output(checked)
    assert "kind cluster ambient-l4-only belongs to this stack" in checked.stdout, checked.stdout

    diagnosed = lab.lab_sh("diagnose", STACK)
    assert diagnosed.returncode == 0, _output(diagnosed)
    folder = diagnosed.stdout.strip().splitlines()[-1].removeprefix("Diagnostics: ")
    files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    assert len(files) > 3, files
    bundle = "".join(open(f, encoding="utf-8", errors="replace").read() for f in files)
    assert "istio-system" in bundle  # it read the real cluster
    assert find_leaks(bundle, [lab.kind_key]) == []


def _preview_ops(lab) -> dict[str, str]:
    """Each step of a preview that is not `same`, as `<name> <kind>` (a type's last part: Gateway, Release) -> op."""
    previewed = lab.lab_sh("pulumi", "preview", "--json", "--stack", STACK)
    assert previewed.returncode == 0, _output(previewed)
    return {step["urn"].rsplit("::", 1)[1] + " " + step["urn"].split("::")[-2].rsplit("$", 1)[-1].rsplit(":", 1)[-1]:
            step["op"] for step in _printed_json(previewed).get("steps") or [] if step["op"] != "same"}


# What docs/configuration.md ("Switching a stack's mode in place") says a switch changes: the waypoint and the L7
# policy come (l7) and go (l4-only); the L4 policy's principals, productpage's istio.io/use-waypoint label and Kiali
# change in place. Nothing else, and nothing is replaced.
SWITCH_COMES_AND_GOES = ("productpage-waypoint Waypoint", "productpage-waypoint Gateway",
                         "productpage-l7 AuthorizationPolicy")
SWITCH_UPDATES = ("productpage-l4 AuthorizationPolicy", "productpage-use-waypoint ServicePatch", "kiali Release")


@pytest.mark.parametrize("mode", ["l7", "l4-only"])
def test_the_mesh_mode_switches_in_place(lab, plane, mode):
    lab.set_config(STACK, "meshMode", mode)

    planned = _preview_ops(lab)
    result = lab.lab_sh("up", STACK)

    assert result.returncode == 0, _output(result)
    assert planned == {**{name: "create" if mode == "l7" else "delete" for name in SWITCH_COMES_AND_GOES},
                       **{name: "update" for name in SWITCH_UPDATES}}, planned
    waypoints = plane.get_json("gateways.gateway.networking.k8s.io", "-n", "default")["items"]
    assert [w["metadata"]["name"] for w in waypoints if w["spec"]["gatewayClassName"] == "istio-waypoint"] == \
        ([catalog.WAYPOINT_NAME] if mode == "l7" else [])
    service = plane.get_json("service", catalog.PRODUCTPAGE, "-n", "default")
    assert service["metadata"]["labels"][catalog.USE_WAYPOINT_LABEL] == (catalog.WAYPOINT_NAME if mode == "l7" else "none")
    assert _preview_ops(lab) == {}, "something stays pending after the switch"


def _state_objects(lab) -> dict[str, str]:
    """Every Kubernetes object the stack's state holds (not the Helm releases, whose objects Helm records), keyed as
    dump_api_objects keys them, with its uid."""
    objects = {}
    for resource in _state(lab):
        out = resource.get("outputs") or {}
        meta = out.get("metadata") or {}
        if resource["type"].startswith("kubernetes:") and resource["type"] != RELEASE and meta.get("uid"):
            group = out["apiVersion"].rpartition("/")[0] or "core"
            objects[f"{group}/{out['kind']} {meta.get('namespace', '')}/{meta['name']}"] = meta["uid"]
    return objects


def test_destroy_runs_the_stored_delete_and_leaves_the_objects_to_the_cluster_s_deletion(lab, plane):
    namespaces_before = {n["metadata"]["name"] for n in plane.get_json("namespaces")["items"]}
    recorded = _state_objects(lab)
    assert len(recorded) > 30, recorded

    result = lab.lab_sh("destroy", STACK)

    assert result.returncode == 0, _output(result)
    deletes = [c for c in lab.calls() if c["tool"] == "kind" and c["argv"][:2] == ["delete", "cluster"]]
    assert [d["argv"][d["argv"].index("--name") + 1] for d in deletes] == ["ambient-l4-only"]
    # The fake kind's delete removes the nodes only: everything else is as the update left it, so pulumi deleted
    # no object one by one through the API server before the cluster went.
    assert plane.get_json("nodes")["items"] == []
    assert {n["metadata"]["name"] for n in plane.get_json("namespaces")["items"]} == namespaces_before
    # Not one object of the state was deleted (or deleted and made again) through the API server.
    after = dump_api_objects(plane)
    assert {key: uid for key, uid in recorded.items()
            if (after.get(key) or {}).get("metadata", {}).get("uid") != uid} == {}
    assert set(_helm_releases(plane).values()) == {"deployed"}
    assert [r for r in _state(lab) if r["type"] != "pulumi:pulumi:Stack"] == []
