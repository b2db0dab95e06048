"""Issue #17's test 5: the lab on a cluster it did not make (`target: existing`), on the tier's real control plane.

The cluster is the tier's control plane with three nodes registered as a kubeadm cluster's (kwok plays their
kubelets); nothing of kind is involved. The stack reaches it through a `KUBECONFIG` of two files, as kubectl merges
them: the context in one, the cluster and its user (a client certificate) in the other. What this shows:
preflight refuses what another install would leave (an `istio-system` namespace, a ClusterRole `istio-cni`, Gateway
API CRDs the lab did not install, another namespace labelled for a mesh), each in its own sentence, and a second
stack on the same cluster, before anything is created; `up` completes with `failOnVerificationError: false` (no data
plane runs, so the verification fails), with STRICT mTLS in the lab's namespaces alone, no cluster-wide grant to
the addons and the client key nowhere in the state; `./lab.sh kubectl` and `diagnose` reach the cluster through
both files, and the bundle holds nothing of another team's namespace; `destroy` leaves the cluster as it found it
(another team's workload included): a dump of every API object before `up` and after `destroy` differs only by what
destroy's last line names, and running the commands that line prints removes that too.

The tests of this module run in order on one stack.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import yaml

from lab import catalog
from tests.cluster.cluster import dump_api_objects, dump_difference, register_nodes, split_kubeconfig

pytestmark = pytest.mark.cluster

STACK = "onprem"
SECOND_STACK = "onprem-again"
CONTEXT = "onprem"
OTHER_CONTEXT = "onprem-ops"
OTHER_TEAM = "other-team"  # another name for the same cluster, as a second team would have it
PREFLIGHT_REFUSED = "Preflight found the problems marked FAIL above"
SEEN: dict[str, object] = {}  # what the earlier tests of the module found, for the later ones


def _output(result) -> str:
    return result.stdout + result.stderr


def _write_stack(lab, stack: str, context: str) -> None:
    path = os.path.join(lab.project, "stacks", f"Pulumi.{stack}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("config: {}\n")
    lab.set_config(stack, "target", "existing")
    lab.set_config(stack, "kubeContext", context)
    # No data plane runs here, so the verification fails: let the up complete and keep the stack (issue #17, test 1).
    lab.set_config(stack, "failOnVerificationError", False)
    lab.quick_checks(stack)


@pytest.fixture(scope="module")
def cluster(lab, plane):
    """The cluster as a user has it before the lab: nodes, and a KUBECONFIG of two files; the stack file set."""
    SEEN["nodes"] = register_nodes(plane, "onprem")
    # Another team's workload, which the lab must leave alone (and its diagnostics must not collect).
    plane.kubectl("create", "namespace", OTHER_TEAM)
    plane.kubectl("create", "deployment", "their-app", "-n", OTHER_TEAM, "--image=registry.invalid/their-app:1",
                  "--replicas=2")
    plane.kubectl("rollout", "status", "deployment/their-app", "-n", OTHER_TEAM, "--timeout=120s")
    kubeconfig, key = split_kubeconfig(plane, plane.scratch, CONTEXT, others=(OTHER_CONTEXT,))
    lab.env["KUBECONFIG"] = kubeconfig
    SEEN["key"] = key
    _write_stack(lab, STACK, CONTEXT)
    return plane


def _fail_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("FAIL")]


def test_preflight_passes_on_the_cluster_as_it_is(lab, cluster):
    """The control for the refusals below: the same cluster without them passes (warnings allowed)."""
    result = lab.lab_sh("preflight", STACK)

    assert result.returncode == 0, _output(result)
    assert _fail_lines(result.stdout) == [], result.stdout
    assert f"context {CONTEXT} answers" in result.stdout, result.stdout
    assert result.stdout.strip().splitlines()[-1] == "Preflight passed."


def _gateway_api_crd_documents(charts) -> list[dict]:
    bundle = charts / f"gateway-api-{catalog.GATEWAY_API_VERSION}-standard-install.yaml"
    return [d for d in yaml.safe_load_all(bundle.read_text()) if d and d["kind"] == "CustomResourceDefinition"]


def _gateway_api_crds(charts) -> str:
    return yaml.safe_dump_all(_gateway_api_crd_documents(charts))


def _served_lists(plane, charts, timeout_s: float = 120) -> None:
    """Waits until every Gateway API type lists. A CRD deleted before the API server has initialized its storage
    stays Terminating ("could not list instances: storage is (re)initializing", seen here: the API server's CRD
    finalizer failed once and did not come back to it within minutes), so the tests delete only CRDs whose storage
    answers."""
    types = [f"{d['spec']['names']['plural']}.{d['spec']['group']}" for d in _gateway_api_crd_documents(charts)]
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{name}" for name in types])
    deadline = time.monotonic() + timeout_s
    for name in types:
        while plane.kubectl("get", name, "-A", "-o", "name", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{name} does not list after {timeout_s:.0f} s"
            time.sleep(0.5)


def _make_gateway_api_crds(plane, charts) -> None:
    plane.kubectl("create", "-f", "-", input_text=_gateway_api_crds(charts))
    _served_lists(plane, charts)


# (what another install left, how to make it, how to remove it, the check that refuses it, its sentence's start);
# the last is issue #18's: a namespace an earlier Istio left labelled would have its running pods captured.
LEFT_BEHIND = {
    "istio-system namespace": (
        lambda plane, charts: plane.kubectl("create", "namespace", catalog.ISTIO_NAMESPACE),
        lambda plane, charts: plane.kubectl("delete", "namespace", catalog.ISTIO_NAMESPACE, "--wait=true",
                                            "--timeout=120s"),
        "istio-system",
        "The cluster already has an istio-system namespace (another Istio install, or one left behind) where the lab "
        "installs its own Istio: use a cluster without Istio, or remove that install first"),
    "istio-cni ClusterRole": (
        lambda plane, charts: plane.kubectl("create", "clusterrole", "istio-cni", "--verb=get", "--resource=pods"),
        lambda plane, charts: plane.kubectl("delete", "clusterrole", "istio-cni"),
        "istio objects",
        "The cluster already holds Istio's cluster-wide objects from another install (istio-cni), on which the lab's "
        "Helm releases would fail part-way through up"),
    "Gateway API CRDs": (
        _make_gateway_api_crds,
        lambda plane, charts: plane.kubectl("delete", "-f", "-", "--wait=true", "--timeout=120s",
                                            input_text=_gateway_api_crds(charts)),
        "gateway api",
        f"The cluster already has the Gateway API CRDs ({catalog.GATEWAY_API_VERSION}), which the lab must not "
        f"install over: use them with `./lab.sh pulumi config set istio-ambient-lab:installGatewayApiCrds false "
        f"--stack {STACK}`."),
    "mesh label on another namespace": (
        lambda plane, charts: plane.kubectl("label", "namespace", OTHER_TEAM, "istio-injection=enabled"),
        lambda plane, charts: plane.kubectl("label", "namespace", OTHER_TEAM, "istio-injection-"),
        "mesh labels",
        f"Namespaces outside the lab's carry labels that would put their running pods into the lab's mesh: "
        f"{OTHER_TEAM} (istio-injection=enabled): if they are left from an earlier Istio, remove them"),
}


@pytest.mark.parametrize("left", list(LEFT_BEHIND))
def test_preflight_refuses_what_another_install_left_each_in_its_sentence(lab, cluster, charts, left):
    make, remove, check, sentence = LEFT_BEHIND[left]
    make(cluster, charts)
    try:
        result = lab.lab_sh("preflight", STACK)
    finally:
        remove(cluster, charts)

    assert result.returncode == 1, _output(result)
    failed = _fail_lines(result.stdout)
    assert len(failed) == 1, result.stdout
    name, _, message = failed[0].removeprefix("FAIL").strip().partition("  ")
    assert name == check, failed
    message = message.strip()
    assert message.startswith(sentence), message
    # One sentence: it ends once, at the end (the dots inside backticks are a command's, not a sentence's).
    assert message.endswith(".") and ". " not in re.sub(r"`[^`]*`", "", message), message
    assert result.stderr.strip().splitlines()[-1].startswith(PREFLIGHT_REFUSED), result.stderr


def test_up_completes_on_the_existing_cluster_through_a_kubeconfig_of_two_files(lab, cluster):
    SEEN["before"] = dump_api_objects(cluster)

    result = lab.lab_sh("up", STACK)

    output = _output(result)
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    assert f"existing cluster, context {CONTEXT}" in output and f"The {STACK} lab is up" in output, output
    # The provider got a merged config of the one context (its parts are in two files), kept secret: the client
    # key is nowhere in the state in plain text.
    exported = lab.lab_sh("pulumi", "stack", "export", "--stack", STACK)
    assert exported.returncode == 0, _output(exported)
    assert SEEN["key"] not in exported.stdout
    assert "client-key-data" not in exported.stdout
    # Nothing of kind: the nodes are the cluster's own, untouched.
    assert [c for c in lab.calls() if c["tool"] == "kind"] == []
    assert sorted(n["metadata"]["name"] for n in cluster.get_json("nodes")["items"]) == sorted(SEEN["nodes"])

    namespaces = catalog.lab_namespaces(catalog.EXISTING_APPS_NAMESPACE)
    # STRICT mTLS in the lab's namespaces alone, never the mesh-wide policy of the root namespace.
    strict = {(p["metadata"]["namespace"], p["metadata"]["name"])
              for p in cluster.get_json("peerauthentications.security.istio.io", "-A")["items"]
              if p["spec"].get("mtls", {}).get("mode") == "STRICT"}
    assert (catalog.EXISTING_APPS_NAMESPACE, "default") in strict, strict
    assert all(namespace in namespaces and namespace != catalog.ISTIO_NAMESPACE for namespace, _ in strict), strict
    # The addons hold no cluster-wide grant: no ClusterRoleBinding names their service accounts.
    bound = [b["metadata"]["name"] for b in cluster.get_json("clusterrolebindings")["items"]
             for subject in b.get("subjects") or []
             if subject.get("kind") == "ServiceAccount" and subject.get("name") in ("prometheus", "kiali")
             and subject.get("namespace") in namespaces]
    assert bound == [], bound


def test_a_second_look_at_the_existing_stack_finds_no_changes(lab, cluster):
    """What the existing target adds to test 2 (the merged kubeconfig, the identity record, the per-namespace
    policies): no perpetual diff, in the preview or against the cluster's own objects."""
    preview = lab.lab_sh("pulumi", "preview", "--expect-no-changes", "--diff", "--stack", STACK)
    assert preview.returncode == 0, _output(preview)

    refresh = lab.lab_sh("pulumi", "refresh", "--expect-no-changes", "--yes", "--diff", "--stack", STACK)
    assert refresh.returncode == 0, _output(refresh)


