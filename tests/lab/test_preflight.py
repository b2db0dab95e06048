"""Preflight: every condition simulated at the machine boundary, every failure sentence asserted whole."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from lab import preflight
from lab.bootstrap import run_captured
from lab.preflight import CheckResult, Host, Situation
from lab.tools import KUBECTL, PULUMI

GIB = 1 << 30
KUBECTL_JSON = '{"clientVersion": {"major": "1", "minor": "36", "gitVersion": "v1.36.4"}}'


@pytest.fixture
def machine(fake_bin):
    """A healthy machine: Docker up, every tool new enough, no kind clusters."""
    fake_bin.add("docker", """
case "$*" in
  *ServerVersion*) echo 28.2.2 ;;
  *DockerRootDir*) echo /var/lib/docker ;;
esac""")
    fake_bin.add("kind", """
case "$1" in
  version) echo "kind v0.32.0 go1.26.5 linux/amd64" ;;
  get) printf 'ambient-l4-only-old\\nother\\n' ;;
esac""")
    fake_bin.add("kubectl", f"echo '{KUBECTL_JSON}'")
    fake_bin.add("pulumi", "echo v3.272.0")
    return fake_bin


def host(**overrides) -> Host:
    defaults = dict(
        run=run_captured,
        read_text=lambda path: {"/proc/sys/fs/inotify/max_user_watches": "524288\n",
                                "/proc/sys/fs/inotify/max_user_instances": "512\n"}[path],
        port_is_free=lambda address, port: True,
        free_bytes=lambda path: 50 * GIB,
        system=lambda: "Linux",
        machine=lambda: "x86_64",
        cluster_owner=lambda name: None,
        stopped_nodes=lambda name: [],
    )
    return Host(**{**defaults, **overrides})


OURS = "istio-ambient-lab.l4-only.0a1b2c3d"
# What the stack's last up recorded: its cluster and the owner label its state created it with.
RECORDED = {"cluster_name": "ambient-l4-only", "cluster_owner": OURS}


def situation(fake_bin, **overrides) -> Situation:
    defaults = dict(stack="l4-only", project_dir=Path("/project"), env={"PATH": fake_bin.path},
                    cluster_name="ambient-l4-only")
    return Situation(**{**defaults, **overrides})


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def failure(results: list[CheckResult], name: str) -> str:
    result = by_name(results)[name]
    assert not result.ok, result
    assert [r.name for r in results if not r.ok] == [name], results  # nothing else failed
    return result.message


def test_healthy_machine_passes_every_check(machine):
    results = preflight.run_checks(situation(machine), host())
    assert [r.name for r in results] == [
        "architecture", "docker", "kind", "kubectl", "pulumi", "inotify", "ingress port", "disk", "cluster name",
    ]
    assert all(r.ok for r in results), results
    assert by_name(results)["docker"].message == "Docker 28.2.2 answers"
    assert by_name(results)["disk"].message == "50 GiB free on /var/lib/docker"


def test_unsupported_architecture(machine):
    results = preflight.run_checks(situation(machine), host(machine=lambda: "ppc64le"))
    assert failure(results, "architecture") == (
        "Run the lab on an amd64 or arm64 machine: kind publishes node images only for those, and this machine is "
        "ppc64le."
    )


def test_docker_not_installed(machine):
    (machine.folder / "docker").unlink()
    results = preflight.run_checks(situation(machine), host(free_bytes=lambda path: 50 * GIB))
    assert failure(results, "docker") == (
        "Install Docker (Docker Engine or Docker Desktop) so that `docker` is on your PATH, then run this again."
    )


def test_docker_daemon_unreachable(machine):
    machine.add("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1")
    results = preflight.run_checks(situation(machine), host())
    assert failure(results, "docker") == (
        "Start Docker (the Docker daemon or Docker Desktop) and check that `docker info` works for your user, then "
        "run this again."
    )


def test_tool_missing(machine):
    (machine.folder / "pulumi").unlink()
    results = preflight.run_checks(situation(machine), host())
    assert failure(results, "pulumi") == (
        "pulumi is not installed: run `./lab.sh up`, which installs pulumi v3.259.0 into .lab/tools, or install "
        "v3.259.0 or newer yourself."
    )


def test_tool_too_old(machine):
    old = '{"clientVersion": {"minor": "32+", "gitVersion": "v1.32.4-dispatcher"}}'
    kubectl = machine.add("kubectl", f"echo '{old}'")
    results = preflight.run_checks(situation(machine), host())
    assert failure(results, "kubectl") == (
        f"{kubectl} is v1.32.4 and the lab needs v1.35.0 or newer: run `./lab.sh up`, which installs kubectl "
        "v1.36.4 into .lab/tools, or upgrade it yourself."
    )


INOTIFY_BOTH = (
    "If pods fail with \"too many open files\" (istio-cni watches many files on a multi-node kind cluster), raise "
    "the host's inotify limits with `sudo sysctl -w fs.inotify.max_user_watches=524288` and `sudo sysctl -w "
    "fs.inotify.max_user_instances=512` and add the same settings to /etc/sysctl.d/ to keep them after a reboot."
)


def test_low_inotify_limits_are_a_warning_with_the_fix_not_a_stop(machine):
    low = {"/proc/sys/fs/inotify/max_user_watches": "8192", "/proc/sys/fs/inotify/max_user_instances": "128"}
    results = preflight.run_checks(situation(machine), host(read_text=low.__getitem__))
    assert by_name(results)["inotify"] == CheckResult("inotify", True, INOTIFY_BOTH, warning=True)
    assert "  WARN  inotify " in preflight.format_results(results)


def test_inotify_names_only_the_limit_that_is_too_low(machine):
    low = {"/proc/sys/fs/inotify/max_user_watches": "1048576", "/proc/sys/fs/inotify/max_user_instances": "128"}
    results = preflight.run_checks(situation(machine), host(read_text=low.__getitem__))
    message = by_name(results)["inotify"].message
    assert "fs.inotify.max_user_instances=512" in message and "max_user_watches" not in message


def test_docker_desktop_on_linux_is_not_judged_by_the_hosts_limits(machine):
    machine.add("docker", """
