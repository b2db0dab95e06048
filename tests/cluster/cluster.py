"""The cluster tier's pieces: the control plane's build, the upstream charts, and a lab whose kind is that cluster.

`build_cluster()` mirrors tests/engine/engine.py's `build_engine()`: outside CI the tier runs once
tools/cluster/build.sh has built the binaries (or when asked with LAB_BUILD_CLUSTER=1); in CI, where .ci/run builds
them first, anything missing fails instead of skipping.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lab import catalog
from tests.cluster.controlplane import ControlPlane
from tests.cluster.standins import GatewayProgrammer
from tests.engine.engine import EngineLab, ROOT, refused_port
from tests.harness import warm_cache

BUILD_SCRIPT = os.path.join(ROOT, "tools", "cluster", "build.sh")
BUILD_ENV = "LAB_BUILD_CLUSTER"  # 1: build the control plane from the tests when it is not built yet
FAKE_MACHINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_machine.py")
LAB_TIMEOUT_S = 1500


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def build_cluster() -> str:
    """The folder of the built control plane (bin/): skips without Go, unless in CI."""
    if shutil.which("go") is None:
        skip_or_fail("the cluster tests need Go on PATH to build the control plane (tools/cluster/build.sh)")
    out = os.environ.get("LAB_CLUSTER_DIR") or os.path.join(ROOT, ".lab", "cluster")
    # Outside CI the tier waits until it is built (a long build nobody asked for is not run from the tests); in CI,
    # where .ci/run builds it first, a missing build fails.
    if not (os.path.exists(os.path.join(out, "stamp")) or os.environ.get(BUILD_ENV) == "1"):
        skip_or_fail("the Kubernetes control plane is not built yet: run tools/cluster/build.sh once (many CPU "
                     f"minutes; Go needed), or {BUILD_ENV}=1 ./lab.sh test -m cluster")
    result = subprocess.run([BUILD_SCRIPT], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(result.stderr.strip() or f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return result.stdout.strip().splitlines()[-1]


def network_namespaces_work() -> None:
    """The tier runs everything in a network namespace of its own: skip (fail in CI) where none can be made."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            skip_or_fail(f"the cluster tests need `{tool}` (util-linux, iproute2) to run in a network namespace")
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        skip_or_fail("the cluster tests run the control plane in a network namespace of their own, and "
                     f"`unshare --net` is not allowed here ({probe.stderr.strip()}): run them as root")


def upstream_charts() -> Path:
    """../shared/upstream/charts beside the checkout (or /work/shared): the real charts this tier installs."""
    for shared in (Path(ROOT).parent / "shared", Path("/work/shared")):
        charts = shared / "upstream" / "charts"
        if (charts / "MANIFEST.md").is_file():
            return charts
    pytest.skip("the cluster tests install the real upstream charts from ../shared/upstream/charts (see its "
                "MANIFEST.md), which is not beside this checkout")


def upstream_fetch(charts: Path):
    """lab.artifacts' fetch, answered from the upstream charts: each repository's index.yaml lists the charts there
    with their real digests, the charts and the Gateway API bundle are those files. Never the unit tests' stand-ins."""
    packaged = {path.name: path for path in charts.glob("*.tgz")}

    def fetch(url: str) -> bytes:
        if url.endswith("/index.yaml"):
            import yaml

            entries: dict[str, list] = {}
            for file_name, path in packaged.items():
                name, _, version = file_name.removesuffix(".tgz").rpartition("-")
                entries.setdefault(name, []).append({"version": version, "urls": [file_name],
                                                     "digest": hashlib.sha256(path.read_bytes()).hexdigest()})
            return yaml.safe_dump({"apiVersion": "v1", "entries": entries}).encode()
        file_name = url.rsplit("/", 1)[1]
        if file_name in packaged:
            return packaged[file_name].read_bytes()
        if url == catalog.gateway_api_crds_url(catalog.GATEWAY_API_VERSION):
            return (charts / f"gateway-api-{catalog.GATEWAY_API_VERSION}-standard-install.yaml").read_bytes()
        raise AssertionError(f"the lab fetched an address the upstream charts do not answer: {url}")

    return fetch


