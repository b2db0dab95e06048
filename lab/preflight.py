"""Checks run before the lab creates anything: each returns a result whose failure message is one sentence
saying what to do.

Everything the checks learn from the machine goes through ``Host`` (processes, /proc, sockets, disk, CPU), so
tests can simulate each condition. ``python -m lab.preflight [STACK]`` is the same as ``./lab.sh preflight``.
"""

from __future__ import annotations

import errno
import platform
import shutil
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import catalog, kind_cluster
from lab.bootstrap import Runner, find_tool, normalize_arch, run_captured, version_text
from lab.config import PROJECT
from lab.tools import KIND, KUBECTL, PULUMI, Release

LAB_SCRIPT = "./lab.sh"  # what the user types; named in the sentences that tell them what to do
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


def _cluster_owner(name: str) -> str | None:
    try:
        return kind_cluster.cluster_owner(name)
    except kind_cluster.KindError:  # no kubeconfig for it: as good as unowned
        return None


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

    @property
    def owner(self) -> str:
        """The owner label value a cluster created (or adopted) by this stack carries."""
        return kind_cluster.owner_label_value(PROJECT, self.stack)


@dataclass(frozen=True)
class ClusterFacts:
    """What ``kind get clusters`` and the node's owner label say about the lab's cluster name."""

    listed: bool  # kind could list clusters at all
    exists: bool = False
    owner: str | None = None


def look_up_cluster(host: Host, situation: Situation) -> ClusterFacts:
    """Whether a kind cluster of the lab's name exists, and who owns it."""
    result = host.run(["kind", "get", "clusters"], env=situation.env, timeout=60)
    if result.returncode != 0:
        return ClusterFacts(listed=False)
    # Exact lines only: "ambient-l4" must not clash with "ambient-l4-only".
    if situation.cluster_name not in (line.strip() for line in result.stdout.splitlines()):
        return ClusterFacts(listed=True)
    return ClusterFacts(listed=True, exists=True, owner=host.cluster_owner(situation.cluster_name))


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


def check_inotify(host: Host) -> CheckResult:
    """The host's inotify limits are high enough for istio-cni on a multi-node kind cluster."""
    if host.system() != "Linux":
        return CheckResult("inotify", True, "not Linux: Docker Desktop's VM keeps its own limits")
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
            "inotify", False,
            f"Raise the host's inotify limits, which istio-cni exhausts on a multi-node kind cluster (\"too many "
            f"open files\"): run {' and '.join(commands)}, and add the same settings to /etc/sysctl.d/ to keep "
            "them after a reboot.",
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
    """No kind cluster of the lab's name exists, unless this stack owns it or is set to adopt it."""
    name = situation.cluster_name
    if not facts.listed:
        return CheckResult("cluster name", True, "skipped: `kind get clusters` failed (see the checks above)")
    if not facts.exists:
        return CheckResult("cluster name", True, f"no kind cluster named {name} yet")
    if facts.owner == situation.owner:
        return CheckResult("cluster name", True, f"kind cluster {name} belongs to this stack")
    if situation.adopt:
        return CheckResult("cluster name", True, f"kind cluster {name} exists and will be adopted")
    whose = f"belongs to {facts.owner}" if facts.owner else "was not created by this stack"
    return CheckResult(
        "cluster name", False,
        f"A kind cluster named {name} already exists and {whose}: adopt it with `{LAB_SCRIPT} up "
        f"{situation.stack} --adopt` (which runs `pulumi config set {ADOPT_CONFIG_KEY} true`) or remove it with "
        f"`kind delete cluster --name {name}`.",
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
        held_by_lab = facts.exists and (facts.owner == situation.owner or situation.adopt)
        results += [
            check_inotify(host),
            check_ingress_port(host, situation.ingress_port, held_by_lab),
            check_disk(host, situation.env, situation.project_dir),
            check_cluster_name(situation, facts),
        ]
    return results


def format_results(results: Sequence[CheckResult]) -> str:
    """One aligned line per result: ``ok`` or ``FAIL``, the check's name, and what it found or what to do."""
    width = max((len(result.name) for result in results), default=0)
    return "\n".join(
        f"  {'ok  ' if result.ok else 'FAIL'}  {result.name:<{width}}  {result.message}" for result in results
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.preflight [STACK]``: the same as ``./lab.sh preflight [STACK]``."""
    from lab import cli  # cli builds the situation from the stack; imported here because cli imports this module

    return cli.main(["preflight", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
