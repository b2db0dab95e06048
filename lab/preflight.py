"""Checks run before the lab creates anything: each returns a result whose failure message is one sentence
saying what to do.

Everything the checks learn from the machine goes through ``Host`` (processes, /proc, sockets, disk, CPU), so
tests can simulate each condition. ``./lab.sh preflight [STACK]`` runs them alone.
"""

from __future__ import annotations

import errno
import json
import platform
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import catalog, cluster_identity, kind_cluster, outputs
from lab.bootstrap import Runner, find_tool, normalize_arch, run_captured, version_text
from lab.config import PROJECT
from lab.tools import KIND, KUBECTL, PULUMI, Release

LAB_SCRIPT = catalog.LAB_SCRIPT
KIND_TOOL = kind_cluster.KIND_TOOL
ADOPT_CONFIG_KEY = f"{PROJECT}:adoptExistingCluster"

INOTIFY_LIMITS = {  # /proc file -> the minimum istio-cni on multi-node kind needs
    "/proc/sys/fs/inotify/max_user_watches": 524288,
    "/proc/sys/fs/inotify/max_user_instances": 512,
}
MIN_FREE_GIB = 10
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; ``message`` says what to do when ``ok`` is False."""

    name: str
    ok: bool
    message: str
    warning: bool = False  # ok, but worth fixing: printed as WARN with what to do


def _read_text(path: str) -> str:
    return Path(path).read_text()


def _port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a connection lingering in TIME_WAIT is no obstacle for Docker, only a listener is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


class _Unknown(str):
    """An owner label that could not be read (a stopped cluster, an API server that does not answer)."""


OWNER_UNKNOWN = _Unknown("unknown")


def _cluster_owner(name: str) -> str | None:
    try:
        return kind_cluster.cluster_owner(name)
    except kind_cluster.KindError:
        return OWNER_UNKNOWN


def _stopped_nodes(name: str) -> list[str]:
    try:
        return kind_cluster.stopped_nodes(name)
    except kind_cluster.KindError:
        return []


@dataclass
class Host:
    """The machine as the checks see it; tests replace any part."""

    run: Runner = run_captured
    read_text: Callable[[str], str] = _read_text
    port_is_free: Callable[[str, int], bool] = _port_is_free
    free_bytes: Callable[[str], int] = _free_bytes
    system: Callable[[], str] = platform.system
    machine: Callable[[], str] = platform.machine
    cluster_owner: Callable[[str], str | None] = _cluster_owner  # the owner label of a kind cluster's node
    stopped_nodes: Callable[[str], list[str]] = _stopped_nodes  # a kind cluster's node containers not running


@dataclass(frozen=True)
class Situation:
    """What the checks need to know about the lab being brought up."""

    stack: str
    project_dir: Path
    env: Mapping[str, str]  # PATH here has the project's tools folder first
    target: str = "kind"  # "kind" or "existing"
    cluster_name: str | None = None
    adopt: bool = False  # the stack is configured to adopt an existing cluster of that name
    ingress_port: int = catalog.INGRESS_HOST_PORT
    tools: Sequence[Release] = field(default_factory=lambda: (KIND, KUBECTL, PULUMI))
    # What this stack's state says of its cluster, from its outputs ({} before its first up).
    recorded: Mapping[str, object] = field(default_factory=dict)
    existing: ExistingTarget | None = None  # target "existing": the cluster to check before anything is created

    def is_ours(self, owner: str | None) -> bool:
        """Whether an owner label is the one this stack's state created its cluster with.

        A state from before owner tokens recorded none; its cluster carries the bare project.stack label.
        """
        recorded_owner = self.recorded.get(outputs.CLUSTER_OWNER)
        if recorded_owner:
            return owner == recorded_owner
        return (self.recorded.get(outputs.CLUSTER_NAME) == self.cluster_name
                and owner == kind_cluster.owner_label_value(PROJECT, self.stack))

    @property
    def recorded_here(self) -> bool:
        """This stack's state holds a cluster of this name."""
        return self.recorded.get(outputs.CLUSTER_NAME) == self.cluster_name


@dataclass(frozen=True)
class ClusterFacts:
    """What ``kind get clusters`` and the node's owner label say about the lab's cluster name."""

    listed: bool  # kind could list clusters at all
    exists: bool = False
    owner: str | None = None  # OWNER_UNKNOWN when it could not be read
    stopped: bool = False


def look_up_cluster(host: Host, situation: Situation) -> ClusterFacts:
    """Whether a kind cluster of the lab's name exists, and who owns it."""
    result = host.run(["kind", "get", "clusters"], env=situation.env, timeout=60)
    if result.returncode != 0:
        return ClusterFacts(listed=False)
    # Exact lines only: "ambient-l4" must not clash with "ambient-l4-only".
    if situation.cluster_name not in (line.strip() for line in result.stdout.splitlines()):
        return ClusterFacts(listed=True)
    name = situation.cluster_name
    if host.stopped_nodes(name):
        return ClusterFacts(listed=True, exists=True, owner=OWNER_UNKNOWN, stopped=True)
    return ClusterFacts(listed=True, exists=True, owner=host.cluster_owner(name))