def test_a_second_stack_on_the_same_cluster_is_refused_before_anything_is_created(lab, cluster):
    _write_stack(lab, SECOND_STACK, OTHER_CONTEXT)
    before = dump_api_objects(cluster)

    result = lab.lab_sh("up", SECOND_STACK)

    output = _output(result)
    assert result.returncode == 1, output
    failed = "\n".join(_fail_lines(result.stdout))
    assert "The cluster already has an istio-system namespace" in failed, result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(PREFLIGHT_REFUSED), result.stderr
    assert "pulumi up" not in result.stdout.split("[2/6] preflight", 1)[1], result.stdout
    after = dump_api_objects(cluster)
    assert (set(before) ^ set(after)) == set(), dump_difference(before, after)
    listed = lab.lab_sh("pulumi", "stack", "ls", "--json")
    assert SECOND_STACK not in listed.stdout, listed.stdout


def test_kubectl_and_diagnose_reach_the_cluster_through_both_files_and_collect_only_the_lab_s_namespaces(lab, cluster):
    from lab.leaks import find_leaks

    listed = lab.lab_sh("kubectl", STACK, "get", "namespaces", "-o", "name")
    assert listed.returncode == 0, _output(listed)
    assert f"namespace/{OTHER_TEAM}" in listed.stdout.split() and "namespace/istio-system" in listed.stdout.split()

    diagnosed = lab.lab_sh("diagnose", STACK)

    assert diagnosed.returncode == 0, _output(diagnosed)
    folder = diagnosed.stdout.strip().splitlines()[-1].removeprefix("Diagnostics: ")
    files = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    bundle = "".join(open(f, encoding="utf-8", errors="replace").read() for f in files)
    assert "istio-system" in bundle and catalog.EXISTING_APPS_NAMESPACE in bundle  # it read the real cluster
    assert OTHER_TEAM not in bundle and "their-app" not in bundle and "kube-system" not in bundle
    assert find_leaks(bundle, [SEEN["key"]]) == []