case "$*" in
  *OperatingSystem*) echo "Docker Desktop" ;;
  *ServerVersion*) echo 28.2.2 ;;
  *DockerRootDir*) echo /var/lib/docker ;;
esac""")
    low = {"/proc/sys/fs/inotify/max_user_watches": "8192", "/proc/sys/fs/inotify/max_user_instances": "128"}
    results = preflight.run_checks(situation(machine), host(read_text=low.__getitem__))
    assert by_name(results)["inotify"] == CheckResult("inotify", True, "Docker Desktop: its VM keeps its own limits")


def test_ingress_port_held_by_the_stacks_own_cluster_is_fine(machine):
    machine.add("kind", """
case "$1" in
  version) echo "kind v0.32.0" ;;
  get) echo ambient-l4-only ;;
esac""")
    results = preflight.run_checks(
        situation(machine, recorded=RECORDED),
        host(port_is_free=lambda address, port: False, cluster_owner=lambda name: OURS),
    )
    assert all(r.ok for r in results), results
    assert by_name(results)["ingress port"].message == "127.0.0.1:8080 belongs to this stack's cluster"


def test_port_probe_sees_a_real_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not preflight._port_is_free("127.0.0.1", port)
    assert preflight._port_is_free("127.0.0.1", port)


def test_not_enough_disk_where_docker_keeps_its_data(machine):
    results = preflight.run_checks(situation(machine), host(free_bytes=lambda path: 3 * GIB + GIB // 2))
    assert failure(results, "disk") == (
        "Free disk space on /var/lib/docker: the lab needs 10 GiB free there for its node and container images, and "
        "only 3.5 GiB is."
    )


def test_disk_falls_back_to_the_project_when_dockers_folder_is_in_a_vm(machine):
    def free_bytes(path):
        if path == "/var/lib/docker":
            raise FileNotFoundError(path)  # Docker Desktop: the folder is inside its VM
        return 2 * GIB

    results = preflight.run_checks(situation(machine), host(free_bytes=free_bytes))
    assert failure(results, "disk") == (
        "Free disk space on /project: the lab needs 10 GiB free there for its node and container images, and only "
        "2.0 GiB is."
    )


def clash_machine(machine, clusters: str):
    machine.add("kind", f"""
