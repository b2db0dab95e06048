"""No credential reaches the state in plain text: the rule, and the program held to it under mocks."""

import json

import pytest

from lab.leaks import find_leaks
from tests.harness import STACKS


def test_the_rule_finds_keys_kubeconfig_credentials_and_known_secrets():
    assert find_leaks("-----BEGIN RSA PRIVATE KEY-----\nabc") == ["text matching '-----BEGIN [A-Z ]*PRIVATE KEY-----'"]
    assert find_leaks("users:\n- user:\n    client-key-data: AAAA") == ["text matching 'client-key-data\\\\s*:'"]
    assert find_leaks("token: eyJhbGciOiJSUzI1NiIsImtpZCI6") != []
    assert find_leaks("the passphrase is hunter2-long", ["hunter2-long"]) == ["a known secret (12 characters)"]
    assert find_leaks("a certificate: -----BEGIN CERTIFICATE-----") == []
    assert find_leaks("nothing here", [""]) == []


@pytest.mark.parametrize("stack", STACKS)
def test_nothing_the_program_registers_in_plain_text_leaks(runs, stack):
    run = runs[stack]
    for resource in run.resources.values():
        plain = {k: v for k, v in resource.inputs.items() if k not in resource.secret_inputs}
        assert find_leaks(json.dumps(plain, default=str)) == [], resource.urn
    plain_outputs = {k: v for k, v in run.outputs.items() if k not in run.secret_outputs}
    assert find_leaks(json.dumps(plain_outputs, default=str)) == []
    # And the check is not vacuous: the kubeconfig the mocks hand over does carry a key, inside a secret.
    provider = run.named("pulumi:providers:kubernetes", "kind")
    assert find_leaks(provider.inputs["kubeconfig"]) and "kubeconfig" in provider.secret_inputs
