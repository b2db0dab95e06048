"""Checks run before the lab creates anything: each returns a result whose failure message is one sentence
saying what to do.

Everything the checks learn from the machine goes through ``Host`` (processes, /proc, sockets, disk, CPU), so
tests can simulate each condition. ``./lab.sh preflight [STACK]`` runs them alone.
"""

from __future__ import annotations

import errno
import platform
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import catalog, kind_cluster, outputs
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
    whose = f"belongs to {facts.owner}" if facts.owner else "was not created by this stack"
    if facts.owner and facts.owner.startswith(kind_cluster.owner_label_value(PROJECT, stack) + "."):
        whose += " (the same stack name in another checkout or state)"
    return CheckResult(
        "cluster name", False,
        f"A kind cluster named {name} already exists and {whose}: if nobody needs it any more, adopt it with "
        f"`{LAB_SCRIPT} up {stack} --adopt` (destroy will then delete it) or remove it with `{KIND_TOOL} delete "
        f"cluster --name {name}`; otherwise give this stack another cluster name with `{LAB_SCRIPT} pulumi config "
        f"set {PROJECT}:clusterName NAME --stack {stack}`.",
    )


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
    return results


def format_results(results: Sequence[CheckResult]) -> str:
    """One aligned line per result: ``ok`` or ``FAIL``, the check's name, and what it found or what to do."""
    width = max((len(result.name) for result in results), default=0)
    return "\n".join(
        f"  {'FAIL' if not result.ok else 'WARN' if result.warning else 'ok  '}  {result.name:<{width}}  "
        f"{result.message}" for result in results
    )