case "$1" in
  version) echo "kind v0.32.0" ;;
  get) printf '{clusters}' ;;
esac""")
    return machine


WAY_OUT = (
    "if nobody needs it any more, adopt it with `./lab.sh up l4-only --adopt` (destroy will then delete it) or remove "
    "it with `.lab/tools/kind delete cluster --name ambient-l4-only`; otherwise give this stack another cluster name "
    "with `./lab.sh pulumi config set istio-ambient-lab:clusterName NAME --stack l4-only`."
)


def test_cluster_name_clash_with_an_unowned_cluster(machine):
    clash_machine(machine, "ambient-l4-only\\n")
    results = preflight.run_checks(situation(machine), host(port_is_free=lambda address, port: True))
    assert failure(results, "cluster name") == (
        "A kind cluster named ambient-l4-only already exists and was not created by this stack: " + WAY_OUT
    )


def test_cluster_name_clash_with_another_stacks_cluster(machine):
    clash_machine(machine, "ambient-l4-only\\n")
    results = preflight.run_checks(situation(machine), host(cluster_owner=lambda name: "istio-ambient-lab.l7.ffffffff"))
    assert failure(results, "cluster name") == (
        "A kind cluster named ambient-l4-only already exists and belongs to istio-ambient-lab.l7.ffffffff: " + WAY_OUT
    )


def test_the_same_stack_name_from_another_state_is_a_clash(machine):
    """A second checkout, or this one after .lab/ was deleted: same project and stack, another state's token."""
    clash_machine(machine, "ambient-l4-only\\n")
    theirs = "istio-ambient-lab.l4-only.ffffffff"
    for recorded in ({}, RECORDED):
        results = preflight.run_checks(situation(machine, recorded=recorded), host(cluster_owner=lambda name: theirs))
        assert failure(results, "cluster name") == (
            "A kind cluster named ambient-l4-only already exists and was made by stack l4-only from another state (a "
            f"deleted .lab/ or another checkout; owner label {theirs}): if that lab is no longer needed, remove it "
            "with `.lab/tools/kind delete cluster --name ambient-l4-only` and run `./lab.sh up l4-only` again; "
            "otherwise give this stack another cluster name with `./lab.sh pulumi config set "
            "istio-ambient-lab:clusterName NAME --stack l4-only`."
        )
        assert "--adopt" not in failure(results, "cluster name"), "adopting would meet the other state's releases"


def test_cluster_owned_by_the_stack_or_to_be_adopted_is_no_clash(machine):
    clash_machine(machine, "ambient-l4-only\\n")
    owned = preflight.run_checks(situation(machine, recorded=RECORDED), host(cluster_owner=lambda name: OURS))
    assert by_name(owned)["cluster name"] == CheckResult(
        "cluster name", True, "kind cluster ambient-l4-only belongs to this stack"
    )
    adopted = preflight.run_checks(situation(machine, adopt=True), host())
    assert by_name(adopted)["cluster name"] == CheckResult(
        "cluster name", True, "kind cluster ambient-l4-only exists and will be adopted"
    )


def test_a_state_from_before_owner_tokens_still_owns_its_cluster(machine):
    clash_machine(machine, "ambient-l4-only\\n")
    results = preflight.run_checks(situation(machine, recorded={"cluster_name": "ambient-l4-only"}),
                                   host(cluster_owner=lambda name: "istio-ambient-lab.l4-only"))
    assert by_name(results)["cluster name"].ok


