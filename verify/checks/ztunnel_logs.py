"""ztunnel log evidence: one request from sleep to productpage, found in both ztunnels' access logs."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from lab import catalog
from verify.checks.base import (
    GATEWAY_NAME_LABEL,
    LOG_EVIDENCE_CHECK,
    LOG_WINDOW_MARGIN_S,
    CheckContext,
    NotFound,
    Observation,
    app_selector,
    check_result,
    one_running_pod,
    pod_name,
    pod_service_account,
    poll,
    running_pods,
    ztunnel_for_node,
)
from verify.checks.traffic import TRAFFIC_CASES, send_curl
from verify.evidence import (
    AccessLogEntry,
    parse_ztunnel_access_log,
)
from verify.report import CheckResult

# --- d. ztunnel log evidence -------------------------------------------------------------------------------------


def select_outbound(
    entries: Iterable[AccessLogEntry], client_pod: str, destination_pods: Collection[str]
) -> AccessLogEntry | None:
    """The latest ``outbound`` line from `client_pod` to one of `destination_pods` (a server or its waypoint)."""
    found = None
    for entry in entries:
        if entry.direction == "outbound" and entry.src_workload == client_pod and (
                entry.dst_workload in destination_pods):
            found = entry
    return found


def select_inbound(
    entries: Iterable[AccessLogEntry], server_pod: str, source_pods: Collection[str]
) -> AccessLogEntry | None:
    """The latest ``inbound`` line to `server_pod` from one of `source_pods` (the client, or the waypoint)."""
    found = None
    for entry in entries:
        if entry.direction == "inbound" and entry.dst_workload == server_pod and entry.src_workload in source_pods:
            found = entry
    return found


def assess_log_pair(
    outbound: AccessLogEntry | None,
    inbound: AccessLogEntry | None,
    *,
    client_identity: str,
    server_identity: str,
    waypoint_identity: str | None,
) -> list[str]:
    """Why the two ztunnel lines do not prove an mTLS request from client to server; empty when they do.

    Without a waypoint, both lines name the client and the server identities. With one (`waypoint_identity`), the
    client's ztunnel tunnels to the waypoint, and the server's ztunnel sees the waypoint as the source.
    """
    problems = []
    hop_identity = waypoint_identity or server_identity
    source_identity = waypoint_identity or client_identity
    if outbound is None:
        problems.append("no outbound line on the client's ztunnel")
    else:
        if outbound.error:
            problems.append(f"outbound line has error {outbound.error!r}")
        if outbound.src_identity != client_identity:
            problems.append(f"outbound src.identity is {outbound.src_identity}, not {client_identity}")
        if outbound.dst_identity != hop_identity:
            problems.append(f"outbound dst.identity is {outbound.dst_identity}, not {hop_identity}")
    if inbound is None:
        problems.append("no inbound line on the server's ztunnel")
    else:
        if inbound.error:
            problems.append(f"inbound line has error {inbound.error!r}")
        if inbound.src_identity != source_identity:
            problems.append(f"inbound src.identity is {inbound.src_identity}, not {source_identity}")
        if inbound.dst_identity != server_identity:
            problems.append(f"inbound dst.identity is {inbound.dst_identity}, not {server_identity}")
    return problems


def check_ztunnel_logs(ctx: CheckContext) -> CheckResult:
    """Send sleep -> productpage and find the request in both ztunnels' access logs, each on its own node."""
    started = ctx.clock()
    first_request_at: list[float] = []
    waypoint_selector = f"{GATEWAY_NAME_LABEL}={catalog.WAYPOINT_NAME}"
    client_name, server_name = catalog.SLEEP, catalog.PRODUCTPAGE

    def probe() -> Observation:
        kube = ctx.cluster
        client = one_running_pod(kube, ctx.namespace, app_selector(client_name))
        server = one_running_pod(kube, ctx.namespace, app_selector(server_name))
        commands = [kube.command(["get", "pods", "-n", ctx.namespace, "-l", app_selector(name), "-o", "json"])
                    for name in (client_name, server_name)]
        waypoint_pods: list[str] = []
        waypoint_identity = None
        if ctx.facts.waypoint_in_path:
            commands.append(kube.command(["get", "pods", "-n", ctx.namespace, "-l", waypoint_selector, "-o", "json"]))
            waypoints = running_pods(kube.pods(ctx.namespace, waypoint_selector))
            if not waypoints:
                raise NotFound(f"no running waypoint pod labelled {waypoint_selector} in {ctx.namespace}")
            waypoint_pods = [pod_name(pod) for pod in waypoints]
            waypoint_identity = catalog.spiffe_id(ctx.namespace, pod_service_account(waypoints[0]))
        ztunnels = kube.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL)
        commands.append(kube.command(
            ["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", catalog.ZTUNNEL_POD_LABEL, "-o", "json"]))
        client_ztunnel = ztunnel_for_node(ztunnels, client.node or "")
        server_ztunnel = ztunnel_for_node(ztunnels, server.node or "")
        if client_ztunnel is None or server_ztunnel is None:
            missing = client.node if client_ztunnel is None else server.node
            raise NotFound(f"no running ztunnel pod on node {missing}")

        if not first_request_at:
            first_request_at.append(ctx.clock())
        request, request_command = send_curl(ctx, client_name, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace))
        commands.append(request_command)
        since_s = math.ceil(ctx.clock() - first_request_at[0]) + LOG_WINDOW_MARGIN_S
        client_log = kube.logs(catalog.ISTIO_NAMESPACE, client_ztunnel, since_s=since_s)
        server_log = client_log if server_ztunnel == client_ztunnel else kube.logs(
            catalog.ISTIO_NAMESPACE, server_ztunnel, since_s=since_s)
        commands += [kube.command(["logs", "-n", catalog.ISTIO_NAMESPACE, pod, f"--since={since_s}s"])
                     for pod in dict.fromkeys((client_ztunnel, server_ztunnel))]

        outbound = select_outbound(parse_ztunnel_access_log(client_log), client.name, waypoint_pods or [server.name])
        inbound = select_inbound(parse_ztunnel_access_log(server_log), server.name, waypoint_pods or [client.name])
        evidence = {
            "request": request.to_dict(),
            "waypoint_pods": waypoint_pods,
            "client": {**client.to_dict(), "ztunnel_pod": client_ztunnel,
                       "entry": outbound.to_dict() if outbound else None},
            "server": {**server.to_dict(), "ztunnel_pod": server_ztunnel,
                       "entry": inbound.to_dict() if inbound else None},
        }
        problems = assess_log_pair(
            outbound, inbound,
            client_identity=catalog.spiffe_id(ctx.namespace, client.service_account),
            server_identity=catalog.spiffe_id(ctx.namespace, server.service_account),
            waypoint_identity=waypoint_identity,
        )
        if problems or outbound is None or inbound is None:
            return Observation(False, "; ".join(problems), evidence, commands)
        return Observation(
            True,
            f"outbound on {client_ztunnel} ({client.node}): {outbound.src_identity} -> {outbound.dst_identity} "
            f"[{outbound.dst_workload}]; inbound on {server_ztunnel} ({server.node}): {inbound.src_identity} -> "
            f"{inbound.dst_identity}",
            evidence,
            commands,
        )

    if ctx.facts.waypoint_in_path:
        waypoint = f"waypoint {catalog.WAYPOINT_NAME}"
        hops = f"{client_name} -> {waypoint}", f"{waypoint} -> {server_name}"
    else:
        hops = f"{client_name} -> {server_name}", f"{client_name} -> {server_name}"
    expected = (
        f"outbound line {hops[0]} on the ztunnel of {client_name}'s node and inbound line {hops[1]} on the ztunnel "
        f"of {server_name}'s node, both with the SPIFFE identities of those ServiceAccounts and no error"
    )
    return check_result(ctx, LOG_EVIDENCE_CHECK, expected, poll(ctx, probe),
                   "both access-log lines of a sleep -> productpage request", started)
