"""mTLS certificates: the workload certificate the ztunnel on the workload's own node holds proves its identity."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from lab import catalog
from verify.checks.base import (
    CheckContext,
    Observation,
    app_selector,
    certificate_check_name,
    check_result,
    one_running_pod,
    poll,
    ztunnel_for_node,
)
from verify.evidence import (
    EvidenceError,
    WorkloadCertificate,
    certificates_from_config_dump,
    find_certificate,
)
from verify.report import CheckResult

# --- c. mTLS certificate -----------------------------------------------------------------------------------------

CERTIFICATE_WORKLOADS = (catalog.SLEEP, catalog.PRODUCTPAGE)


def assess_certificate(certificate: WorkloadCertificate, expected_identity: str, now: datetime) -> list[str]:
    """Why `certificate` does not prove `expected_identity`; empty when it does.

    It does when ztunnel reports it Available, the leaf's only URI SAN is the expected SPIFFE ID, the chain verifies
    up to a root ztunnel holds, and `now` is inside the leaf's validity window.
    """
    problems = []
    if not certificate.available:
        problems.append(f"state is {certificate.state!r}")
    if list(certificate.san_uris) != [expected_identity]:
        problems.append(f"URI SANs are {list(certificate.san_uris)}, not [{expected_identity!r}]")
    if certificate.chain_length and not certificate.chains_to_root:
        problems.append(f"chain does not verify to a root: {certificate.chain_problem}")
    if certificate.chain_length and not certificate.valid_at(now):
        problems.append(f"not valid now ({certificate.not_before} to {certificate.not_after})")
    return problems


def check_certificate(ctx: CheckContext, app: str) -> CheckResult:
    """Read the workload's certificate from the ztunnel on its node and check it proves the workload's identity."""
    started = ctx.clock()

    def probe() -> Observation:
        commands = [ctx.cluster.command(["get", "pods", "-n", ctx.namespace, "-l", app_selector(app), "-o", "json"])]
        workload = one_running_pod(ctx.cluster, ctx.namespace, app_selector(app))
        expected = catalog.spiffe_id(ctx.namespace, workload.service_account)
        evidence: dict[str, Any] = {"workload": workload.to_dict(), "expected_identity": expected}
        commands.append(ctx.cluster.command(
            ["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", catalog.ZTUNNEL_POD_LABEL, "-o", "json"]))
        ztunnel = ztunnel_for_node(ctx.cluster.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL),
                                   workload.node or "")
        if ztunnel is None:
            return Observation(False, f"no running ztunnel pod on node {workload.node}", evidence, commands)
        evidence["ztunnel_pod"] = ztunnel
        response = ctx.cluster.http_get(catalog.ISTIO_NAMESPACE, ztunnel, catalog.ZTUNNEL_ADMIN_PORT, "/config_dump")
        commands.extend(response.commands)
        if response.status != 200:
            return Observation(False, f"ztunnel {ztunnel} answered /config_dump with HTTP {response.status}",
                               evidence, commands)
        try:
            dump = json.loads(response.body)
        except ValueError as error:
            raise EvidenceError(f"ztunnel {ztunnel}'s /config_dump is not JSON ({error}).") from error
        certificates = certificates_from_config_dump(dump)
        certificate = find_certificate(certificates, expected)
        if certificate is None:
            held = ", ".join(item.identity for item in certificates) or "none"
            return Observation(False, f"ztunnel {ztunnel} on {workload.node} holds no certificate for {expected} "
                                      f"(it holds: {held})", evidence, commands)
        evidence["certificate"] = certificate.to_dict()
        problems = assess_certificate(certificate, expected, ctx.now())
        if problems:
            return Observation(False, "; ".join(problems), evidence, commands)
        return Observation(
            True,
            f"SAN {certificate.san_uris[0]}, issuer {certificate.issuer}, serial {certificate.serial}, valid "
            f"{certificate.not_before:%Y-%m-%d %H:%M} to {certificate.not_after:%Y-%m-%d %H:%M} UTC, chains to root "
            f"(from {ztunnel} on {workload.node})",
            evidence,
            commands,
        )

    expected_text = (
        f"the {app} ServiceAccount's SPIFFE ID as the leaf's URI SAN, state Available, valid now, chaining to the "
        "root held by the ztunnel on the same node"
    )
    return check_result(ctx, certificate_check_name(app), expected_text, poll(ctx, probe),
                   f"an Available certificate for {app} in its node's ztunnel", started)