def check_architecture(host: Host) -> CheckResult:
    """The CPU is one kind publishes node images for."""
    machine = host.machine()
    arch = normalize_arch(machine)
    if arch is None:
        return CheckResult(
            "architecture", False,
            f"Run the lab on an amd64 or arm64 machine: kind publishes node images only for those, and this "
            f"machine is {machine}.",
        )
    return CheckResult("architecture", True, arch)


def check_docker(host: Host, env: Mapping[str, str]) -> CheckResult:
    """The Docker daemon answers ``docker info``."""
    result = host.run(["docker", "info", "--format", "{{.ServerVersion}}"], env=env, timeout=30)
    if result.returncode == 127:
        return CheckResult(
            "docker", False,
            "Install Docker (Docker Engine or Docker Desktop) so that `docker` is on your PATH, then run this again.",
        )
    if result.returncode != 0:
        return CheckResult(
            "docker", False,
            "Start Docker (the Docker daemon or Docker Desktop) and check that `docker info` works for your user, "
            "then run this again.",
        )
    return CheckResult("docker", True, f"Docker {result.stdout.strip()} answers")


def check_tool(host: Host, release: Release, env: Mapping[str, str]) -> CheckResult:
    """A tool is on the search path at or above its minimum version."""
    found = find_tool(release, env.get("PATH", ""), host.run)
    if found is None:
        return CheckResult(
            release.name, False,
            f"{release.name} is not installed: run `{LAB_SCRIPT} up`, which installs {release.name} v{release.version} "
            f"into .lab/tools, or install v{release.minimum} or newer yourself.",
        )
    if not found.satisfies(release):
        return CheckResult(
            release.name, False,
            f"{found.path} is {version_text(found.version)} and the lab needs v{release.minimum} or newer: run "
            f"`{LAB_SCRIPT} up`, which installs {release.name} v{release.version} into .lab/tools, or upgrade it "
            "yourself.",
        )
    return CheckResult(release.name, True, f"{version_text(found.version)} at {found.path}")


def check_inotify(host: Host, env: Mapping[str, str]) -> CheckResult:
    """The host's inotify limits are high enough for istio-cni on a multi-node kind cluster.

    Low limits are a warning, not a stop: the kernel's default of 128 instances often suffices for one lab, and the
    symptom ("too many open files" in a pod) has a known fix. Docker Desktop runs the nodes in its own VM, whose
    limits are not the host's.
    """
    if host.system() != "Linux":
        return CheckResult("inotify", True, "not Linux: Docker Desktop's VM keeps its own limits")
    docker_os = host.run(["docker", "info", "--format", "{{.OperatingSystem}}"], env=env, timeout=30)
    if docker_os.returncode == 0 and "Docker Desktop" in docker_os.stdout:
        return CheckResult("inotify", True, "Docker Desktop: its VM keeps its own limits")
    commands = []
    for path, minimum in INOTIFY_LIMITS.items():
        try:
            value = int(host.read_text(path).strip())
        except (OSError, ValueError):
            return CheckResult("inotify", True, f"skipped: could not read {path}")
        if value < minimum:
            commands.append(f"`sudo sysctl -w {path.removeprefix('/proc/sys/').replace('/', '.')}={minimum}`")
    if commands:
        return CheckResult(
            "inotify", True,
            f"If pods fail with \"too many open files\" (istio-cni watches many files on a multi-node kind cluster), "
            f"raise the host's inotify limits with {' and '.join(commands)} and add the same settings to "
            "/etc/sysctl.d/ to keep them after a reboot.",
            warning=True,
        )
    return CheckResult("inotify", True, "limits are high enough")


def check_ingress_port(host: Host, port: int, held_by_lab: bool) -> CheckResult:
    """The loopback port kind maps to the ingress gateway is free (the API server's port is random)."""
    if held_by_lab:
        return CheckResult("ingress port", True, f"{LOOPBACK}:{port} belongs to this stack's cluster")
    if not host.port_is_free(LOOPBACK, port):
        return CheckResult(
            "ingress port", False,
            f"Free {LOOPBACK}:{port}, the lab's ingress port, which another program is listening on (find it with "
            f"`sudo lsof -nP -iTCP:{port} -sTCP:LISTEN`).",
        )
    return CheckResult("ingress port", True, f"{LOOPBACK}:{port} is free")


