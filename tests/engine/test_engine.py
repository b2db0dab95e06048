"""The lab's program under the real Pulumi engine (issue #10): what the mocks in tests/harness.py cannot show.

The pulumi CLI, the kubernetes provider and stand-ins for the Python language host and the command provider are
built from Go modules by tools/engine/build.sh (the first build takes minutes, later runs reuse it). Only Docker,
kind, kubectl and the cluster are faked (tests/engine/fake_tool.py): the cluster's API server is a port that
refuses connections, so nothing here shows that Istio or the apps work; that is the e2e suite's job on a Docker host.

    venv/bin/python -m pytest -m engine
"""

from __future__ import annotations

import json

import pytest
import yaml

from lab import config as lab_config
from lab import kind_cluster, local_secrets
from lab.leaks import find_leaks
from tests.engine.engine import EngineLab, build_engine, preview_steps
from tests.engine.fake_tool import issued_client_keys

pytestmark = pytest.mark.engine

PROJECT = "istio-ambient-lab"
COMMAND = "command:local:Command"
PROVIDER = "pulumi:providers:kubernetes"
RELEASE = "kubernetes:helm.sh/v3:Release"
ISTIO_RELEASES = {"istio-base", "istiod", "istio-cni", "ztunnel"}


@pytest.fixture(scope="session")
def engine_dir() -> str:
    return build_engine()


@pytest.fixture
def lab(engine_dir, tmp_path) -> EngineLab:
    return EngineLab(engine_dir, str(tmp_path))


def _named(steps: list[dict], type_: str) -> dict[str, dict]:
    return {step["urn"].rsplit("::", 1)[1]: step for step in steps if step["urn"].split("::")[-2].endswith(type_)}


def _no_traceback(output: str) -> None:
    assert "Traceback (most recent call last)" not in output, output


