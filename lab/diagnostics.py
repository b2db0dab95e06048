"""Collect what someone needs to see why a lab failed into one folder, ``.lab/diagnostics/<UTC timestamp>/``.

Every step is attempted and its outcome written to ``summary.txt``: a failing step is recorded, never fatal. For a
kind cluster, the kubeconfig comes from ``kind get kubeconfig`` into a temporary file readable only by the user,
removed afterwards and never printed.

The folder is meant to be shared, so nothing in it keeps a credential in plain text: every output goes through the
leak rule before it is written, and the files `kind export logs` writes itself (each node's `docker inspect`, whose
environment carries HTTP_PROXY with any password in it, and the nodes' journals) are redacted in place afterwards.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from lab import catalog, leaks, private
from lab.bootstrap import Runner, last_line, run_captured


# (file, pod selector) of the Istio components whose logs explain most failures.
_LOGS = (
    ("istiod.log", catalog.ISTIOD_POD_LABEL),
    ("istio-cni.log", catalog.ISTIO_CNI_POD_LABEL),
    ("ztunnel.log", catalog.ZTUNNEL_POD_LABEL),
)


@dataclass(frozen=True)
class Step:
    """One command and the file its output goes to."""

    label: str
    argv: Sequence[str]
    output: str | None  # None: the command writes its own files


def _kubectl_steps(kubectl: Sequence[str], apps_namespace: str, namespaces: Sequence[str] | None) -> list[Step]:
    """``namespaces``: None on the lab's own kind cluster (the lists cover every namespace); else only these are
    listed, one file each, so a folder meant to be shared holds nothing of other teams' workloads."""
    steps = [
        Step(
            f"logs {label}",
            # --tail=-1: with a selector kubectl prints only 10 lines per pod unless told otherwise.
            [*kubectl, "logs", "-n", catalog.ISTIO_NAMESPACE, "-l", label, "--all-containers", "--prefix",
             "--tail=-1", "--max-log-requests=50"],
            file,
        )
        for file, label in _LOGS
    ]
    for resource in ("all", "gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"):
        steps.append(Step(f"get {resource}", [*kubectl, "get", resource, "-n", apps_namespace, "-o", "yaml"],
                          f"{resource.split('.')[0]}.yaml"))
    # The Istio security resources, pods and events: every namespace on kind (the mesh-wide PeerAuthentication is in
    # istio-system), the lab's own elsewhere.
    scopes = [(["-A"], "")] if namespaces is None else [(["-n", namespace], namespace) for namespace in namespaces]
    for scope, namespace in scopes:
        def step(label: str, args: list[str], file: str) -> Step:
            named = f"{label} in {namespace}" if namespace else label
            stem, extension = file.rsplit(".", 1)
            return Step(named, [*kubectl, *args], f"{stem}-{namespace}.{extension}" if namespace else file)

        for resource in ("authorizationpolicies.security.istio.io", "peerauthentications.security.istio.io"):
            steps.append(step(f"get {resource}", ["get", resource, *scope, "-o", "yaml"],
                              f"{resource.split('.')[0]}.yaml"))
        steps.append(step("pods", ["get", "pods", *scope, "-o", "wide"], "pods.txt"))
        steps.append(step("events", ["get", "events", *scope, "--sort-by=.lastTimestamp"], "events.txt"))
    return steps


def _redact_tree(folder: Path) -> None:
    """Redacts every file under `folder` in place (bytes that are not UTF-8 survive the round trip unchanged)."""
    for parent, _, names in os.walk(folder):  # does not descend into symlinked folders
        for name in names:
            path = Path(parent, name)
            if path.is_symlink() or not path.is_file():
                continue
            text = path.read_bytes().decode("utf-8", "surrogateescape")
            redacted = leaks.redact(text)
            if redacted != text:
                private.write_private(path, redacted.encode("utf-8", "surrogateescape"))


def _new_folder(root: Path, now: datetime) -> Path:
    private.private_dir(root)
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 100):
        folder = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{root}/{stamp}")


def collect(
    root: Path,
    *,
    target: str,
    cluster_name: str | None,
    apps_namespace: str = catalog.DEFAULT_APPS_NAMESPACE,
    kubeconfig: str | None = None,
    context: str | None = None,
    env: Mapping[str, str] | None = None,
    run: Runner = run_captured,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> Path:
    """Collect logs and state into a new timestamped folder under ``root``.

    Args:
        root: Where diagnostics folders go (``.lab/diagnostics``).
        target: "kind" (export kind's logs, kubeconfig from kind) or "existing".
        cluster_name: The kind cluster's name (kind target).
        apps_namespace: The namespace bookinfo runs in.
        kubeconfig: Kubeconfig file for an existing cluster (None: kubectl's default).
        context: Kubeconfig context for an existing cluster.
        env: Environment for the commands (PATH with the project's tools).
        run: The process runner.
        now: The clock, for the folder's name.

    Returns:
        The folder written.
    """
    folder = _new_folder(root, now())
    summary: list[str] = []

    def attempt(step: Step) -> bool:
        result = run(step.argv, env=env, timeout=300)
        if step.output is not None:
            private.write_private(folder / step.output, leaks.redact(result.stdout))
        if result.returncode == 0:
            summary.append(f"ok      {step.label}")
            return True
        summary.append(f"FAILED  {step.label} (exit {result.returncode}): {last_line(result.stderr)}")
        return False

    temporary_kubeconfig = None
    try:
        if target == "kind" and cluster_name:
            attempt(Step("kind export logs", ["kind", "export", "logs", str(folder / "kind-logs"),
                                              "--name", cluster_name], None))
            _redact_tree(folder / "kind-logs")
            handle, temporary_kubeconfig = tempfile.mkstemp(prefix="lab-kubeconfig-", suffix=".yaml")  # mode 0600
            result = run(["kind", "get", "kubeconfig", "--name", cluster_name], env=env, timeout=60)
            with os.fdopen(handle, "w") as out:
                out.write(result.stdout if result.returncode == 0 else "")
            if result.returncode == 0:
                summary.append("ok      kind get kubeconfig")
                kubeconfig = temporary_kubeconfig
            else:  # stderr only: stdout would be the kubeconfig itself
                summary.append(f"FAILED  kind get kubeconfig (exit {result.returncode}): {last_line(result.stderr)}")
        if target == "kind" and kubeconfig is None:
            summary.append("skipped kubectl steps: no kubeconfig for the kind cluster")
        else:
            kubectl = ["kubectl", "--request-timeout=60s"]
            kubectl += ["--kubeconfig", kubeconfig] if kubeconfig else []
            kubectl += ["--context", context] if context else []
            namespaces = None if target == "kind" else catalog.lab_namespaces(apps_namespace)
            for step in _kubectl_steps(kubectl, apps_namespace, namespaces):
                attempt(step)
    finally:
        if temporary_kubeconfig is not None:
            os.unlink(temporary_kubeconfig)
        # The summary quotes each failed command's stderr, which may name a proxy with its password.
        private.write_private(folder / "summary.txt", leaks.redact("\n".join(summary) + "\n"))
    return folder
