"""Diagnostics: every step attempted, failures recorded, the kubeconfig kept to a 0600 file that disappears."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import datetime, timezone

from lab import diagnostics
from tests import realistic_secrets

KUBECONFIG = "apiVersion: v1\nusers:\n- user:\n    client-key-data: SECRET-KEY\n"
NOW = datetime(2026, 11, 25, 17, 30, 5, tzinfo=timezone.utc)


class FakeRun:
    """Records each command; answers from ``failures`` (argv fragment -> (exit, stderr)) or succeeds."""

    def __init__(self, failures=None):
        self.calls: list[list[str]] = []
        self.failures = failures or {}
        self.kubeconfig_seen: list[tuple[int, str]] = []

    def __call__(self, argv, env=None, timeout=None, cwd=None):
        argv = list(argv)
        self.calls.append(argv)
        for fragment, (code, stderr) in self.failures.items():
            if fragment in " ".join(argv):
                return subprocess.CompletedProcess(argv, code, "partial output\n", stderr)
        if argv[:3] == ["kind", "get", "kubeconfig"]:
            return subprocess.CompletedProcess(argv, 0, KUBECONFIG, "")
        if "--kubeconfig" in argv:
            path = argv[argv.index("--kubeconfig") + 1]
            self.kubeconfig_seen.append((stat.S_IMODE(os.stat(path).st_mode), open(path).read()))
        return subprocess.CompletedProcess(argv, 0, f"output of {' '.join(argv[-4:])}\n", "")


def collect(tmp_path, run, **overrides):
    arguments = dict(target="kind", cluster_name="ambient-l4-only", apps_namespace="default", run=run, now=lambda: NOW)
    return diagnostics.collect(tmp_path / "diagnostics", **{**arguments, **overrides})


def test_kind_lab_collects_logs_and_state_into_a_timestamped_folder(tmp_path):
    run = FakeRun()
    folder = collect(tmp_path, run)
    assert folder == tmp_path / "diagnostics" / "20261125T173005Z"
    assert run.calls[0] == ["kind", "export", "logs", str(folder / "kind-logs"), "--name", "ambient-l4-only"]
    assert run.calls[1] == ["kind", "get", "kubeconfig", "--name", "ambient-l4-only"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "istiod.log", "istio-cni.log", "ztunnel.log", "all.yaml", "gateways.yaml", "httproutes.yaml",
        "authorizationpolicies.yaml", "peerauthentications.yaml", "pods.txt", "events.txt", "summary.txt",
    ])
    summary = (folder / "summary.txt").read_text().splitlines()
    assert summary[:3] == ["ok      kind export logs", "ok      kind get kubeconfig", "ok      logs app=istiod"]
    assert all(line.startswith("ok") for line in summary)


def test_logs_cover_every_pod_of_istiod_cni_and_ztunnel(tmp_path):
    run = FakeRun()
    collect(tmp_path, run)
    logs = [call for call in run.calls if "logs" in call and call[0] == "kubectl"]
    assert [call[call.index("-l") + 1] for call in logs] == ["app=istiod", "k8s-app=istio-cni-node", "app=ztunnel"]
    for call in logs:
        assert {"-n", "istio-system", "--tail=-1", "--all-containers"} <= set(call)
    gets = [call for call in run.calls if "get" in call and "-o" in call and "yaml" in call]
    assert ["all", "-n", "default"] == gets[0][gets[0].index("get") + 1:gets[0].index("get") + 4]


def test_kubeconfig_is_a_0600_temporary_file_removed_afterwards_and_never_written_out(tmp_path):
    run = FakeRun()
    folder = collect(tmp_path, run)
    assert run.kubeconfig_seen and all(seen == (0o600, KUBECONFIG) for seen in run.kubeconfig_seen)
    used = {call[call.index("--kubeconfig") + 1] for call in run.calls if "--kubeconfig" in call}
    assert len(used) == 1 and not os.path.exists(used.pop())
    for path in folder.rglob("*"):
        assert "SECRET-KEY" not in path.read_text()


def test_a_failing_step_is_recorded_and_the_rest_still_run(tmp_path):
    run = FakeRun({"export logs": (1, "ERROR: unknown cluster\n"), "app=ztunnel": (1, "error: timed out\n")})
    folder = collect(tmp_path, run)
    summary = (folder / "summary.txt").read_text().splitlines()
    assert "FAILED  kind export logs (exit 1): ERROR: unknown cluster" in summary
    assert "FAILED  logs app=ztunnel (exit 1): error: timed out" in summary
    assert "ok      events" in summary
    assert (folder / "ztunnel.log").read_text() == "partial output\n"


def test_without_a_kubeconfig_the_kubectl_steps_are_skipped_and_the_failure_hides_stdout(tmp_path):
    run = FakeRun({"get kubeconfig": (1, "ERROR: no nodes found\n")})
    folder = collect(tmp_path, run)
    assert (folder / "summary.txt").read_text().splitlines() == [
        "ok      kind export logs",
        "FAILED  kind get kubeconfig (exit 1): ERROR: no nodes found",
        "skipped kubectl steps: no kubeconfig for the kind cluster",
    ]
    assert not any(call[0] == "kubectl" for call in run.calls)


def test_existing_cluster_uses_its_context_and_no_kind(tmp_path):
    run = FakeRun()
    collect(tmp_path, run, target="existing", cluster_name=None, context="gke_lab", kubeconfig=None)
    assert all(call[0] == "kubectl" for call in run.calls)
    assert all(call[1:4] == ["--request-timeout=60s", "--context", "gke_lab"] for call in run.calls)


def test_on_an_existing_cluster_only_the_labs_namespaces_are_collected(tmp_path):
    """The folder is meant to be shared: other teams' pods, events and policies stay out of it."""
    run = FakeRun()
    folder = collect(tmp_path, run, target="existing", cluster_name=None, context="gke_lab", kubeconfig=None,
                     apps_namespace="istio-ambient-lab")
    assert not [call for call in run.calls if "-A" in call or "--all-namespaces" in call]
    namespaces = {call[call.index("-n") + 1] for call in run.calls}
    assert namespaces == {"istio-system", "istio-ambient-lab", "mesh-outside"}
    for namespace in namespaces:
        assert {f"pods-{namespace}.txt", f"events-{namespace}.txt", f"peerauthentications-{namespace}.yaml",
                f"authorizationpolicies-{namespace}.yaml"} <= {path.name for path in folder.iterdir()}
    assert "ok      events in mesh-outside" in (folder / "summary.txt").read_text()