class ClusterLab(EngineLab):
    """The engine tier's lab (a throwaway project copy, its own backend and PULUMI_HOME), with kind and docker
    answered by the control plane, the real kubectl, the upstream charts, and every command run in the
    control plane's network namespace."""

    def __init__(self, engine_dir: str, work: str, plane: ControlPlane, charts: Path):
        super().__init__(engine_dir, work)
        self.plane = plane
        bin_dir = os.path.join(self.fakes, "bin")
        os.remove(os.path.join(bin_dir, "kubectl"))  # the real one, from the control plane's build
        for tool in ("docker", "kind"):
            with open(os.path.join(bin_dir, tool), "w", encoding="utf-8") as handle:
                handle.write(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MACHINE}" {tool} "$@"\n')
        cert, key = plane.admin_credentials("kubernetes-admin", "system:masters")
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        self.kind_key = b64(key)
        with open(os.path.join(self.fakes, "kind-admin.json"), "w", encoding="utf-8") as handle:
            json.dump({"ca": b64(plane.ca_pem), "cert": b64(cert), "key": self.kind_key, "server": plane.server},
                      handle)
        shutil.rmtree(self.cache)
        warm_cache(self.cache, fetch=upstream_fetch(charts))
        shutil.copy2(os.path.join(ROOT, "lab.sh"), os.path.join(self.project, "lab.sh"))
        cluster_bin = os.path.join(plane.bin_dir)
        self.env["PATH"] = os.pathsep.join([bin_dir, cluster_bin, self.env["PATH"].split(os.pathsep, 1)[1]])
        self.env["LAB_CLUSTER_KUBECTL"] = os.path.join(cluster_bin, "kubectl")
        self.env["LAB_CLUSTER_ADMIN"] = plane.admin_kubeconfig
        self.env["HOME"] = os.path.join(work, "home")  # kubectl's cache and anything else a tool keeps there
        os.makedirs(self.env["HOME"])
        for stack in ("l4-only", "l7"):
            self.quick_checks(stack)

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = ["pulumi", *args, "--non-interactive"] if args[0] != "login" else ["pulumi", *args]
        result = subprocess.run(self.plane.inside(argv) if hasattr(self, "plane") else argv, cwd=self.project,
                                env=self.env, capture_output=True, text=True, timeout=LAB_TIMEOUT_S)
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def lab_sh(self, *args: str) -> subprocess.CompletedProcess:
        """`./lab.sh ARGS` as a user runs it: its own backend and passphrase under the project's .lab/."""
        env = {name: value for name, value in self.env.items()
               if name not in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE")}
        return subprocess.run(self.plane.inside(["bash", "lab.sh", *args]), cwd=self.project, env=env,
                              capture_output=True, text=True, timeout=LAB_TIMEOUT_S, stdin=subprocess.DEVNULL)

    def quick_checks(self, stack: str) -> None:
        """No data plane runs here, so every check fails however long it retries: the lab's shortest retry limit
        (10 s a check instead of 120) keeps each up's failed verification to seconds, not minutes."""
        self.set_config(stack, "verificationTimeout", catalog.VERIFICATION_TIMEOUT_RANGE[0])

    def set_config(self, stack: str, key: str, value: str) -> None:
        """Writes one of the project's settings into the stack file, as a user edits it."""
        import yaml

        path = os.path.join(self.project, "stacks", f"Pulumi.{stack}.yaml")
        data = yaml.safe_load(open(path, encoding="utf-8")) or {}
        data.setdefault("config", {})[f"istio-ambient-lab:{key}"] = value
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)


__all__ = ["ClusterLab", "build_cluster", "dump_api_objects", "dump_difference", "network_namespaces_work",
           "refused_port", "register_nodes", "split_kubeconfig", "started_plane", "upstream_charts"]


# --- Issue 17's tests 5 and 7: an existing cluster, a dump of its objects, a control plane per stack ---------------

# Left out of the dump, each for a reason: these change by themselves whatever the lab does, or are not objects
# the API server stores, so a difference in them says nothing of what the lab left behind.
UNDUMPED_TYPES = {
    "events": "controllers' reports of what happened (history, not state), written at any time, expiring after 1 h",
    "events.events.k8s.io": "the same events through their own API group",
    "leases.coordination.k8s.io": "renewed every few seconds: kwok's node heartbeats, the API server's identity",
    "leasecandidates.coordination.k8s.io": "renewed by the components that take part in leader election",
    "componentstatuses": "not stored: computed on each request by probing etcd, the scheduler and controller-manager",
}