def _named_leftover(key: str, item: dict, line: str) -> bool:
    """Whether destroy's last line names the object of a dump key as one the lab leaves on purpose."""
    kind_and_namespace, _, name = key.rpartition("/")

    def crds_named(group: str) -> bool:
        if group.endswith(".istio.io"):
            return "Istio's CRDs" in line
        if group == "gateway.networking.k8s.io":
            return f"the Gateway API CRDs {catalog.GATEWAY_API_VERSION} and their admission policy" in line
        return False

    if kind_and_namespace == "apiextensions.k8s.io/CustomResourceDefinition ":
        return crds_named(name.partition(".")[2])
    if kind_and_namespace == "apiregistration.k8s.io/APIService ":
        # The API server registers a local APIService (no service behind it) for each group and version its CRDs
        # serve, and removes it with the last of them: part of the CRDs the line names.
        return item["spec"].get("service") is None and crds_named(name.partition(".")[2])
    if kind_and_namespace.startswith("admissionregistration.k8s.io/ValidatingAdmissionPolicy"):
        return name == "safe-upgrades.gateway.networking.k8s.io" and "their admission policy" in line
    if kind_and_namespace.startswith("core/ConfigMap "):
        return name == "istio-ca-root-cert" and "istio-ca-root-cert ConfigMaps" in line
    return False