def test_the_stacks_own_stopped_cluster_is_not_called_someone_elses(machine):
    clash_machine(machine, "ambient-l4-only\\n")
    stopped = host(stopped_nodes=lambda name: ["ambient-l4-only-control-plane"],
                   port_is_free=lambda address, port: False)
    results = preflight.run_checks(situation(machine, recorded=RECORDED), stopped)
    assert by_name(results)["cluster name"] == CheckResult(
        "cluster name", True, "kind cluster ambient-l4-only is this stack's and stopped: up starts it")
    assert by_name(results)["ingress port"].ok
    strangers = preflight.run_checks(situation(machine), host(stopped_nodes=lambda name: ["x"]))
    assert failure(strangers, "cluster name").startswith(
        "A kind cluster named ambient-l4-only already exists but is stopped or not answering, so whose it is cannot "
        "be read: if it is yours, start it with `docker start ambient-l4-only-control-plane`")


def test_cluster_names_match_whole_lines_only(machine):
    clash_machine(machine, "ambient-l4-only-old\\nx-ambient-l4-only\\nambient-l4\\n")
    results = preflight.run_checks(situation(machine), host())
    assert by_name(results)["cluster name"] == CheckResult(
        "cluster name", True, "no kind cluster named ambient-l4-only yet"
    )


def test_existing_cluster_target_checks_only_what_it_uses(machine):
    (machine.folder / "docker").unlink()
    (machine.folder / "kind").unlink()
    results = preflight.run_checks(
        situation(machine, target="existing", cluster_name=None, tools=[KUBECTL, PULUMI]),
        host(read_text=lambda path: "1"),
    )
    assert [r.name for r in results] == ["architecture", "kubectl", "pulumi"]
    assert all(r.ok for r in results)


def test_results_print_one_aligned_line_each():
    results = [CheckResult("disk", True, "50 GiB free"), CheckResult("docker", False, "Start it.")]
    text = preflight.format_results(results)
    assert text == "  ok    disk    50 GiB free\n  FAIL  docker  Start it."
    warned = preflight.format_results([CheckResult("inotify", True, "Raise it.", warning=True)])
    assert warned == "  WARN  inotify  Raise it."


# --- An existing cluster: fake kubectl answers, one per collision ---------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402

from lab.preflight import ExistingTarget  # noqa: E402

CTX = "gke_proj_lab"
TARGET = ExistingTarget(context=CTX, apps_namespace="istio-ambient-lab", istio_version="1.31.1")


def _node(name="n1", cpu="4", memory="16Gi", unschedulable=False):
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory}}}


def _named(kind, name, **extra):
    return {"kind": kind, "metadata": {"name": name, **extra.pop("metadata", {})}, **extra}


def _gateway_crds(bundle="v1.3.0", served=("v1", "v1beta1")):
    versions = [{"name": v, "served": True} for v in served]
    annotations = {"gateway.networking.k8s.io/bundle-version": bundle}
    return [_named("CustomResourceDefinition", f"{kind}.gateway.networking.k8s.io",
                   metadata={"annotations": annotations}, spec={"versions": versions})
            for kind in ("gateways", "httproutes")]