def _normalized(item: dict) -> dict:
    """An object as the dump compares it: without what any writer changes (resourceVersion, managedFields' times,
    also on a controller's status write), and for a Node without its status, which kwok rewrites on every heartbeat
    (its conditions' times); what the lab writes (labels, annotations, spec, data) is all kept."""
    item = json.loads(json.dumps(item))
    metadata = item.get("metadata") or {}
    metadata.pop("resourceVersion", None)
    metadata.pop("managedFields", None)
    if item.get("kind") == "Node":
        item.pop("status", None)
    return item


def dump_api_objects(plane: ControlPlane) -> dict[str, dict]:
    """Every object of every type the API server can list, namespaced and cluster-scoped (CRDs' types included),
    but UNDUMPED_TYPES, keyed `group/Kind namespace/name`."""
    listed = plane.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    types = [name for name in listed if name not in UNDUMPED_TYPES]
    assert "customresourcedefinitions.apiextensions.k8s.io" in types and "namespaces" in types, listed
    items = json.loads(plane.kubectl("get", ",".join(types), "--all-namespaces", "-o", "json").stdout)["items"]
    dump = {}
    for item in items:
        group = item["apiVersion"].rpartition("/")[0] or "core"
        metadata = item["metadata"]
        dump[f"{group}/{item['kind']} {metadata.get('namespace', '')}/{metadata['name']}"] = _normalized(item)
    return dump


def dump_difference(before: dict[str, dict], after: dict[str, dict]) -> dict[str, list[str]]:
    """What `after` added, removed and changed against `before`, by key."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(key for key in set(before) & set(after) if before[key] != after[key]),
    }


def register_nodes(plane: ControlPlane, name: str, workers: int = 2) -> list[str]:
    """Nodes for a cluster the lab did not make (kubeadm's names and labels, as fake_machine's kind registers them),
    played by kwok; returns their names once all are Ready."""
    from tests.cluster.fake_machine import node_objects

    config = {"nodes": [{"role": "control-plane"}, *[{"role": "worker"}] * workers]}
    nodes = node_objects(name, config)
    plane.kubectl("create", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}))
    names = [node["metadata"]["name"] for node in nodes]
    plane.kubectl("wait", "--for=condition=Ready", "--timeout=120s", *[f"node/{n}" for n in names])
    return names


def split_kubeconfig(plane: ControlPlane, folder: str, context: str, others: tuple[str, ...] = ()) -> tuple[str, str]:
    """Two kubeconfig files as `KUBECONFIG=a:b` merges them, the way many people keep theirs: `a` holds the contexts
    (`context`, then `others`, all on the same cluster and user) and the current context, `b` the cluster and the
    user with a client certificate of this run's CA (system:masters, a cluster admin). Returns (KUBECONFIG, the
    key's base64) so the tests can look for the key where it must not be."""
    cert, key = plane.admin_credentials(f"{context}-admin", "system:masters")
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    contexts = "".join(f"- name: {name}\n  context:\n    cluster: {context}-cluster\n    user: {context}-admin\n"
                       for name in (context, *others))
    first = os.path.join(folder, "contexts.yaml")
    second = os.path.join(folder, "credentials.yaml")
    for path, text in (
        (first, f"apiVersion: v1\nkind: Config\ncurrent-context: {context}\ncontexts:\n{contexts}"),
        (second, f"apiVersion: v1\nkind: Config\nclusters:\n- name: {context}-cluster\n  cluster:\n"
                 f"    certificate-authority-data: {b64(plane.ca_pem)}\n    server: {plane.server}\n"
                 f"users:\n- name: {context}-admin\n  user:\n    client-certificate-data: {b64(cert)}\n"
                 f"    client-key-data: {b64(key)}\n"),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    return os.pathsep.join([first, second]), b64(key)


@contextlib.contextmanager
def started_plane(cluster_dir: str):
    """A running control plane with the Gateway stand-in; stopped, its namespace and files gone, on the way out (also
    after a failed test or Ctrl-C, and PR_SET_PDEATHSIG ends the processes if the test process itself is killed).
    The `plane` fixture holds one per module; the benchmark one per stack, since both stacks' Istio would otherwise
    share one API server."""
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
        shutil.rmtree(work, ignore_errors=True)
