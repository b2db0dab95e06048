"""End to end, through the Pulumi Automation API, against real kind clusters.

Needs a Docker daemon, kind, kubectl and the pulumi CLI on PATH (./lab.sh test puts .lab/tools, where ./lab.sh up
installs them, first on PATH). Without them every test here skips with the reason. Run with:

    ./lab.sh test tests/e2e

Each test works on a copy of the project in a temporary folder (its own file state backend, its own passphrase,
cluster names prefixed e2e- and ports away from a lab you may have running), so the checkout is never touched.
A full run builds several clusters and takes tens of minutes.
"""

from __future__ import annotations

from collections.abc import Callable
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

from lab import catalog, local_secrets, outputs
from lab.leaks import find_leaks
from tests.e2e import LEFTOVER_PREFIXES
from verify.checks.base import STRICT_CHECK, STRICT_POLICY

from tests.e2e.lab import COPIED, PROJECT, ROOT, Lab  # noqa: F401 (COPIED: the copy this suite works on)


def _missing_tools() -> str | None:
    for tool in ("docker", "kind", "kubectl", "pulumi"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the Docker daemon is not reachable"
    return None


MISSING = _missing_tools()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(MISSING is not None, reason=f"e2e needs Docker, kind, kubectl and pulumi: {MISSING}"),
]

if MISSING is None:  # the Automation API needs the CLI; import it only where it can work
    from pulumi import automation as auto


def kind_clusters() -> list[str]:
    out = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("No kind clusters")]