def check_disk(host: Host, env: Mapping[str, str], project_dir: Path) -> CheckResult:
    """Enough free disk where Docker keeps its data (on Docker Desktop that is inside a VM: the project's disk)."""
    result = host.run(["docker", "info", "--format", "{{.DockerRootDir}}"], env=env, timeout=30)
    place = result.stdout.strip() if result.returncode == 0 else ""
    try:
        free = host.free_bytes(place) if place else None
    except OSError:
        free = None
    if free is None:
        place = str(project_dir)
        free = host.free_bytes(place)
    free_gib = free / (1 << 30)
    if free_gib < MIN_FREE_GIB:
        return CheckResult(
            "disk", False,
            f"Free disk space on {place}: the lab needs {MIN_FREE_GIB} GiB free there for its node and container "
            f"images, and only {free_gib:.1f} GiB is.",
        )
    return CheckResult("disk", True, f"{free_gib:.0f} GiB free on {place}")


def check_cluster_name(situation: Situation, facts: ClusterFacts) -> CheckResult:
    """No kind cluster of the lab's name exists, unless this stack's state owns it or is set to adopt it."""
    name = situation.cluster_name
    stack = situation.stack
    if not facts.listed:
        return CheckResult("cluster name", True, "skipped: `kind get clusters` failed (see the checks above)")
    if not facts.exists:
        return CheckResult("cluster name", True, f"no kind cluster named {name} yet")
    if facts.stopped and situation.recorded_here:
        return CheckResult("cluster name", True, f"kind cluster {name} is this stack's and stopped: up starts it")
    if situation.is_ours(facts.owner):
        return CheckResult("cluster name", True, f"kind cluster {name} belongs to this stack")
    if situation.adopt:
        return CheckResult("cluster name", True, f"kind cluster {name} exists and will be adopted")
    if facts.owner is OWNER_UNKNOWN:
        return CheckResult(
            "cluster name", False,
            f"A kind cluster named {name} already exists but is stopped or not answering, so whose it is cannot be "
            f"read: if it is yours, start it with `docker start {name}-control-plane` and run this again, or give "
            f"this stack another cluster name with `{LAB_SCRIPT} pulumi config set {PROJECT}:clusterName NAME "
            f"--stack {stack}`.",
        )
    if facts.owner and facts.owner.startswith(kind_cluster.owner_label_value(PROJECT, stack) + "."):
        # This stack's cluster from a state that is gone (a deleted .lab/) or kept elsewhere (another checkout).
        # Adopting it would not help: the Helm releases that state installed are still in it, and a new state
        # cannot install over them.
        return CheckResult(
            "cluster name", False,
            f"A kind cluster named {name} already exists and was made by stack {stack} from another state (a deleted "
            f".lab/ or another checkout; owner label {facts.owner}): if that lab is no longer needed, remove it with "
            f"`{KIND_TOOL} delete cluster --name {name}` and run `{LAB_SCRIPT} up {stack}` again; otherwise give this "
            f"stack another cluster name with `{LAB_SCRIPT} pulumi config set {PROJECT}:clusterName NAME --stack "
            f"{stack}`.",
        )
    whose = f"belongs to {facts.owner}" if facts.owner else "was not created by this stack"
    return CheckResult(
        "cluster name", False,
        f"A kind cluster named {name} already exists and {whose}: if nobody needs it any more, adopt it with "
        f"`{LAB_SCRIPT} up {stack} --adopt` (destroy will then delete it) or remove it with `{KIND_TOOL} delete "
        f"cluster --name {name}`; otherwise give this stack another cluster name with `{LAB_SCRIPT} pulumi config "
        f"set {PROJECT}:clusterName NAME --stack {stack}`.",
    )


def run_machine_checks(situation: Situation, host: Host, port_may_be_ours: bool) -> list[CheckResult]:
    """The checks that need none of the tools the lab downloads (architecture; for kind: Docker, disk, the ingress
    port), run before anything is fetched. ``port_may_be_ours``: the stack's state may hold a cluster, whose port it
    would be; `run_checks` decides that for sure once kind is there to ask."""
    results = [check_architecture(host)]
    if situation.target == "kind":
        results += [
            check_docker(host, situation.env),
            check_disk(host, situation.env, situation.project_dir),
            check_ingress_port(host, situation.ingress_port, port_may_be_ours),
        ]
    return results


