"""certificates_from_config_dump against config dumps built from certificates minted in the tests."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from verify.checks.certificates import assess_certificate
from verify.evidence import EvidenceError, certificates_from_config_dump, find_certificate


def only(dump):
    certificates = certificates_from_config_dump(dump)
    assert len(certificates) == 1
    return certificates[0]


def test_leaf_signed_by_root_base64_pem(fx, root_ca, workload_certs):
    leaf = workload_certs[fx.SLEEP_ID]
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root_ca.certificate])]})
    assert cert.identity == fx.SLEEP_ID
    assert cert.state == "Available" and cert.available
    assert cert.san_uris == (fx.SLEEP_ID,)
    assert cert.issuer == "O=cluster.local"
    assert cert.serial == "5a:3f:00:c1:d2"
    assert cert.not_before == fx.NOW - dt.timedelta(hours=1)
    assert cert.not_after == fx.NOW + dt.timedelta(hours=23)
    assert cert.not_before.tzinfo is not None
    assert cert.chains_to_root and cert.chain_problem is None
    assert (cert.chain_length, cert.root_count) == (1, 1)
    assert cert.valid_at(fx.NOW)
    assert assess_certificate(cert, fx.SLEEP_ID, fx.NOW) == []


def test_raw_pem_from_older_ztunnel_reads_the_same(fx, root_ca, workload_certs):
    leaf = workload_certs[fx.SLEEP_ID]
    encoded = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root_ca.certificate])]})
    raw = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root_ca.certificate], raw_pem=True)]})
    assert raw == encoded


def test_intermediate_chain_verifies(fx, root_ca):
    intermediate = fx.mint_ca(common_name="istio-intermediate", signer=root_ca)
    leaf = fx.mint_leaf(intermediate, [fx.PRODUCTPAGE_ID])
    cert = only({"certificates": [
        fx.certificate_entry(fx.PRODUCTPAGE_ID, [leaf, intermediate.certificate], [root_ca.certificate])]})
    assert cert.chains_to_root and cert.chain_length == 2
    assert cert.issuer == "CN=istio-intermediate,O=cluster.local"


def test_intermediate_missing_from_chain_does_not_verify(fx, root_ca):
    intermediate = fx.mint_ca(common_name="istio-intermediate", signer=root_ca)
    leaf = fx.mint_leaf(intermediate, [fx.PRODUCTPAGE_ID])
    cert = only({"certificates": [fx.certificate_entry(fx.PRODUCTPAGE_ID, [leaf], [root_ca.certificate])]})
    assert not cert.chains_to_root
    assert "not signed by any root" in cert.chain_problem


def test_wrong_root_does_not_chain(fx, workload_certs):
    other_root = fx.mint_ca()  # same name O=cluster.local, different key: names alone would pass
    cert = only({"certificates": [
        fx.certificate_entry(fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]], [other_root.certificate])]})
    assert not cert.chains_to_root
    problems = assess_certificate(cert, fx.SLEEP_ID, fx.NOW)
    assert any("does not verify to a root" in problem for problem in problems)


def test_one_matching_root_among_several_is_enough(fx, root_ca, workload_certs):
    other_root = fx.mint_ca(organization="other.example")
    cert = only({"certificates": [fx.certificate_entry(
        fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]], [other_root.certificate, root_ca.certificate])]})
    assert cert.chains_to_root and cert.root_count == 2


def test_no_roots_means_no_chain(fx, workload_certs):
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]], [])]})
    assert not cert.chains_to_root and "no root" in cert.chain_problem


def test_rsa_root_and_leaf(fx):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "cluster.local")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(fx.NOW - dt.timedelta(days=1))
            .not_valid_after(fx.NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    leaf = fx.mint_leaf(fx.Issuer(root, key), [fx.SLEEP_ID])
    assert only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root])]}).chains_to_root


def test_expired_certificate_is_reported_not_valid(fx, root_ca):
    leaf = fx.mint_leaf(root_ca, [fx.SLEEP_ID], not_before=fx.NOW - dt.timedelta(days=2),
                        not_after=fx.NOW - dt.timedelta(days=1))
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root_ca.certificate])]})
    assert cert.chains_to_root  # the signature is fine; the date is not
    assert not cert.valid_at(fx.NOW)
    assert any(problem.startswith("not valid now") for problem in assess_certificate(cert, fx.SLEEP_ID, fx.NOW))


def test_san_of_another_workload_is_rejected(fx, root_ca):
    leaf = fx.mint_leaf(root_ca, [fx.NOTSLEEP_ID])
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [leaf], [root_ca.certificate])]})
    assert cert.san_uris == (fx.NOTSLEEP_ID,)
    assert any("URI SANs" in problem for problem in assess_certificate(cert, fx.SLEEP_ID, fx.NOW))


def test_leaf_without_san(fx, root_ca):
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [fx.mint_leaf(root_ca, [])],
                                                       [root_ca.certificate])]})
    assert cert.san_uris == ()


@pytest.mark.parametrize("state", ["Initializing", "Unavailable: failed to fetch certificate: deadline exceeded"])
def test_entries_without_a_chain_are_kept_with_their_state(fx, state):
    cert = only({"certificates": [{"identity": fx.SLEEP_ID, "state": state, "certChain": [], "rootCerts": []}]})
    assert cert.state == state and not cert.available
    assert cert.san_uris == () and cert.serial is None and cert.not_after is None and not cert.chains_to_root
    assert f"state is {state!r}" in assess_certificate(cert, fx.SLEEP_ID, fx.NOW)


def test_several_certificates_and_lookup_by_identity(fx, root_ca, workload_certs):
    dump = {"workloads": {"ignored": True}, "certificates": [
        fx.certificate_entry(fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]], [root_ca.certificate]),
        fx.certificate_entry(fx.PRODUCTPAGE_ID, [workload_certs[fx.PRODUCTPAGE_ID]], [root_ca.certificate]),
    ]}
    certificates = certificates_from_config_dump(dump)
    assert find_certificate(certificates, fx.PRODUCTPAGE_ID).san_uris == (fx.PRODUCTPAGE_ID,)
    assert find_certificate(certificates, fx.NOTSLEEP_ID) is None


def test_to_dict_is_json_ready(fx, root_ca, workload_certs):
    cert = only({"certificates": [fx.certificate_entry(fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]],
                                                       [root_ca.certificate])]})
    data = cert.to_dict()
    assert data["san_uris"] == [fx.SLEEP_ID]
    assert data["not_after"] == "2026-10-03T08:30:00+00:00"
    assert data["chains_to_root"] is True


@pytest.mark.parametrize(
    ("dump", "message"),
    [
        ([], "must be a JSON object, not list"),
        ({}, "has no 'certificates' list"),
        ({"certificates": {"a": 1}}, "has no 'certificates' list"),
        ({"certificates": ["x"]}, "certificates[0] is not an object"),
        ({"certificates": [{"state": "Available"}]}, "certificates[0] has no 'identity' string"),
    ],
)
def test_malformed_dumps_raise_a_clear_error(dump, message):
    with pytest.raises(EvidenceError) as raised:
        certificates_from_config_dump(dump)
    assert message in str(raised.value)


def test_bad_base64_names_the_identity(fx):
    entry = {"identity": fx.SLEEP_ID, "state": "Available", "certChain": [{"pem": "not base64 at all!"}],
             "rootCerts": []}
    with pytest.raises(EvidenceError) as raised:
        certificates_from_config_dump({"certificates": [entry]})
    message = str(raised.value)
    assert f"certChain[0] for {fx.SLEEP_ID}" in message and "neither PEM text nor base64" in message


def test_base64_of_something_that_is_not_a_certificate(fx, root_ca):
    junk = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").decode()
    entry = {"identity": fx.PRODUCTPAGE_ID, "state": "Available", "certChain": [{"pem": junk}],
             "rootCerts": [fx.cert_dump(root_ca.certificate)]}
    with pytest.raises(EvidenceError) as raised:
        certificates_from_config_dump({"certificates": [entry]})
    assert f"certChain[0] for {fx.PRODUCTPAGE_ID} does not hold a valid PEM certificate" in str(raised.value)


def test_corrupted_root_names_the_identity(fx, workload_certs):
    entry = fx.certificate_entry(fx.SLEEP_ID, [workload_certs[fx.SLEEP_ID]], [])
    entry["rootCerts"] = [{"pem": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----"}]
    with pytest.raises(EvidenceError) as raised:
        certificates_from_config_dump({"certificates": [entry]})
    assert f"rootCerts[0] for {fx.SLEEP_ID}" in str(raised.value)


def test_missing_pem_field(fx):
    entry = {"identity": fx.SLEEP_ID, "state": "Available", "certChain": [{"serialNumber": "1"}], "rootCerts": []}
    with pytest.raises(EvidenceError, match="has no 'pem' string"):
        certificates_from_config_dump({"certificates": [entry]})