def test_destroy_leaves_the_cluster_as_found_but_what_its_last_line_names(lab, cluster, charts):
    assert "before" in SEEN, "the up test did not run"

    result = lab.lab_sh("destroy", STACK)

    output = _output(result)
    assert result.returncode == 0, output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"The lab removed what it added to context {CONTEXT} except what stays on purpose"), last
    after = dump_api_objects(cluster)
    difference = dump_difference(SEEN["before"], after)
    assert difference["removed"] == [] and difference["changed"] == [], difference
    assert [key for key in difference["added"] if not _named_leftover(key, after[key], last)] == [], \
        (difference, last)
    assert any(key.endswith(".istio.io") for key in difference["added"]), difference  # what the line is about

    # The line's commands remove what it names, and then nothing of the lab is left. The Gateway API bundle comes
    # from the file the lab's cache was filled from, never from its address (no traffic leaves the machine).
    commands = re.findall(r"`([^`]+)`", last)
    assert len(commands) == 3, commands
    url = catalog.gateway_api_crds_url(catalog.GATEWAY_API_VERSION)
    bundle = str(charts / f"gateway-api-{catalog.GATEWAY_API_VERSION}-standard-install.yaml")
    assert url in commands[2], commands[2]
    for command in [*commands[:2], commands[2].replace(url, bundle)]:
        ran = cluster.run(["sh", "-c", command], env=lab.env, timeout=300)
        assert ran.returncode == 0, (command, ran.stdout, ran.stderr)
    # The API server drops the CRDs' APIServices a moment after the CRDs: wait for that, not longer than a minute.
    deadline = time.monotonic() + 60
    while (cleaned := dump_difference(SEEN["before"], dump_api_objects(cluster)))["added"] and \
            time.monotonic() < deadline:
        time.sleep(2)
    assert cleaned == {"added": [], "removed": [], "changed": []}, cleaned