def run_checks(situation: Situation, host: Host | None = None) -> list[CheckResult]:
    """Run every check that applies to the target, in the order a person would fix them.

    Args:
        situation: The stack, its cluster and the environment to look tools up in.
        host: The machine boundary (None: the real machine).

    Returns:
        One result per check.
    """
    host = host or Host()
    results = [check_architecture(host)]
    if situation.target == "kind":
        results.append(check_docker(host, situation.env))
    results += [check_tool(host, release, situation.env) for release in situation.tools]
    if situation.target == "kind":
        facts = look_up_cluster(host, situation)
        held_by_lab = facts.exists and (situation.is_ours(facts.owner) or situation.adopt
                                        or (facts.stopped and situation.recorded_here))
        results += [
            check_inotify(host, situation.env),
            check_ingress_port(host, situation.ingress_port, held_by_lab),
            check_disk(host, situation.env, situation.project_dir),
            check_cluster_name(situation, facts),
        ]
    elif situation.existing is not None and all(result.ok for result in results):
        results += run_existing_checks(host, situation, situation.existing)  # kubectl must be there to ask
    return results


def format_results(results: Sequence[CheckResult]) -> str:
    """One aligned line per result: ``ok`` or ``FAIL``, the check's name, and what it found or what to do."""
    width = max((len(result.name) for result in results), default=0)
    return "\n".join(
        f"  {'FAIL' if not result.ok else 'WARN' if result.warning else 'ok  '}  {result.name:<{width}}  "
        f"{result.message}" for result in results
    )


# --- An existing cluster ------------------------------------------------------------------------------------------
#
# Everything below asks the cluster through `kubectl --context <kubeContext>` (never the current context), through
# Host.run, so tests answer with fake clusters. Each collision is found here, before anything is created: otherwise
# it surfaces part-way through `up` (pulumi-kubernetes fails a create with AlreadyExists; a preview hides it).

# ClusterRoles other installs of the same charts would already hold: istio-cni's chart names its roles after the
# chart, istiod's carry the namespace; Prometheus's is its server's fullname (`prometheus`, as the lab sets it),
# Kiali's are `kiali` and `kiali-viewer`.
ISTIO_CLUSTER_ROLES = ("istio-cni", "istio-cni-repair-role", "istio-cni-ambient", "ztunnel",
                       "istiod-clusterrole-istio-system", "istiod-gateway-controller-istio-system",
                       "istio-reader-clusterrole-istio-system")
ADDON_CLUSTER_ROLES = ("prometheus", "kiali", "kiali-viewer", catalog.PROMETHEUS_READER_ROLE)
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_BUNDLE_ANNOTATION = "gateway.networking.k8s.io/bundle-version"
POD_SECURITY_ENFORCE = catalog.POD_SECURITY_ENFORCE
# What the lab's pods request, summed: istiod's chart asks 500m and 2 GiB; the lab's apps, gateways, Prometheus and
# Kiali about as much again. An estimate for a warning, not a scheduling promise.
LAB_CPU_MILLIS = 1500
LAB_MEMORY_MIB = 4096


@dataclass(frozen=True)
class ExistingTarget:
    """What the checks need to know about an existing cluster the lab is pointed at."""

    context: str
    kubeconfig_path: str | None = None
    apps_namespace: str = catalog.EXISTING_APPS_NAMESPACE
    istio_version: str = catalog.ISTIO_VERSION
    install_gateway_api_crds: bool = True
    observability: bool = True


def _kubectl(host: Host, situation: Situation, target: ExistingTarget, *args: str, timeout: float = 30):
    kubeconfig = ["--kubeconfig", target.kubeconfig_path] if target.kubeconfig_path else []
    return host.run(["kubectl", *kubeconfig, "--context", target.context, *args], env=situation.env, timeout=timeout)


def _json(result) -> dict:
    try:
        value = json.loads(result.stdout) if result.returncode == 0 else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _ours(situation: Situation, target: ExistingTarget) -> bool:
    """This stack's last up was on this cluster: what the lab installs there is its own, not a collision. The
    context's name alone says so only for a state from before the lab recorded its cluster's identity, which
    check_cluster_identity compares first."""
    return (situation.recorded.get(outputs.TARGET) == "existing"
            and situation.recorded.get(outputs.KUBE_CONTEXT) == target.context)


def check_cluster_identity(host: Host, situation: Situation, target: ExistingTarget) -> CheckResult | None:
    """The context reaches the cluster this stack's state was brought up on (lab.cluster_identity), not another one
    that happens to carry the same context name. None before the first up: that up records it."""
    stack = situation.stack
    expected = cluster_identity.from_record(situation.recorded.get(outputs.CLUSTER_IDENTITY))
    if situation.recorded.get(outputs.TARGET) != "existing" or expected is None:
        return None
    try:
        found = cluster_identity.read(host.run, situation.env, target.context, target.kubeconfig_path)
    except cluster_identity.IdentityError as error:
        return CheckResult(
            "cluster identity", False,
            f"The lab could not read the kube-system namespace of context {target.context} ({error}), which tells "
            f"whether it is the cluster stack {stack} was brought up on: grant the context that read, then run "
            f"`{LAB_SCRIPT} preflight {stack}` again.")
    recorded_context = situation.recorded.get(outputs.KUBE_CONTEXT)
    if found.uid != expected.uid:
        return CheckResult(
            "cluster identity", False,
            f"Context {target.context} reaches another cluster ({found.describe()}) than the one stack {stack} was "
            f"brought up on through context {recorded_context} ({expected.describe()}): point the stack's "
            f"kubeContext and kubeconfig (or your KUBECONFIG) back at that cluster, or remove the lab from it with "
            f"`{LAB_SCRIPT} destroy {stack}` before bringing it up elsewhere.")
    if found.server != expected.server:
        return CheckResult("cluster identity", True, f"the cluster stack {stack} was brought up on ({expected.uid}), "
                           f"now at {found.server}: carry on if it only moved", warning=True)
    return CheckResult("cluster identity", True, f"the cluster stack {stack} was brought up on ({expected.uid})")