@pytest.mark.parametrize("stack", ["l4-only", "l7"])
def test_first_preview_of_a_new_stack_plans_everything_and_touches_no_cluster(lab, stack):
    """Regression test for the first-preview defect: the kubeconfig invoke ran before any cluster existed."""
    lab.new_stack(stack)

    result = lab.pulumi("preview", "--json", check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    steps = preview_steps(result)
    commands = _named(steps, COMMAND)
    assert commands["kind-cluster"]["op"] == "create"
    assert _named(steps, PROVIDER)["kind"]["op"] == "create"
    releases = _named(steps, RELEASE)
    assert ISTIO_RELEASES <= set(releases), sorted(releases)
    assert all(releases[name]["op"] == "create" for name in ISTIO_RELEASES)
    assert lab.calls() == [], "a preview must not run kind, kubectl or docker"


@pytest.fixture(scope="module")
def up_lab(engine_dir, tmp_path_factory):
    """One l4-only stack after `pulumi up` against the fake machine, shared by the tests that follow it."""
    lab = EngineLab(engine_dir, str(tmp_path_factory.mktemp("engine-up")))
    lab.new_stack("l4-only")
    calls_before = len(lab.calls())
    result = lab.pulumi("up", "--yes", "--skip-preview", check=False)
    return lab, result, lab.calls()[calls_before:]


def test_up_creates_the_cluster_reads_its_kubeconfig_and_stops_at_the_unreachable_api_server(up_lab):
    lab, result, calls = up_lab
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    creates = [c for c in calls if c["tool"] == "kind" and c["argv"][:2] == ["create", "cluster"]]
    assert len(creates) == 1, calls
    # The lab's config, as the Command gave it on stdin, plus the owner label the create adds: stack id and token.
    recorded = yaml.safe_load(creates[0]["config"])
    owner = recorded["nodes"][0]["labels"][kind_cluster.OWNER_LABEL]
    assert owner.startswith(kind_cluster.owner_label_value(PROJECT, "l4-only") + ".")
    settings = lab_config.load({}, "l4-only")
    lab_yaml = kind_cluster.render_config(kind_cluster.kind_config(
        settings.cluster_name, settings.workers, settings.node_image, settings.ingress_host_port))
    assert creates[0]["config"] == kind_cluster.with_owner_label(lab_yaml, owner)
    assert creates[0]["argv"][creates[0]["argv"].index("--name") + 1] == "ambient-l4-only"
    kubeconfig_reads = [c for c in calls if c["tool"] == "kind" and c["argv"][:2] == ["get", "kubeconfig"]]
    assert kubeconfig_reads and calls.index(kubeconfig_reads[0]) > calls.index(creates[0])
    # The failure is the API server's refusal, in the provider's one sentence.
    assert "configured Kubernetes cluster is unreachable" in output, output
    assert f"127.0.0.1:{lab.api_port}" in output and "connection refused" in output, output


def test_up_failure_prints_no_python_traceback(up_lab):
    """The engine stops the update at the first failed resource and the host interrupts the program: the
    provider's sentence is the last word, not a KeyboardInterrupt traceback through asyncio (found by this tier)."""
    _, result, _ = up_lab
    output = result.stdout + result.stderr
    _no_traceback(output)
    assert "KeyboardInterrupt" not in output


def test_state_after_up_holds_no_kubeconfig_key_or_passphrase(up_lab):
    lab, _, _ = up_lab
    exported = lab.export("l4-only")
    types = {r["type"] for r in json.loads(exported)["deployment"]["resources"]}
    assert COMMAND in types and PROVIDER in types, types  # the state is the one `up` wrote
    keys = issued_client_keys(lab.fakes)
    assert keys, "the program never read the kubeconfig"
    kiali_keys = local_secrets.known_secrets(lab.project, lab.env)
    assert kiali_keys, "the program drew no Kiali signing key"
    assert find_leaks(exported, [lab.passphrase, *keys, *kiali_keys]) == []


def test_switching_the_mesh_mode_keeps_the_cluster(up_lab):
    """`config set meshMode l7` then preview: the waypoint is planned, the cluster and its provider stay.

    The fake API server refuses connections, so the preview stops at the first object it must ask the cluster about
    and lists only the steps decided by then; a replaced, created or deleted cluster would be among them.
    """
    lab, _, _ = up_lab
    lab.pulumi("config", "set", f"{PROJECT}:meshMode", "l7")
    try:
        result = lab.pulumi("preview", "--json", check=False)
    finally:
        lab.pulumi("config", "set", f"{PROJECT}:meshMode", "l4-only")

    steps = preview_steps(result)
    assert _named(steps, "istio-ambient-lab:index:Waypoint")["productpage-waypoint"]["op"] == "create"
    assert _named(steps, COMMAND).get("kind-cluster", {"op": "same"})["op"] == "same"
    assert _named(steps, PROVIDER).get("kind", {"op": "same"})["op"] == "same"
    assert not [step for step in steps if step["op"] in ("replace", "create-replacement", "delete-replaced")]


def test_destroy_runs_the_stored_delete_command_and_empties_the_stack(up_lab):
    lab, _, _ = up_lab
    # Destroy must use the command stored at create time: a new cluster name in the config must not matter.
    lab.pulumi("config", "set", f"{PROJECT}:clusterName", "renamed-after-up")
    calls_before = len(lab.calls())

    result = lab.pulumi("destroy", "--yes", "--skip-preview", check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    deletes = [c for c in lab.calls()[calls_before:] if c["tool"] == "kind" and c["argv"][:2] == ["delete", "cluster"]]
    assert [d["argv"][d["argv"].index("--name") + 1] for d in deletes] == ["ambient-l4-only"]
    assert lab.resources("l4-only") == []


@pytest.mark.parametrize("command", [["preview"], ["up", "--yes", "--skip-preview"]])
def test_a_bad_config_value_stops_with_the_lab_sentence_and_creates_nothing(lab, command):
    lab.new_stack("l4-only")
    lab.pulumi("config", "set", f"{PROJECT}:meshMode", "l5")
    with pytest.raises(lab_config.ConfigError) as expected:
        lab_config.load({"meshMode": "l5"}, "l4-only")

    result = lab.pulumi(*command, check=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert str(expected.value) in output, output
    _no_traceback(output)
    assert lab.calls() == []
    assert not [r for r in lab.resources("l4-only") if r["type"] != "pulumi:pulumi:Stack"]


def test_pulumi_config_shows_the_typed_keys_of_the_project(lab):
    lab.new_stack("l4-only")

    shown = json.loads(lab.pulumi("config", "--json").stdout)

    declared = yaml.safe_load(open(f"{lab.project}/Pulumi.yaml", encoding="utf-8"))["config"]
    typed = {f"{PROJECT}:{key}" for key, spec in declared.items() if "type" in spec}
    assert typed <= set(shown), sorted(typed - set(shown))
    assert shown[f"{PROJECT}:meshMode"]["value"] == "l4-only"
    assert shown[f"{PROJECT}:workers"]["value"] == "2"  # the CLI prints values as strings, whatever their type


def test_lab_sh_up_previews_then_stops_at_the_fake_cluster_with_its_sentence(lab):
    """`./lab.sh up` as a user runs it, with the built engine as their pulumi and the fakes as Docker, kind and
    kubectl: tools found, preflight, state, stack, the preview (which must pass on a new stack), then the update
    creates the cluster and stops at the API server that refuses connections, in one sentence."""
    import os
    import shutil
    import subprocess

    from tests.engine.engine import ROOT, refused_port

    shutil.copy2(os.path.join(ROOT, "lab.sh"), os.path.join(lab.project, "lab.sh"))
    stack_file = os.path.join(lab.project, "stacks", "Pulumi.l4-only.yaml")
    with open(stack_file, "w", encoding="utf-8") as handle:  # a free port, so the preflight's port check passes here
        handle.write(f"config:\n  {PROJECT}:ingressHostPort: {refused_port()}\n")
    tracked = open(stack_file, "rb").read()
    env = {name: value for name, value in lab.env.items()
           if name not in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE")}  # ./lab.sh brings its own

    result = subprocess.run(["bash", "lab.sh", "up", "l4-only"], cwd=lab.project, env=env, capture_output=True,
                            text=True, timeout=900)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    steps = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert steps == ["[1/6] tools", "[2/6] preflight", "[3/6] state", "[4/6] stack l4-only", "[5/6] cluster",
                     "[6/6] pulumi up"], output
    preflight = result.stdout.split("[2/6] preflight", 1)[1].split("[3/6] state", 1)[0]
    assert "  ok  " in preflight and "FAIL" not in preflight, preflight
    assert "Previewing update (l4-only)" in output and "Updating (l4-only)" in output, output
    assert output.index("Previewing update (l4-only)") < output.index("Updating (l4-only)")
    assert "configured Kubernetes cluster is unreachable" in output and "Traceback" not in output, output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("`pulumi up` failed: read its output above and the diagnostics in ") and last.endswith(
        "fix the cause, then run `./lab.sh up l4-only` again."), last
    calls = lab.calls()
    creates = [c for c in calls if c["tool"] == "kind" and c["argv"][:2] == ["create", "cluster"]]
    reads = [c for c in calls if c["tool"] == "kind" and c["argv"][:2] == ["get", "kubeconfig"]]
    assert len(creates) == 1 and reads and calls.index(reads[0]) > calls.index(creates[0]), calls
    assert open(stack_file, "rb").read() == tracked, "./lab.sh left an encryptionsalt in the tracked stack file"

    # Again, as a user does after a failure: the failed up saved no outputs, so ./lab.sh must know its cluster from
    # the state pulumi wrote (the cluster Command's triggers and stored stdout), or it would call it a stranger's.
    again = subprocess.run(["bash", "lab.sh", "up", "l4-only"], cwd=lab.project, env=env, capture_output=True,
                           text=True, timeout=900)
    preflight = again.stdout.split("[2/6] preflight", 1)[1].split("[3/6] state", 1)[0]
    assert "kind cluster ambient-l4-only belongs to this stack" in preflight, again.stdout + again.stderr
    assert "FAIL" not in preflight and "kind cluster ambient-l4-only is running" in again.stdout, again.stdout
    assert len([c for c in lab.calls() if c["tool"] == "kind" and c["argv"][:2] == ["create", "cluster"]]) == 1
    assert open(stack_file, "rb").read() == tracked


def test_the_e2e_suites_automation_api_calls_run_against_the_real_cli(lab, monkeypatch):
    """The end-to-end suite's `Lab` (tests/e2e/lab.py) on the real CLI: a new stack of its own name, its config,
    the preview ./lab.sh up makes before the first update, the update that stops at the fake cluster with the
    provider's sentence, the state export and the destroy. Its calls are proven here, not only its skips."""
    from pulumi import automation as auto

    from tests.e2e.lab import Lab

    for name, value in lab.env.items():
        if name not in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE"):  # the e2e Lab brings its own
            monkeypatch.setenv(name, value)
    e2e = Lab("l4-only", "e2e-on-the-engine", lab.project)
    assert e2e.stack_name.startswith("e2e-l4-only-")

    planned = e2e.preview().change_summary
    assert planned.get(auto.OpType.CREATE, 0) > 10 and set(planned) == {auto.OpType.CREATE}, planned
    with pytest.raises(auto.CommandError) as stopped:
        e2e.up()
    assert "configured Kubernetes cluster is unreachable" in str(stopped.value)
    stored = e2e.state_as_stored()
    assert json.loads(stored)["deployment"]["resources"], "the state the update wrote"
    assert find_leaks(stored, [e2e.passphrase, *issued_client_keys(lab.fakes),
                               *local_secrets.known_secrets(lab.project, lab.env)]) == []
    # What the e2e suite used to check, and why it no longer does: the Automation API's export decrypts.
    decrypted = json.dumps(e2e.stack.export_stack().deployment)
    assert find_leaks(decrypted, issued_client_keys(lab.fakes)), "export_stack() is --show-secrets"
    e2e.destroy()
    assert e2e.stack.export_stack().deployment.get("resources") in (None, [])
    assert "e2e-on-the-engine" not in json.loads(open(f"{lab.fakes}/clusters.json").read())
