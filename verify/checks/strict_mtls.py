"""STRICT mTLS: a plaintext request from outside the mesh to details is refused, and refused because of STRICT.

A refusal alone proves little: ztunnel's plaintext inbound path drops the socket on any failure, so a details pod
that did not listen, or a policy that refused everyone, would look the same to the client. Each attempt therefore
shows three things at once:

1. A positive control: sleep, in the mesh, gets a 2xx from the same details path, so details is up and answers.
2. outside-client, outside the mesh, sends the same request in plaintext from a port drawn for this probe, and the
   connection is closed (curl exit 56 or 52), with no HTTP response.
3. The ztunnel on details' node logs that very connection (plaintext arrives without a tunnel, so `src.addr` is the
   client's own socket and carries the probe's port) as refused by the DENY policy istiod derives from STRICT: the
   line's error ends ``explicitly denied by: istio-system/istio_converted_static_strict`` (istio/ztunnel
   src/proxy/inbound_passthrough.rs checks the policies before it connects to the app; src/proxy.rs words it).

ztunnel checks every DENY policy before any ALLOW policy (istio/ztunnel src/state.rs, assert_rbac), and an ALLOW policy
never names itself in a refusal (a connection that no ALLOW policy matches is logged as ``allow policies exist, but
none allowed``): wherever STRICT applies, its DENY refuses plaintext first and is the policy named, productpage with its
L4 ALLOW policy included. details is the target because no other policy applies to it at all, so nothing but STRICT
could refuse the plaintext there.

A namespace-scoped STRICT PeerAuthentication (STRICT over the lab's namespaces only) converts to the very same
policy name as a mesh-wide one (see `STRICT_POLICY`), so this check holds on either.
"""

from __future__ import annotations

import math

from lab import catalog
from verify.checks.base import (
    EMPTY_REPLY,
    LOG_WINDOW_MARGIN_S,
    OK,
    RESET,
    STRICT_CHECK,
    STRICT_POLICY,
    CheckContext,
    Observation,
    app_selector,
    check_result,
    one_running_pod,
    poll,
)
from verify.checks.traffic import send_curl, send_probe
from verify.checks.ztunnel_logs import lines_from_port, only_line, read_node_log, ztunnels_on
from verify.evidence import AccessLogEntry
from verify.report import CheckResult

# How ztunnel words a refusal by a DENY policy (src/proxy.rs: AuthorizationRejectionError::ExplicitlyDenied).
STRICT_REFUSAL = f"explicitly denied by: {STRICT_POLICY}"


def details_url(namespace: str, *, from_outside: bool) -> str:
    # Inside the namespace the short name resolves; from outside only the full service name does.
    host = catalog.STRICT_PROBE_SERVICE
    if from_outside:
        host = f"{host}.{namespace}.svc.cluster.local"
    return f"http://{host}:{catalog.BOOKINFO_PORT}{catalog.STRICT_PROBE_PATH}"


def assess_refusal(line: AccessLogEntry) -> str | None:
    """Why `line` does not show a plaintext connection refused by STRICT mTLS; None when it does."""
    if line.mtls:
        return f"ztunnel logged the probe with identities ({line.src_identity}), so it was not plaintext"
    if not line.error:
        return "ztunnel logged the probe's connection as completed, not refused"
    if not line.error.endswith(STRICT_REFUSAL):
        return f"ztunnel refused the probe with {line.error!r}, not by {STRICT_POLICY}"
    return None


def check_strict_mtls(ctx: CheckContext) -> CheckResult:
    """sleep gets details' page; outside-client's plaintext request for it is refused; ztunnel says STRICT did it."""
    started = ctx.clock()
    service = catalog.STRICT_PROBE_SERVICE

    def probe() -> Observation:
        kube = ctx.cluster
        details = one_running_pod(kube, ctx.namespace, app_selector(service))
        ztunnels = ztunnels_on(ctx, kube.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL), details.node)
        commands = [kube.command(["get", "pods", "-n", ctx.namespace, "-l", app_selector(service), "-o", "json"]),
                    kube.command(["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", catalog.ZTUNNEL_POD_LABEL,
                                  "-o", "json"])]
        evidence = {"details": details.to_dict(), "ztunnel_pod": ztunnels[0]}

        control, control_command = send_curl(ctx, catalog.SLEEP, ctx.namespace, "GET",
                                             details_url(ctx.namespace, from_outside=False))
        commands.append(control_command)
        evidence["control"] = control.to_dict()
        if control.kind != OK:
            return Observation(False, f"positive control failed: sleep got {control.detail} from {service}",
                               evidence, commands)

        probe_started = ctx.clock()
        sent = send_probe(ctx, catalog.OUTSIDE_CLIENT, catalog.OUTSIDE_NAMESPACE, "GET",
                          details_url(ctx.namespace, from_outside=True))
        commands.append(sent.command)
        evidence["probe"] = sent.to_dict()
        if sent.outcome.kind not in (RESET, EMPTY_REPLY):
            return Observation(False, f"{catalog.OUTSIDE_CLIENT}'s plaintext request was not refused: "
                                      f"{sent.outcome.detail}", evidence, commands)

        since_s = math.ceil(ctx.clock() - probe_started) + LOG_WINDOW_MARGIN_S
        log = read_node_log(ctx, ztunnels, since_s)
        commands += log.commands
        line, missing = only_line(
            lines_from_port(log.entries, "inbound", details.name, sent.local_port),
            f"inbound line from port {sent.local_port} to {details.name} on {' or '.join(log.pods)}")
        ztunnel = evidence["ztunnel_pod"] = log.pod_of(line)
        evidence["entry"] = line.to_dict() if line else None
        problem = missing or (assess_refusal(line) if line else None)
        if problem:
            return Observation(False, f"{sent.outcome.detail}, but {problem}", evidence, commands)
        return Observation(
            True,
            f"sleep got {control.detail}; {catalog.OUTSIDE_CLIENT} from port {sent.local_port}: {sent.outcome.detail}; "
            f"{ztunnel} ({details.node}): {line.error}",
            evidence,
            commands,
        )

    expected = (
        f"sleep GET {catalog.STRICT_PROBE_PATH} on {service}: 2xx (positive control); {catalog.OUTSIDE_CLIENT}'s "
        f"plaintext GET of the same path: reset or empty reply (curl exit 56 or 52); and the ztunnel on {service}'s "
        f"node logs that connection (its client port in src.addr) as {STRICT_REFUSAL}"
    )
    return check_result(ctx, STRICT_CHECK, expected, poll(ctx, probe),
                        "a positive control and a plaintext refusal that ztunnel attributes to STRICT", started)