def check_existing_access(host: Host, situation: Situation, target: ExistingTarget) -> tuple[CheckResult, dict]:
    """The context is in the kubeconfig and its API server answers; returns the server's version too."""
    stack = situation.stack
    listed = host.run(["kubectl", *(["--kubeconfig", target.kubeconfig_path] if target.kubeconfig_path else []),
                       "config", "get-contexts", "-o", "name"], env=situation.env, timeout=30)
    if listed.returncode == 0 and target.context not in listed.stdout.split():
        where = target.kubeconfig_path or "KUBECONFIG or ~/.kube/config"
        return CheckResult(
            "cluster access", False,
            f"The context {target.context} is not in your kubeconfig ({where}): set the stack's kubeContext to one of "
            f"`kubectl config get-contexts -o name` with `{LAB_SCRIPT} pulumi config set {PROJECT}:kubeContext NAME "
            f"--stack {stack}`.",
        ), {}
    answered = _kubectl(host, situation, target, "version", "-o", "json", "--request-timeout", "15s")
    version = _json(answered).get("serverVersion") or {}
    if answered.returncode != 0 or not version:
        return CheckResult(
            "cluster access", False,
            f"The cluster of context {target.context} does not answer ({_last_line(answered.stderr)}): check your "
            f"credentials, VPN or proxy with `kubectl --context {target.context} get nodes`, then run "
            f"`{LAB_SCRIPT} preflight {stack}` again.",
        ), {}
    return CheckResult("cluster access", True, f"context {target.context} answers"), version


def check_kubernetes_version(version: Mapping[str, str], target: ExistingTarget, stack: str) -> CheckResult:
    """The server's minor version is one Istio supports (catalog.KUBERNETES_MINOR_RANGE)."""
    low, high = catalog.KUBERNETES_MINOR_RANGE
    git = str(version.get("gitVersion") or f"v{version.get('major')}.{version.get('minor')}")
    try:
        minor = int(str(version.get("minor", "")).rstrip("+"))
    except ValueError:
        return CheckResult("kubernetes version", True, f"skipped: the server's version {git} could not be read",
                           warning=True)
    istio = ".".join(target.istio_version.split(".")[:2])
    supported = f"Istio {istio} supports Kubernetes 1.{low} to 1.{high}"
    if minor < low:
        return CheckResult(
            "kubernetes version", False,
            f"The cluster runs Kubernetes {git} and {supported}: upgrade the cluster, or run the lab on its own kind "
            f"cluster with `{LAB_SCRIPT} pulumi config set {PROJECT}:target kind --stack {stack}`.",
        )
    if minor > high:
        return CheckResult(
            "kubernetes version", True,
            f"The cluster runs Kubernetes {git}, newer than the lab has been checked against ({supported} at its "
            f"release): if the install fails, run the lab on its own kind cluster with `{LAB_SCRIPT} pulumi config "
            f"set {PROJECT}:target kind --stack {stack}`.", warning=True,
        )
    return CheckResult("kubernetes version", True, f"{git}: {supported}")


def _names(items: list, kind: str) -> list[str]:
    return sorted(str(item.get("metadata", {}).get("name", "")) for item in items if item.get("kind") == kind)


