"""A failed lifecycle command stops the update with the lab's own sentence, not a traceback."""

import pulumi
import pytest

from components.failures import last_sentence
from tests.harness import run_program

GONE = ("error: kind cluster 'ambient-l4-only' is recorded in the stack but no longer exists; run `pulumi destroy` "
        "and then `pulumi up` to build it again.")


def test_the_sentence_is_found_in_pulumi_commands_failure_text():
    text = f'exit status 1: running "venv/bin/python -m lab.kind_cluster kubeconfig --name x":\n{GONE}\n'
    assert last_sentence(text) == GONE.removeprefix("error: ")
    assert last_sentence("progress\npython -m verify: The cluster does not answer; start it.\n") == (
        "The cluster does not answer; start it.")
    assert last_sentence("exit status 137:\nKilled\n") == "Killed"
    assert last_sentence("") == "it printed nothing"


def test_a_vanished_kind_cluster_is_a_sentence():
    with pytest.raises(pulumi.RunError) as failed:
        run_program("l4-only", failing_command=("lab.kind_cluster kubeconfig", GONE))
    assert str(failed.value) == "Reading the kind cluster's kubeconfig failed: " + GONE.removeprefix("error: ")


def test_an_unreachable_cluster_during_verification_is_a_sentence():
    with pytest.raises(pulumi.RunError) as failed:
        run_program("l7", failing_command=(" -m verify ", "checking...\npython -m verify: The cluster does not answer."))
    assert str(failed.value) == "The verification failed: The cluster does not answer."


def test_a_verification_that_printed_no_report_is_a_sentence():
    with pytest.raises(pulumi.RunError) as failed:
        run_program("l7", verify_report="not json")
    assert "The verification printed no report" in str(failed.value)