class FakeCluster:
    """What `kubectl --context gke_proj_lab ...` answers; every other command goes to the fake tools on PATH."""

    def __init__(self, minor="34", namespaces=("default", "kube-system"), objects=(), nodes=None, pods=(),
                 contexts=(CTX, "other"), answers=True, labels=None, forbidden=(), uid="uid-lab",
                 server="https://lab:443"):
        self.minor, self.answers, self.contexts = minor, answers, contexts
        self.uid, self.server = uid, server  # who the cluster is (lab.cluster_identity)
        self.forbidden = forbidden  # lists this context may not read
        self.lists = {
            "namespaces": [{"metadata": {"name": ns, "labels": (labels or {}).get(ns, {})}} for ns in namespaces],
            "customresourcedefinitions,clusterroles,validatingwebhookconfigurations,mutatingwebhookconfigurations":
                list(objects),
            "nodes": list(nodes if nodes is not None else [_node("n1"), _node("n2")]),
            "pods": list(pods),
        }
        self.asked: list[list[str]] = []

    def run(self, argv, env=None, cwd=None, timeout=120):
        argv = list(argv)
        def answer(out="", err="", code=0):
            return subprocess.CompletedProcess(argv, code, out, err)
        if argv[:1] == ["kubectl"] and "view" in argv:
            return answer(self.server + "\n")
        if argv[:1] == ["kubectl"] and "config" in argv:
            return answer("\n".join(self.contexts) + "\n")
        if argv[:1] != ["kubectl"] or "--context" not in argv:
            return run_captured(argv, env=env, cwd=cwd, timeout=timeout)
        self.asked.append(argv)
        assert argv[argv.index("--context") + 1] == CTX, "never the current context"
        if not self.answers:
            return answer(err="Unable to connect to the server: dial tcp 10.0.0.1:443: i/o timeout", code=1)
        if "version" in argv:
            return answer(json.dumps({"serverVersion": {"major": "1", "minor": self.minor,
                                                        "gitVersion": f"v1.{self.minor.rstrip('+')}.2-gke.100"}}))
        if argv[argv.index("get") + 1:][:2] == ["namespace", "kube-system"]:
            return answer(self.uid + "\n")
        listed = argv[argv.index("get") + 1]
        if listed in self.forbidden:
            return answer(err=f'Error from server (Forbidden): {listed} is forbidden: User "dev" cannot list resource '
                              f'"{listed}" at the cluster scope', code=1)
        return answer(json.dumps({"items": self.lists[listed]}))


def existing(machine, cluster: FakeCluster, target: ExistingTarget = TARGET, **overrides):
    (machine.folder / "docker").unlink(missing_ok=True)
    return preflight.run_checks(
        situation(machine, target="existing", cluster_name=None, tools=[KUBECTL, PULUMI], existing=target,
                  **overrides),
        host(run=cluster.run))


def test_existing_cluster_that_fits_passes_with_the_gateway_api_warning(machine):
    cluster = FakeCluster()
    results = existing(machine, cluster)
    assert [r.name for r in results] == ["architecture", "kubectl", "pulumi", "cluster access", "kubernetes version",
                                         "collisions", "mesh labels", "gateway api", "pod security", "capacity"]
    assert all(r.ok for r in results), results
    assert by_name(results)["kubernetes version"].message == (
        "v1.34.2-gke.100: Istio 1.31 supports Kubernetes 1.32 to 1.36")
    gateway = by_name(results)["gateway api"]
    assert gateway.warning and "keep them on destroy" in gateway.message
    assert "ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io" in gateway.message
    assert all("--context" in argv for argv in cluster.asked)


def test_existing_context_missing_from_the_kubeconfig(machine):
    results = existing(machine, FakeCluster(contexts=("other",)))
    assert failure(results, "cluster access") == (
        "The context gke_proj_lab is not in your kubeconfig (KUBECONFIG or ~/.kube/config): set the stack's "
        "kubeContext to one of `kubectl config get-contexts -o name` with `./lab.sh pulumi config set "
        "istio-ambient-lab:kubeContext NAME --stack l4-only`.")
    assert [r.name for r in results][-1] == "cluster access", "nothing else is asked of a cluster that is not there"


def test_existing_cluster_that_does_not_answer(machine):
    results = existing(machine, FakeCluster(answers=False))
    assert failure(results, "cluster access") == (
        "The cluster of context gke_proj_lab does not answer (Unable to connect to the server: dial tcp 10.0.0.1:443: "
        "i/o timeout): check your credentials, VPN or proxy with `kubectl --context gke_proj_lab get nodes`, then run "
        "`./lab.sh preflight l4-only` again.")