def kind_containers(cluster: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={cluster}", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.split()


def user_kubeconfig_contexts() -> list[str]:
    result = subprocess.run(["kubectl", "config", "get-contexts", "-o", "name"], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else []


@pytest.fixture
def workdir():
    work = tempfile.mkdtemp(prefix="lab-e2e-")
    for name in COPIED:
        source = os.path.join(ROOT, name)
        target = os.path.join(work, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    # The copy shares the checkout's virtualenv (Pulumi.yaml names ./venv) instead of building another.
    os.symlink(os.path.join(ROOT, "venv"), os.path.join(work, "venv"))
    yield work
    shutil.rmtree(work, ignore_errors=True)


def assert_nothing_left(lab: Lab) -> None:
    assert lab.cluster not in kind_clusters()
    assert kind_containers(lab.cluster) == []
    assert f"kind-{lab.cluster}" not in user_kubeconfig_contexts(), "the lab added a context to the user's kubeconfig"
    # Every kubectl the lab starts (verify's and the dashboard's port-forwards included) reads a temporary kubeconfig
    # named lab-kubeconfig-*.
    leftover = subprocess.run(["pgrep", "-f", "lab-kubeconfig-"], capture_output=True)
    assert leftover.returncode != 0, "a kubectl started by the lab outlived it"
    temp = tempfile.gettempdir()
    assert not [f for f in os.listdir(temp) if f.startswith(LEFTOVER_PREFIXES)]


def assert_no_secrets_in(text: str, lab: Lab) -> None:
    kiali_keys = local_secrets.known_secrets(lab.work, {**os.environ, **lab.env_vars})  # no shape: known only
    assert find_leaks(text, [lab.passphrase, *kiali_keys]) == []


def changes(summary) -> dict:
    """A change summary without the unchanged count, keys as plain strings."""
    return {str(getattr(k, "value", k)): v for k, v in (summary or {}).items() if str(getattr(k, "value", k)) != "same" and v}


def assert_verified(out: dict, stack: str) -> None:
    report = out[outputs.VERIFICATION]
    assert report["passed"], report.get("summary")
    assert out[outputs.CERTIFICATE_SAN] == {
        "sleep": catalog.spiffe_id("default", "sleep"),
        "productpage": catalog.spiffe_id("default", "bookinfo-productpage"),
    }
    evidence = out[outputs.ZTUNNEL_EVIDENCE]
    client, server = evidence["client"]["entry"], evidence["server"]["entry"]
    assert client["direction"] == "outbound" and server["direction"] == "inbound"
    # The lines are the probe's own: the client side from the port the probe bound.
    assert client["src_addr"].rpartition(":")[2] == str(evidence["probe"]["local_port"])
    if stack == "l7":
        assert client["dst_workload"].startswith(catalog.WAYPOINT_NAME)
    else:
        assert (client["bytes_sent"], client["bytes_recv"]) == (server["bytes_recv"], server["bytes_sent"])
    strict = next(result for result in report["results"] if result["name"] == STRICT_CHECK)
    assert strict["evidence"]["entry"]["error"].endswith(f"explicitly denied by: {STRICT_POLICY}")


@pytest.mark.parametrize("stack", ["l4-only", "l7"])
def test_up_no_change_switch_and_destroy(workdir, stack):
    lab = Lab(stack, f"e2e-{stack}", workdir)
    other = "l7" if stack == "l4-only" else "l4-only"
    try:
        # ./lab.sh up previews before it updates (the Automation API's up does not): a brand-new stack's first
        # preview must pass without a cluster.
        first = changes(lab.preview().change_summary)
        assert first.get("create", 0) > 0 and set(first) == {"create"}, first
        result = lab.up()
        out = lab.outputs()
        assert out[outputs.MESH_MODE] == stack
        assert_verified(out, stack)
        assert out[outputs.HELM_RELEASES] == {r.release: "deployed" for r in catalog.ISTIO_CHARTS}

        # A second look changes nothing.
        assert changes(lab.preview(expect_no_changes=True).change_summary) == {}
        assert changes(lab.refresh(expect_no_changes=True).summary.resource_changes) == {}

        # Switch the mode in place and back: the waypoint and the L7 policy come and go; the L4 policy and
        # productpage's waypoint label change; nothing is replaced.
        lab.set("meshMode", other)
        switched = changes(lab.up().summary.resource_changes)
        mode_specific = 3  # Waypoint component, its Gateway, the L7 policy
        if other == "l7":
            assert switched.get("create") == mode_specific and "delete" not in switched, switched
        else:
            assert switched.get("delete") == mode_specific and "create" not in switched, switched
        assert switched.get("update") == 3, switched  # productpage-l4, productpage-use-waypoint, kiali (restart)
        assert "replace" not in switched
        assert_verified(lab.outputs(), other)
        lab.set("meshMode", stack)
        lab.up()

        state = lab.state_as_stored()
        assert_no_secrets_in(state, lab)
        assert_no_secrets_in("\n".join(lab.printed), lab)
        assert result.summary.result == "succeeded"
    finally:
        lab.destroy()
    assert_nothing_left(lab)


def test_a_foreign_cluster_is_refused_then_adopted(workdir):
    name = "e2e-adopt"
    subprocess.run(["kind", "create", "cluster", "--name", name, "--kubeconfig", os.path.join(workdir, "kc")],
                   check=True, capture_output=True)
    lab = Lab("l4-only", name, workdir)
    lab.set("verify", "false")
    lab.set("observability", "false")
    try:
        with pytest.raises(auto.CommandError) as refused:
            lab.up()
        assert f"kind cluster '{name}' already exists and was not created by this stack; adopt it" in str(refused.value)
        assert name in kind_clusters(), "a cluster the stack does not own must survive a refused up"
        lab.set("adoptExistingCluster", "true")
        lab.up()
    finally:
        lab.destroy()
    assert_nothing_left(lab)


def test_destroy_after_the_cluster_was_deleted_by_hand(workdir):
    lab = Lab("l4-only", "e2e-gone", workdir)
    lab.set("verify", "false")
    lab.set("observability", "false")
    lab.up()
    subprocess.run(["kind", "delete", "cluster", "--name", lab.cluster], check=True, capture_output=True)
    lab.destroy()
    assert lab.stack.export_stack().deployment.get("resources") in (None, [])
    assert_nothing_left(lab)


def test_a_stopped_cluster_is_explained_then_started(workdir):
    """A Docker or host restart stops the nodes: the preview says which command starts them, and after the start
    the lab previews with no changes."""
    lab = Lab("l4-only", "e2e-stopped", workdir)
    lab.set("verify", "false")
    lab.set("observability", "false")
    try:
        lab.up()
        subprocess.run(["docker", "stop", *kind_containers(lab.cluster)], check=True, capture_output=True)
        with pytest.raises(auto.CommandError) as stopped:
            lab.preview()
        assert f"kind cluster '{lab.cluster}' is stopped (Docker or the host restarted); run `./lab.sh up`" in str(
            stopped.value)
        started = subprocess.run([os.path.join(workdir, "venv", "bin", "python"), "-m", "lab.kind_cluster", "start",
                                  "--name", lab.cluster], cwd=workdir, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        assert changes(lab.preview(expect_no_changes=True).change_summary) == {}
    finally:
        lab.destroy()
    assert_nothing_left(lab)


def lab_sh_copy(workdir: str, cluster: str, port: str) -> tuple[str, Callable[..., subprocess.CompletedProcess]]:
    """The copy made runnable as ./lab.sh, its l4-only stack file pointed at an e2e cluster and port."""
    shutil.copy2(os.path.join(ROOT, "lab.sh"), os.path.join(workdir, "lab.sh"))
    stack_file = os.path.join(workdir, "stacks", "Pulumi.l4-only.yaml")
    with open(stack_file, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    config["config"] = {**(config.get("config") or {}), f"{PROJECT}:clusterName": cluster,
                        f"{PROJECT}:ingressHostPort": int(port), f"{PROJECT}:verify": False,
                        f"{PROJECT}:observability": False}
    with open(stack_file, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)

    def lab_sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", os.path.join(workdir, "lab.sh"), *args], cwd=workdir, capture_output=True,
                              text=True, timeout=3600)

    return stack_file, lab_sh


def test_lab_sh_leaves_the_tracked_files_alone_and_starts_over_after_lab_is_deleted(workdir):
    """./lab.sh up and destroy change no tracked file (no encryptionsalt); after .lab/ is deleted, the old state's
    cluster is named with the one command that clears the way, and the next up builds a working lab."""
    stack_file, lab_sh = lab_sh_copy(workdir, "e2e-lab-sh", "18082")
    before = open(stack_file, "rb").read()
    try:
        first = lab_sh("up", "l4-only")
        assert first.returncode == 0, first.stderr
        assert open(stack_file, "rb").read() == before, "up wrote into the tracked stack file"
        shutil.rmtree(os.path.join(workdir, ".lab", "state"))
        os.remove(os.path.join(workdir, ".lab", "passphrase"))
        again = lab_sh("up", "l4-only")  # a new state meets the old state's cluster: refused in one sentence
        assert again.returncode == 1
        said = again.stdout + again.stderr
        assert "was made by stack l4-only from another state" in said, said
        assert ".lab/tools/kind delete cluster --name e2e-lab-sh" in said, said
        subprocess.run([os.path.join(workdir, ".lab", "tools", "kind") if os.path.exists(
            os.path.join(workdir, ".lab", "tools", "kind")) else "kind", "delete", "cluster", "--name", "e2e-lab-sh"],
            check=True, capture_output=True)
        fresh = lab_sh("up", "l4-only")
        assert fresh.returncode == 0, fresh.stderr
        assert open(stack_file, "rb").read() == before
    finally:
        gone = lab_sh("destroy", "l4-only")
    assert gone.returncode == 0, gone.stderr
    assert open(stack_file, "rb").read() == before, "destroy wrote into the tracked stack file"
    assert "e2e-lab-sh" not in kind_clusters()


def test_lab_sh_adopt_is_a_one_time_choice(workdir):
    """./lab.sh up --adopt takes over a foreign cluster for that up only: nothing stored, nothing left behind."""
    stack_file, lab_sh = lab_sh_copy(workdir, "e2e-adopt-once", "18083")
    subprocess.run(["kind", "create", "cluster", "--name", "e2e-adopt-once", "--kubeconfig",
                    os.path.join(workdir, "foreign-kubeconfig")], check=True, capture_output=True)
    before = open(stack_file, "rb").read()
    try:
        refused = lab_sh("up", "l4-only")
        assert refused.returncode == 1 and "--adopt" in refused.stdout + refused.stderr
        adopted = lab_sh("up", "l4-only", "--adopt")
        assert adopted.returncode == 0, adopted.stderr
        assert open(stack_file, "rb").read() == before, "--adopt wrote into the tracked stack file"
        assert not os.listdir(os.path.join(workdir, ".lab", "adopt-once")), "an adoption outlived its up"
        settled = lab_sh("up", "l4-only")  # the next up adopts nothing and changes nothing
        assert settled.returncode == 0, settled.stderr
    finally:
        gone = lab_sh("destroy", "l4-only")
    assert gone.returncode == 0, gone.stderr
    assert "e2e-adopt-once" not in kind_clusters()