def test_on_the_labs_own_kind_cluster_every_namespace_is_collected(tmp_path):
    run = FakeRun()
    collect(tmp_path, run)
    assert len([call for call in run.calls if "-A" in call]) == 4, "policies, pods and events of every namespace"


def test_two_collections_in_the_same_second_get_their_own_folders(tmp_path):
    first, second = collect(tmp_path, FakeRun()), collect(tmp_path, FakeRun())
    assert first != second and second.name == "20261125T173005Z-2"
    assert stat.S_IMODE(first.stat().st_mode) == 0o700


class LeakyRun(FakeRun):
    """What a real machine behind an authenticating proxy hands diagnostics: `kind export logs` writes each node's
    `docker inspect` (HTTP_PROXY in its environment) and a journal; the cluster's logs and YAML quote credentials;
    a failing kubectl names the proxy."""

    def __call__(self, argv, env=None, timeout=None, cwd=None):
        argv = list(argv)
        if argv[:3] == ["kind", "export", "logs"]:
            node = os.path.join(argv[3], "ambient-l4-only-control-plane")
            os.makedirs(node)
            with open(os.path.join(node, "inspect.json"), "w") as out:
                out.write(realistic_secrets.SAMPLES["docker inspect with a proxy"])
            with open(os.path.join(node, "kubelet.log"), "wb") as out:
                out.write(realistic_secrets.ALL.encode() + b"\n\xff\xfe binary tail\n")
            self.calls.append(argv)
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[-1:] == ["--max-log-requests=50"]:
            self.calls.append(argv)
            return subprocess.CompletedProcess(argv, 0, realistic_secrets.ALL, "")
        if "events" in argv:
            self.calls.append(argv)
            return subprocess.CompletedProcess(argv, 1, realistic_secrets.KUBECONFIG, "Unable to connect: proxyconnect "
                                               f"tcp: http://lab:{realistic_secrets.PROXY_PASSWORD}@proxy.corp:3128")
        return super().__call__(argv, env, timeout, cwd)


def test_nothing_written_keeps_a_credential_and_each_file_keeps_its_shape(tmp_path):
    folder = collect(tmp_path, LeakyRun())
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert {"inspect.json", "kubelet.log", "istiod.log", "events.txt", "summary.txt"} <= {path.name for path in files}
    for path in files:
        realistic_secrets.assert_clean(path.read_bytes().decode("utf-8", "replace"))
    inspect = json.loads((folder / "kind-logs" / "ambient-l4-only-control-plane" / "inspect.json").read_text())
    assert inspect[0]["Config"]["Env"][0] == "HTTP_PROXY=http://lab:REDACTED@proxy.corp:3128"
    assert (folder / "kind-logs" / "ambient-l4-only-control-plane" / "kubelet.log").read_bytes().endswith(
        b"\n\xff\xfe binary tail\n")
    assert "FAILED  events (exit 1): Unable to connect: proxyconnect tcp: http://lab:REDACTED@proxy.corp:3128" in (
        folder / "summary.txt").read_text()
