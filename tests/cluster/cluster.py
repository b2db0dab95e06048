"""The cluster tier's pieces: the control plane's build, the upstream charts, and a lab whose kind is that cluster.

`build_cluster()` mirrors tests/engine/engine.py's `build_engine()`: outside CI the tier runs once
tools/cluster/build.sh has built the binaries (or when asked with LAB_BUILD_CLUSTER=1); in CI, where .ci/run builds
them first, anything missing fails instead of skipping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import catalog
from tests.cluster.controlplane import ControlPlane
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
    # Opt-in, in CI too, until the tier passes end to end (issue 17: test 1 has not yet run to its end).
    if not (os.path.exists(os.path.join(out, "stamp")) or os.environ.get(BUILD_ENV) == "1"):
        pytest.skip("the Kubernetes control plane is not built yet: run tools/cluster/build.sh once (many CPU "
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

    def set_config(self, stack: str, key: str, value: str) -> None:
        """Writes one of the project's settings into the stack file, as a user edits it."""
        import yaml

        path = os.path.join(self.project, "stacks", f"Pulumi.{stack}.yaml")
        data = yaml.safe_load(open(path, encoding="utf-8")) or {}
        data.setdefault("config", {})[f"istio-ambient-lab:{key}"] = value
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)


__all__ = ["ClusterLab", "build_cluster", "network_namespaces_work", "upstream_charts", "refused_port"]
