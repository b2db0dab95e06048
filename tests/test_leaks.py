"""No credential reaches the state in plain text: the rule, and the program held to it under mocks."""

import json

import pytest

from lab.leaks import REDACTED, find_leaks, redact
from tests import realistic_secrets
from tests.harness import STACKS


def test_the_rule_finds_keys_kubeconfig_credentials_and_known_secrets():
    assert find_leaks("-----BEGIN RSA PRIVATE KEY-----\nabc") == ["text holding a PEM private key"]
    assert find_leaks("users:\n- user:\n    client-key-data: AAAA") == ["text holding a kubeconfig credential field"]
    assert find_leaks("token: eyJhbGciOiJSUzI1NiIsImtpZCI6") != []
    assert find_leaks("the passphrase is hunter2-long", ["hunter2-long"]) == ["a known secret (12 characters)"]
    assert find_leaks("nothing here", [""]) == []


@pytest.mark.parametrize("name", list(realistic_secrets.SAMPLES))
def test_the_rule_finds_every_shape_of_real_credential_and_redacts_only_the_secret(name):
    sample = realistic_secrets.SAMPLES[name]
    assert find_leaks(sample) != [], name
    redacted = redact(sample)
    realistic_secrets.assert_clean(redacted)
    assert REDACTED in redacted


def test_redaction_keeps_what_tells_the_user_where_the_secret_was():
    assert redact("HTTP_PROXY=http://lab:pr0xy@proxy.corp:3128") == "HTTP_PROXY=http://lab:REDACTED@proxy.corp:3128"
    assert redact("Authorization: Bearer abcdefgh12345678") == "Authorization: Bearer REDACTED"
    assert redact("    token: abc123xyz\n") == "    token: REDACTED\n"
    assert redact('{"password": "x y"}') == '{"password": "REDACTED"}'
    kubeconfig = redact(realistic_secrets.KUBECONFIG)
    assert f"certificate-authority-data: {realistic_secrets.CERT_DATA}" in kubeconfig  # public: kept
    assert "client-key-data: REDACTED" in kubeconfig and "username: admin" in kubeconfig
    assert redact("-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----") == (
        "-----BEGIN EC PRIVATE KEY-----REDACTED-----END EC PRIVATE KEY-----")


def test_a_key_cut_short_inside_json_is_redacted_and_the_json_still_parses():
    """A report's `observed` text is truncated: the redaction must stop at the string's end, not the document's."""
    text = json.dumps({"observed": realistic_secrets.PEM_KEY[:80], "passed": False})
    assert json.loads(redact(text)) == {"observed": "-----BEGIN EC PRIVATE KEY-----REDACTED", "passed": False}


def test_what_is_not_a_credential_is_left_alone():
    for text in ("a certificate: -----BEGIN CERTIFICATE-----", f"certificate-authority-data: "
                 f"{realistic_secrets.CERT_DATA}", "basic authentication, bearer tokens", "tokenFile: /var/run/x",
                 "name: istio-token", "serviceAccountToken: {path: token}", "password: null", "token: ~",
                 "image: docker.io/istio/ztunnel:1.31.1@sha256:" + "a" * 64, "https://blob.istio.io/charts",
                 '"auth": {"strategy": "anonymous"}', "ssh://git@github.com/x"):
        assert find_leaks(text) == [], text
        assert redact(text) == text


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


def test_the_rule_knows_command_lines_environments_registry_tokens_and_at_signs_in_passwords():
    cases = {
        "kubectl --token=s3cr3t-value get pods": "kubectl --token=REDACTED get pods",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG": "AWS_SECRET_ACCESS_KEY=REDACTED",
        '{"IdentityToken": "abc.def"}': '{"IdentityToken": "REDACTED"}',
        "HTTP_PROXY=http://lab:p@ss@proxy.corp:3128": "HTTP_PROXY=http://lab:REDACTED@proxy.corp:3128",
    }
    for text, redacted in cases.items():
        assert find_leaks(text), text
        assert redact(text) == redacted