def test_existing_cluster_too_old_for_istio_and_newer_is_a_warning(machine):
    assert failure(existing(machine, FakeCluster(minor="31")), "kubernetes version") == (
        "The cluster runs Kubernetes v1.31.2-gke.100 and Istio 1.31 supports Kubernetes 1.32 to 1.36: upgrade the "
        "cluster, or run the lab on its own kind cluster with `./lab.sh pulumi config set istio-ambient-lab:target "
        "kind --stack l4-only`.")
    newer = by_name(existing(machine, FakeCluster(minor="37+")))["kubernetes version"]
    assert newer.ok and newer.warning and newer.message.startswith("The cluster runs Kubernetes v1.37.2-gke.100, newer")


REMOVE_ISTIO = ("use a cluster without Istio, or remove that install first (`istioctl uninstall --purge`, or `helm "
                "uninstall` of its releases)")


def test_existing_cluster_with_another_istio(machine):
    objects = [_named("CustomResourceDefinition", "peerauthentications.security.istio.io"),
               _named("ValidatingWebhookConfiguration", "istiod-default-validator"),
               _named("MutatingWebhookConfiguration", "istio-sidecar-injector"),
               _named("ClusterRole", "istio-cni"), _named("ClusterRole", "ztunnel"),
               _named("ClusterRole", "istiod-clusterrole-istio-system"), _named("ClusterRole", "view")]
    results = existing(machine, FakeCluster(namespaces=("default", "istio-system"), objects=objects))
    failed = {r.name: r.message for r in results if not r.ok}
    assert failed == {
        "istio-system": "The cluster already has an istio-system namespace (another Istio install, or one left behind) "
                        f"where the lab installs its own Istio: {REMOVE_ISTIO}, then delete the namespace.",
        "istio objects": "The cluster already holds Istio's cluster-wide objects from another install "
                         "(peerauthentications.security.istio.io, istiod-default-validator, istio-sidecar-injector, "
                         f"istio-cni and 2 more), on which the lab's Helm releases would fail part-way through up: "
                         f"{REMOVE_ISTIO}.",
    }


def test_existing_cluster_with_another_prometheus_or_kiali(machine):
    objects = [_named("ClusterRole", "prometheus"), _named("ClusterRole", "kiali")]
    results = existing(machine, FakeCluster(objects=objects))
    assert failure(results, "addon roles") == (
        "The cluster already has the ClusterRoles prometheus, kiali (another Prometheus or Kiali install), which the "
        "lab's addons would collide with: turn them off with `./lab.sh pulumi config set "
        "istio-ambient-lab:observability false --stack l4-only`, or remove that install first.")
    no_addons = ExistingTarget(context=CTX, observability=False)
    assert all(r.ok for r in existing(machine, FakeCluster(objects=objects), no_addons))


def test_existing_cluster_with_the_labs_namespaces_already_there(machine):
    results = existing(machine, FakeCluster(namespaces=("istio-ambient-lab", "mesh-outside")))
    failed = {r.name: r.message for r in results if not r.ok}
    assert failed["apps namespace"] == (
        "The namespace istio-ambient-lab already exists, and the lab creates its apps' namespace itself (and deletes "
        "it on destroy): pick a new one with `./lab.sh pulumi config set istio-ambient-lab:appsNamespace NAME --stack "
        "l4-only`.")
    assert failed["outside namespace"].startswith("The namespace mesh-outside already exists")


def test_the_stacks_own_install_is_no_collision(machine):
    objects = [_named("ClusterRole", "istio-cni"), *_gateway_crds("v1.6.1")]
    recorded = {"target": "existing", "kube_context": CTX, "gateway_api_crds": "v1.6.1"}
    cluster = FakeCluster(namespaces=("istio-system", "istio-ambient-lab", "mesh-outside"), objects=objects)
    results = existing(machine, cluster, recorded=recorded)
    assert all(r.ok for r in results), results
    assert by_name(results)["gateway api"].message == "the Gateway API CRDs this stack installed"