def check_existing_collisions(cluster: Mapping[str, list], situation: Situation,
                              target: ExistingTarget) -> list[CheckResult]:
    """Nothing the lab creates is already there: Istio's namespace and cluster-wide objects, the addons' roles, the
    apps' namespaces. A stack that was up here before owns them."""
    stack = situation.stack
    if _ours(situation, target):
        return [CheckResult("collisions", True, "this stack's own install from its last up")]
    namespaces = {str(ns.get("metadata", {}).get("name")) for ns in cluster["namespaces"]}
    objects = cluster["objects"]
    results = []
    istio_crds = [name for name in _names(objects, "CustomResourceDefinition") if name.endswith(".istio.io")]
    webhooks = [name for name in _names(objects, "ValidatingWebhookConfiguration")
                + _names(objects, "MutatingWebhookConfiguration") if name.startswith("istio")]
    roles = set(_names(objects, "ClusterRole"))
    istio_roles = [name for name in ISTIO_CLUSTER_ROLES if name in roles]
    remove_istio = ("use a cluster without Istio, or remove that install first (`istioctl uninstall --purge`, or "
                    "`helm uninstall` of its releases)")
    if catalog.ISTIO_NAMESPACE in namespaces:
        results.append(CheckResult(
            "istio-system", False,
            f"The cluster already has an {catalog.ISTIO_NAMESPACE} namespace (another Istio install, or one left "
            f"behind) where the lab installs its own Istio: {remove_istio}, then delete the namespace.",
        ))
    found = istio_crds + webhooks + istio_roles
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        results.append(CheckResult(
            "istio objects", False,
            f"The cluster already holds Istio's cluster-wide objects from another install ({shown}), on which the "
            f"lab's Helm releases would fail part-way through up: {remove_istio}.",
        ))
    addon_roles = [name for name in ADDON_CLUSTER_ROLES if name in roles] if target.observability else []
    if addon_roles:
        results.append(CheckResult(
            "addon roles", False,
            f"The cluster already has the ClusterRoles {', '.join(addon_roles)} (another Prometheus or Kiali "
            f"install), which the lab's addons would collide with: turn them off with `{LAB_SCRIPT} pulumi config set "
            f"{PROJECT}:observability false --stack {stack}`, or remove that install first.",
        ))
    if target.apps_namespace != "default" and target.apps_namespace in namespaces:
        results.append(CheckResult(
            "apps namespace", False,
            f"The namespace {target.apps_namespace} already exists, and the lab creates its apps' namespace itself "
            f"(and deletes it on destroy): pick a new one with `{LAB_SCRIPT} pulumi config set {PROJECT}:appsNamespace "
            f"NAME --stack {stack}`.",
        ))
    if catalog.OUTSIDE_NAMESPACE in namespaces:
        results.append(CheckResult(
            "outside namespace", False,
            f"The namespace {catalog.OUTSIDE_NAMESPACE} already exists, and the lab creates it for its client outside "
            f"the mesh (and deletes it on destroy): remove it if it is a lab's leftover, or use another cluster.",
        ))
    return results or [CheckResult("collisions", True, "no Istio, addon roles or lab namespaces on the cluster yet")]


def check_gateway_api(cluster: Mapping[str, list], situation: Situation, target: ExistingTarget) -> CheckResult:
    """Gateway API CRDs already on the cluster are used, never installed over; where none are, the lab's come with
    the bundle's cluster-wide admission policy and stay after destroy."""
    stack = situation.stack
    crds = {str(item.get("metadata", {}).get("name")): item for item in cluster["objects"]
            if item.get("kind") == "CustomResourceDefinition"
            and str(item.get("metadata", {}).get("name", "")).endswith("." + GATEWAY_API_GROUP)}
    installed_by_lab = bool(situation.recorded.get(outputs.GATEWAY_API_CRDS)) and _ours(situation, target)
    if not crds:
        if not target.install_gateway_api_crds:
            return CheckResult(
                "gateway api", False,
                "The cluster has no Gateway API CRDs and installGatewayApiCrds is false: let the lab install them "
                f"with `{LAB_SCRIPT} pulumi config set {PROJECT}:installGatewayApiCrds true --stack {stack}`, or install "
                "them yourself first.",
            )
        return CheckResult(
            "gateway api", True,
            "The lab will install the Gateway API CRDs, cluster-wide, and keep them on destroy (other teams' Gateways "
            f"may come to depend on them); bundles from v1.6 also bring the ValidatingAdmissionPolicy "
            f"safe-upgrades.{GATEWAY_API_GROUP}, which refuses later installs of experimental-channel or older CRDs: "
            f"if that is not wanted, install the CRDs yourself and set `{LAB_SCRIPT} pulumi config set "
            f"{PROJECT}:installGatewayApiCrds false --stack {stack}`.", warning=True,
        )
    if installed_by_lab:
        return CheckResult("gateway api", True, "the Gateway API CRDs this stack installed")
    bundle = "version unknown"
    serves_v1 = True
    for kind in ("gateways", "httproutes"):
        crd = crds.get(f"{kind}.{GATEWAY_API_GROUP}")
        versions = {v.get("name") for v in (crd or {}).get("spec", {}).get("versions", []) if v.get("served")}
        serves_v1 = serves_v1 and "v1" in versions
        if crd:
            bundle = (crd.get("metadata", {}).get("annotations") or {}).get(GATEWAY_API_BUNDLE_ANNOTATION, bundle)
    if not serves_v1:
        return CheckResult(
            "gateway api", False,
            f"The cluster's Gateway API CRDs ({bundle}) do not serve gateway.networking.k8s.io/v1 Gateways and "
            "HTTPRoutes, which the lab uses, and the lab never installs over CRDs it did not create: ask their owner "
            "to upgrade them to v1.0.0 or newer, or use another cluster.",
        )
    if target.install_gateway_api_crds:
        return CheckResult(
            "gateway api", False,
            f"The cluster already has the Gateway API CRDs ({bundle}), which the lab must not install over: use them "
            f"with `{LAB_SCRIPT} pulumi config set {PROJECT}:installGatewayApiCrds false --stack {stack}`.",
        )
    return CheckResult("gateway api", True, f"the cluster's own Gateway API CRDs ({bundle}) serve v1")