def test_prose_about_tokens_is_not_a_credential():
    """The dashboard's own hint: a `token:` in a sentence is not a kubeconfig field."""
    for text in ("Kiali asks for a token: run the command below", "PULUMI_CONFIG_PASSPHRASE_FILE=/home/me/.lab/p",
                 "tokenFile: /var/run/secrets/token", "istio-token projected volume"):
        assert find_leaks(text) == [] and redact(text) == text, text


def test_the_rule_knows_pod_environments_wrapped_base64_kubectl_json_curl_users_and_token_headers():
    cases = {
        "    - name: DB_PASSWORD\n      value: hunter2-x\n": "    - name: DB_PASSWORD\n      value: REDACTED\n",
        '{"name": "API_TOKEN", "value": "t0k-en"}': '{"name": "API_TOKEN", "value": "REDACTED"}',
        # The same env entry JSON-escaped inside a state file.
        '"env:\\n- name: REDIS_PASSWORD\\n  value: \'r3dis\'\\n"':
            '"env:\\n- name: REDIS_PASSWORD\\n  value: \'REDACTED\'\\n"',
        '{"refresh-token": "1//abc"}': '{"refresh-token": "REDACTED"}',
        "curl -u admin:pa55 https://x.corp": "curl -u admin:REDACTED https://x.corp",
        "curl -sSfu admin:pa55 https://x.corp": "curl -sSfu admin:REDACTED https://x.corp",
        "curl --user=admin:pa55 https://x.corp": "curl --user=admin:REDACTED https://x.corp",
        "curl --proxy-user lab:pa55 -x http://proxy:3128 https://x.corp":
            "curl --proxy-user lab:REDACTED -x http://proxy:3128 https://x.corp",
        "X-Auth-Token: gAAAAAB-abc": "X-Auth-Token: REDACTED",
        "curl -H 'x-vault-token: hvs.CAES' https://vault": "curl -H 'x-vault-token: REDACTED' https://vault",
    }
    for text, redacted in cases.items():
        assert find_leaks(text), text
        assert redact(text) == redacted


def test_a_wrapped_base64_key_goes_whole_and_what_follows_it_stays():
    wrapped = realistic_secrets.WRAPPED_KEY_DATA
    assert len(wrapped.splitlines()) > 2 and all(len(line) == 76 for line in wrapped.splitlines()[:-1])
    text = f"client.key.b64:\n{wrapped}\nkind: Secret\n    token: abc123xyz\n"
    assert redact(text) == "client.key.b64:\nREDACTED\nkind: Secret\n    token: REDACTED\n"
    escaped = json.dumps({"data": f"{wrapped}\n", "next": "done"})
    assert json.loads(redact(escaped)) == {"data": "REDACTED\n", "next": "done"}
    # A certificate wrapped the same way is public.
    certificate = "\n".join(realistic_secrets.CERT_DATA[i:i + 76] for i in range(0, 200, 76))
    assert find_leaks(certificate) == []


def test_the_lab_own_outputs_with_these_words_are_not_credentials():
    """Istio's and Kiali's environments, the probes' curl lines and Envoy's headers carry no secret."""
    for text in ("    - name: JWT_POLICY\n      value: third-party-jwt\n",
                 "    - name: PILOT_ENABLE_AMBIENT\n      value: \"true\"\n",
                 "    - name: ISTIO_META_CLUSTER_ID\n      value: Kubernetes\n",
                 '{"name": "CA_TRUSTED_NODE_ACCOUNTS", "value": "istio-system/ztunnel"}',
                 "- name: TOKEN_AUDIENCE\n  value: istio-ca\n",
                 "curl -sS --local-port 41001 -H 'x-lab-probe: 41001' http://productpage:9080/productpage",
                 "curl -s -o /dev/null -w '%{http_code}' http://details:9080/details/0",
                 "docker run -u 1000:1000 busybox", "x-envoy-upstream-service-time: 12",
                 "kubectl get pods -l gateway.networking.k8s.io/gateway-name=bookinfo-gateway",
                 "serviceAccountToken:\n  audience: istio-ca\n"):
        assert find_leaks(text) == [] and redact(text) == text, text