def test_gateway_api_crds_already_there_are_used_never_installed_over(machine):
    cluster = FakeCluster(objects=_gateway_crds("v1.3.0"))
    assert failure(existing(machine, cluster), "gateway api") == (
        "The cluster already has the Gateway API CRDs (v1.3.0), which the lab must not install over: use them with "
        "`./lab.sh pulumi config set istio-ambient-lab:installGatewayApiCrds false --stack l4-only`.")
    use_theirs = ExistingTarget(context=CTX, install_gateway_api_crds=False)
    assert by_name(existing(machine, cluster, use_theirs))["gateway api"] == CheckResult(
        "gateway api", True, "the cluster's own Gateway API CRDs (v1.3.0) serve v1")


def test_gateway_api_crds_too_old_or_missing(machine):
    use_theirs = ExistingTarget(context=CTX, install_gateway_api_crds=False)
    old = FakeCluster(objects=_gateway_crds("v0.8.1", served=("v1beta1",)))
    assert failure(existing(machine, old, use_theirs), "gateway api") == (
        "The cluster's Gateway API CRDs (v0.8.1) do not serve gateway.networking.k8s.io/v1 Gateways and HTTPRoutes, "
        "which the lab uses, and the lab never installs over CRDs it did not create: ask their owner to upgrade them "
        "to v1.0.0 or newer, or use another cluster.")
    assert failure(existing(machine, FakeCluster(), use_theirs), "gateway api") == (
        "The cluster has no Gateway API CRDs and installGatewayApiCrds is false: let the lab install them with "
        "`./lab.sh pulumi config set istio-ambient-lab:installGatewayApiCrds true --stack l4-only`, or install them "
        "yourself first.")


def test_pod_security_restricted_on_an_apps_namespace_the_lab_does_not_create(machine):
    target = ExistingTarget(context=CTX, apps_namespace="default")
    cluster = FakeCluster(labels={"default": {"pod-security.kubernetes.io/enforce": "restricted"}})
    result = by_name(existing(machine, cluster, target))["pod security"]
    assert result.ok and result.warning
    assert result.message.startswith("The namespace default enforces Pod Security `restricted`: the clients pass "
                                     "it, but bookinfo and the gateway and waypoint pods istiod writes may not")


def test_too_little_spare_capacity_is_a_warning_with_the_numbers(machine):
    pods = [{"spec": {"nodeName": "n1", "containers": [{"resources": {"requests": {"cpu": "1500m",
                                                                                    "memory": "6Gi"}}}]}}]
    cluster = FakeCluster(nodes=[_node("n1", cpu="2", memory="8Gi"), _node("n2", unschedulable=True)], pods=pods)
    result = by_name(existing(machine, cluster))["capacity"]
    assert result.ok and result.warning
    assert result.message == (
        "The cluster's schedulable nodes have 0.5 CPU and 2.0 GiB of memory unrequested, and the lab's pods request "
        "about 1.5 CPU and 4 GiB: add a node, or some pods will stay Pending.")


def test_a_cluster_whose_contents_cannot_be_read_fails_instead_of_passing_unseen(machine):
    """A context without cluster-wide read rights: empty lists would pass every collision check without looking."""
    lists = "customresourcedefinitions,clusterroles,validatingwebhookconfigurations,mutatingwebhookconfigurations"
    results = existing(machine, FakeCluster(forbidden=(lists,)))
    assert [r.name for r in results][-2:] == ["cluster access", "cluster contents"]
    assert failure(results, "cluster contents") == (
        f"The lab could not read what context {CTX} already holds: `kubectl get {lists}` failed (Error from server "
        f'(Forbidden): {lists} is forbidden: User "dev" cannot list resource "{lists}" at the cluster scope); the lab '
        "installs cluster-wide objects and needs cluster-admin there, so use a context with that right, or ask for it.")


IDENTITY = {"kubeSystemUid": "uid-lab", "server": "https://lab:443"}