# Labels by which an Istio control plane takes a namespace's pods into its mesh: ambient capture by istio-cni and
# ztunnel, and sidecar injection by istiod's webhook (the default revision's, or a named one's).
MESH_LABELS = ((catalog.AMBIENT_LABEL, catalog.AMBIENT_LABEL_VALUE), ("istio-injection", "enabled"),
               ("istio.io/rev", None))


def check_enrolled_namespaces(cluster: Mapping[str, list], situation: Situation,
                              target: ExistingTarget) -> CheckResult:
    """No namespace but the lab's carries a label that would put its running pods into the lab's mesh: labels an
    earlier Istio left behind (`istioctl uninstall --purge` keeps them) would let the lab's istio-cni capture pods,
    and its istiod inject them, that nobody enrolled in this lab."""
    stack = situation.stack
    enrolled = []
    for namespace in cluster["namespaces"]:
        metadata = namespace.get("metadata", {})
        name, labels = str(metadata.get("name")), metadata.get("labels") or {}
        if name in catalog.lab_namespaces(target.apps_namespace):
            continue
        found = [f"{key}={labels[key]}" for key, value in MESH_LABELS
                 if key in labels and (value is None or labels[key] == value)]
        if found:
            enrolled.append(f"{name} ({', '.join(found)})")
    if not enrolled:
        return CheckResult("mesh labels", True, "no namespace outside the lab's asks to join a mesh")
    shown = ", ".join(enrolled[:4]) + (f" and {len(enrolled) - 4} more" if len(enrolled) > 4 else "")
    if _ours(situation, target):
        return CheckResult(
            "mesh labels", True,
            f"Namespaces outside the lab's carry mesh labels and their pods are in the lab's mesh: {shown}; remove "
            "the labels (`kubectl label namespace NAME istio.io/dataplane-mode- istio-injection- istio.io/rev-`) "
            "unless they were put there on purpose.", warning=True)
    return CheckResult(
        "mesh labels", False,
        f"Namespaces outside the lab's carry labels that would put their running pods into the lab's mesh: {shown}: "
        "if they are left from an earlier Istio, remove them (`kubectl label namespace NAME istio.io/dataplane-mode- "
        f"istio-injection- istio.io/rev-`), or use another cluster, then run `{LAB_SCRIPT} preflight {stack}` again.")


def check_default_apps_namespace(target: ExistingTarget, stack: str) -> CheckResult | None:
    """The lab's apps in `default` of someone else's cluster: the label that enrols them enrols every pod there."""
    if target.apps_namespace != "default":
        return None
    return CheckResult(
        "default namespace", True,
        "appsNamespace is default, so the lab labels the cluster's default namespace for ambient and every pod "
        "already running there joins the lab's mesh: give the lab a namespace of its own with "
        f"`{LAB_SCRIPT} pulumi config set {PROJECT}:appsNamespace {catalog.EXISTING_APPS_NAMESPACE} --stack {stack}`.",
        warning=True)


def check_pod_security(cluster: Mapping[str, list], target: ExistingTarget) -> CheckResult:
    """No namespace the lab uses but does not create enforces a Pod Security level its pods would fail.

    The lab labels its own istio-system `privileged` (istio-cni and ztunnel need host access) and the namespaces it
    creates for the apps `baseline`, the level Istio's guide runs gateways under: istiod writes the ingress gateway
    and waypoint pods, and bookinfo's images do not say which uid they run as, which `restricted` requires. A
    cluster-wide default set in the API server's admission configuration cannot be read from here.
    """
    for namespace in cluster["namespaces"]:
        metadata = namespace.get("metadata", {})
        if metadata.get("name") != target.apps_namespace:
            continue
        level = (metadata.get("labels") or {}).get(POD_SECURITY_ENFORCE)
        if level == "restricted":
            return CheckResult(
                "pod security", True,
                f"The namespace {target.apps_namespace} enforces Pod Security `restricted`: the clients pass it, but "
                "bookinfo and the gateway and waypoint pods istiod writes may not, so if they do not start, label it "
                f"`baseline` (`kubectl label --overwrite namespace {target.apps_namespace} "
                f"{POD_SECURITY_ENFORCE}=baseline`) or let the lab create its own namespace.", warning=True,
            )
        return CheckResult("pod security", True, f"{target.apps_namespace} enforces {level or 'no level'}")
    return CheckResult("pod security", True, "the lab labels the namespaces it creates `baseline`")


