"""The verification under mocks: when it runs, what it runs, what it exports, and how a failure surfaces."""

import pytest

from lab import outputs
from tests.harness import STACKS, fake_verify_report, run_program


def verify_invokes(run):
    return [i for i in run.invokes if " -m verify " in i.args.get("command", "")]


@pytest.mark.parametrize("stack", STACKS)
def test_runs_the_verify_cli_once_after_everything_it_tests(runs, stack):
    run = runs[stack]
    [invoke] = verify_invokes(run)
    assert invoke.args["command"] == (
        f"venv/bin/python -m verify --mode {stack} --namespace default --kind-cluster ambient-{stack} --addons "
        f"--image-record .lab/image-digests.json --timeout 120 --json "
        f"--report-file .lab/reports/{stack}.json || [ $? -eq 1 ]"
    )
    assert invoke.args["logging"] == "stderr", "progress shows, the JSON report is not logged"
    tested = [r for r in run.kubernetes() if r.type in (
        "kubernetes:apps/v1:Deployment", "kubernetes:security.istio.io/v1:AuthorizationPolicy",
        "kubernetes:security.istio.io/v1:PeerAuthentication", "kubernetes:helm.sh/v3:Release",
        "kubernetes:gateway.networking.k8s.io/v1:Gateway", "kubernetes:core/v1:ServicePatch")]
    assert len(tested) > 15
    for resource in tested:
        assert resource.order < invoke.order, f"verification could run before {resource.urn} is ready"


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_carry_the_evidence(runs, stack):
    out = runs[stack].outputs
    assert out[outputs.VERIFICATION]["passed"] is True
    assert out[outputs.VERIFICATION]["mode"] == stack
    assert out[outputs.CERTIFICATE_SAN] == {
        "sleep": "spiffe://cluster.local/ns/default/sa/sleep",
        "productpage": "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
    }
    assert out[outputs.ZTUNNEL_EVIDENCE]["client"]["entry"]["direction"] == "outbound"
    assert out[outputs.ZTUNNEL_EVIDENCE]["server"]["entry"]["direction"] == "inbound"


def test_never_runs_in_preview():
    run = run_program("l7", preview=True)
    assert verify_invokes(run) == []
    assert run.outputs[outputs.VERIFICATION]["passed"] is None
    assert "run on pulumi up" in run.outputs[outputs.VERIFICATION]["summary"]


def test_a_failed_check_fails_the_update_with_the_summary():
    with pytest.raises(Exception) as failed:
        run_program("l4-only", verify_report=fake_verify_report("l4-only", passed=False))
    assert ("Verification failed: 3 of 4 checks passed; failed: traffic: notsleep GET /productpage; see the report"
            in str(failed.value))


def test_a_failed_check_can_be_kept_as_evidence_only():
    run = run_program("l4-only", {"failOnVerificationError": "false"},
                      verify_report=fake_verify_report("l4-only", passed=False))
    assert run.outputs[outputs.VERIFICATION]["passed"] is False


def test_each_check_retries_as_long_as_the_stack_says():
    """verificationTimeout reaches the verify CLI, which gives every check that long before it fails."""
    run = run_program("l4-only", {"verificationTimeout": "20"})
    [invoke] = verify_invokes(run)
    assert " --timeout 20 --json " in invoke.args["command"]


def test_addon_checks_only_with_the_addons():
    run = run_program("l4-only", {"observability": "false"})
    [invoke] = verify_invokes(run)
    assert "--addons" not in invoke.args["command"]


def test_switched_off_it_runs_nothing_and_exports_nothing():
    run = run_program("l4-only", {"verify": "false"})
    assert verify_invokes(run) == []
    assert outputs.VERIFICATION not in run.outputs and outputs.CERTIFICATE_SAN not in run.outputs


def test_existing_cluster_is_reached_by_context(existing_run):
    [invoke] = verify_invokes(existing_run)
    # Off the lab's kind cluster Kiali asks for a login: the checks sign in.
    assert (" --context gke_proj_europe-west1_lab --addons --kiali-login --image-record .lab/image-digests.json "
            "--timeout 120 --json") in invoke.args["command"]
    assert "--kind-cluster" not in invoke.args["command"]