def test_the_cluster_this_stack_was_brought_up_on_is_its_own_install(machine):
    cluster = FakeCluster(namespaces=("default", "kube-system", "istio-system"))
    recorded = {"target": "existing", "kube_context": CTX, "cluster_identity": IDENTITY}
    results = by_name(existing(machine, cluster, recorded=recorded))
    assert results["cluster identity"].ok and not results["cluster identity"].warning
    assert results["collisions"].message == "this stack's own install from its last up"


def test_another_cluster_behind_the_recorded_context_name_is_refused_before_anything_else(machine):
    """`export KUBECONFIG=prod.yaml` with a context of the same name: its Istio is not the lab's to upgrade."""
    cluster = FakeCluster(namespaces=("default", "kube-system", "istio-system"), uid="uid-prod",
                          server="https://prod:443")
    recorded = {"target": "existing", "kube_context": CTX, "cluster_identity": IDENTITY}
    results = existing(machine, cluster, recorded=recorded)
    assert [r.name for r in results][-2:] == ["cluster access", "cluster identity"]
    assert not results[-1].ok
    assert results[-1].message == (
        f"Context {CTX} reaches another cluster (kube-system UID uid-prod, server https://prod:443) than the one stack "
        f"l4-only was brought up on through context {CTX} (kube-system UID uid-lab, server https://lab:443): point the "
        "stack's kubeContext and kubeconfig (or your KUBECONFIG) back at that cluster, or remove the lab from it with "
        "`./lab.sh destroy l4-only` before bringing it up elsewhere.")


def test_the_same_cluster_at_a_new_address_is_a_warning(machine):
    cluster = FakeCluster(server="https://new:443")
    recorded = {"target": "existing", "kube_context": CTX, "cluster_identity": IDENTITY}
    identity = by_name(existing(machine, cluster, recorded=recorded))["cluster identity"]
    assert identity.ok and identity.warning and "now at https://new:443" in identity.message


def test_namespaces_left_in_a_mesh_by_an_earlier_istio_are_refused(machine):
    """`istioctl uninstall --purge` keeps namespace labels: the lab's istio-cni would capture those running pods."""
    labels = {
        "shop": {"istio.io/dataplane-mode": "ambient"},
        "legacy": {"istio-injection": "enabled"},
        "canary": {"istio.io/rev": "1-24"},
        "opted-out": {"istio-injection": "disabled", "istio.io/dataplane-mode": "none"},
        "istio-ambient-lab": {"istio.io/dataplane-mode": "ambient"},  # the lab's own
    }
    cluster = FakeCluster(namespaces=("default", "kube-system", *labels), labels=labels)
    mesh = by_name(existing(machine, cluster, target=replace(TARGET, apps_namespace="istio-ambient-lab")))
    assert not mesh["mesh labels"].ok
    assert mesh["mesh labels"].message == (
        "Namespaces outside the lab's carry labels that would put their running pods into the lab's mesh: shop "
        "(istio.io/dataplane-mode=ambient), legacy (istio-injection=enabled), canary (istio.io/rev=1-24): if they are "
        "left from an earlier Istio, remove them (`kubectl label namespace NAME istio.io/dataplane-mode- "
        "istio-injection- istio.io/rev-`), or use another cluster, then run `./lab.sh preflight l4-only` again.")

    ours = by_name(existing(machine, cluster, recorded={"target": "existing", "kube_context": CTX}))["mesh labels"]
    assert ours.ok and ours.warning, "once the lab's mesh runs, those pods are in it already: said, not refused"


def test_the_default_namespace_for_the_apps_is_a_warning_on_an_existing_cluster(machine):
    results = by_name(existing(machine, FakeCluster(), target=replace(TARGET, apps_namespace="default")))
    assert results["default namespace"].warning and results["default namespace"].ok
    assert "every pod already running there joins the lab's mesh" in results["default namespace"].message
    assert "default namespace" not in by_name(existing(machine, FakeCluster()))
