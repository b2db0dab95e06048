"""The first preview of a brand-new stack, under the engine's real rules (see harness.LabMocks).

`./lab.sh up` and `pulumi up` both preview before they update. On a new stack no cluster exists yet, while the
cluster Command already has an ID: whatever the program runs against the cluster in that preview fails on a real
host. These tests fail on a program that reads the kubeconfig in a preview that will create the cluster.
"""

import pytest

from tests.harness import STACKS, run_program

CLUSTER_TOUCHING = ("lab.kind_cluster kubeconfig", "-m verify", "lab.images")


@pytest.mark.parametrize("stack", STACKS)
def test_first_preview_of_a_new_stack_runs_nothing_against_a_cluster(stack):
    run = run_program(stack, preview=True, existing_stack=False)
    touched = [command for command in run.commands_run if any(part in command for part in CLUSTER_TOUCHING)]
    assert touched == []
    # ...and still plans the cluster, its provider and the Istio releases.
    assert run.named("command:local:Command", "kind-cluster")
    assert run.named("pulumi:providers:kubernetes", "kind")
    releases = {r.name for r in run.of_type("kubernetes:helm.sh/v3:Release")}
    assert {"istio-base", "istiod", "istio-cni", "ztunnel"} <= releases


@pytest.mark.parametrize("stack", STACKS)
def test_preview_of_an_existing_stack_reads_the_kubeconfig_for_real_diffs(stack):
    run = run_program(stack, preview=True, existing_stack=True)
    assert any("lab.kind_cluster kubeconfig" in command for command in run.commands_run)
    assert not any("-m verify" in command for command in run.commands_run)  # checks run on up, never in preview


@pytest.mark.parametrize("stack", STACKS)
def test_first_up_reads_the_kubeconfig_after_creating_the_cluster(stack):
    run = run_program(stack)
    created = next(i for i, c in enumerate(run.commands_run) if "lab.kind_cluster create" in c)
    read = next(i for i, c in enumerate(run.commands_run) if "lab.kind_cluster kubeconfig" in c)
    assert created < read