def _cpu_millis(text: str) -> int:
    text = str(text)
    if text.endswith("m"):
        return int(float(text[:-1]))
    return int(float(text) * 1000)


_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1 << 20, "k": 1000 / (1 << 20), "M": 1000 ** 2 / (1 << 20),
                 "G": 1000 ** 3 / (1 << 20)}


def _memory_mib(text: str) -> float:
    text = str(text)
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text) / (1 << 20)


def check_capacity(cluster: Mapping[str, list]) -> CheckResult:
    """The schedulable nodes have room, after what their pods already request, for what the lab's pods request."""
    free_cpu = free_memory = 0.0
    nodes = [node for node in cluster["nodes"] if not node.get("spec", {}).get("unschedulable")]
    names = {node.get("metadata", {}).get("name") for node in nodes}
    for node in nodes:
        allocatable = node.get("status", {}).get("allocatable", {})
        free_cpu += _cpu_millis(allocatable.get("cpu", "0"))
        free_memory += _memory_mib(allocatable.get("memory", "0"))
    for pod in cluster["pods"]:
        if pod.get("spec", {}).get("nodeName") not in names:
            continue
        for container in pod.get("spec", {}).get("containers", []):
            requests = container.get("resources", {}).get("requests", {})
            free_cpu -= _cpu_millis(requests.get("cpu", "0"))
            free_memory -= _memory_mib(requests.get("memory", "0"))
    if free_cpu < LAB_CPU_MILLIS or free_memory < LAB_MEMORY_MIB:
        return CheckResult(
            "capacity", True,
            f"The cluster's schedulable nodes have {free_cpu / 1000:.1f} CPU and {free_memory / 1024:.1f} GiB of "
            f"memory unrequested, and the lab's pods request about {LAB_CPU_MILLIS / 1000:.1f} CPU and "
            f"{LAB_MEMORY_MIB / 1024:.0f} GiB: add a node, or some pods will stay Pending.", warning=True,
        )
    return CheckResult("capacity", True, f"{free_cpu / 1000:.1f} CPU and {free_memory / 1024:.1f} GiB unrequested")


class UnreadableCluster(Exception):
    """A list the checks judge could not be read: an empty answer would pass every check without looking."""


def read_existing_cluster(host: Host, situation: Situation, target: ExistingTarget) -> dict[str, list]:
    """The few lists the checks judge: namespaces, cluster-wide objects, nodes and running pods.

    Raises:
        UnreadableCluster: kubectl could not list one of them (no permission, a timeout), with kubectl's reason.
    """
    def items(*args: str) -> list:
        result = _kubectl(host, situation, target, "get", *args, "-o", "json")
        if result.returncode != 0:
            raise UnreadableCluster(f"`kubectl get {args[0]}` failed ({_last_line(result.stderr)})")
        return list(_json(result).get("items") or [])

    return {
        "namespaces": items("namespaces"),
        "objects": items("customresourcedefinitions,clusterroles,validatingwebhookconfigurations,"
                         "mutatingwebhookconfigurations"),
        "nodes": items("nodes"),
        "pods": items("pods", "--all-namespaces", "--field-selector", "status.phase!=Succeeded,status.phase!=Failed"),
    }


def run_existing_checks(host: Host, situation: Situation, target: ExistingTarget) -> list[CheckResult]:
    """Every check of an existing cluster; the cluster's own only once it answers."""
    access, version = check_existing_access(host, situation, target)
    if not access.ok:
        return [access]
    try:
        cluster = read_existing_cluster(host, situation, target)
    except UnreadableCluster as error:
        return [access, CheckResult(
            "cluster contents", False,
            f"The lab could not read what context {target.context} already holds: {error}; the lab installs "
            "cluster-wide objects and needs cluster-admin there, so use a context with that right, or ask for it.")]
    identity = [result for result in [check_cluster_identity(host, situation, target)] if result]
    if not all(result.ok for result in identity):  # another cluster: what it holds says nothing of this stack's
        return [access, *identity]
    return [
        access,
        *identity,
        check_kubernetes_version(version, target, situation.stack),
        *check_existing_collisions(cluster, situation, target),
        check_enrolled_namespaces(cluster, situation, target),
        *[result for result in [check_default_apps_namespace(target, situation.stack)] if result],
        check_gateway_api(cluster, situation, target),
        check_pod_security(cluster, target),
        check_capacity(cluster),
    ]
