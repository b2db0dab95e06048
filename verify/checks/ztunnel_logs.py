"""ztunnel log evidence: one request from sleep to productpage, found in both ztunnels' access logs.

The lines must be those of the request the check sent, not the latest lines that look alike (the traffic checks
send the same request just before). What ties a line to one request, from ztunnel's source (`src/proxy/outbound.rs`,
`src/proxy/inbound.rs`, `src/proxy/metrics.rs`, `src/copy.rs`):

* The client side (``outbound``) logs the client's own socket in `src.addr`; the probe binds a port drawn for it
  alone (`verify.checks.traffic.send_probe`), so that line names the probe.
* The server side (``inbound``) logs in `src.addr` the HBONE connection between the two ztunnels, which is pooled and
  carries many requests, so its port says nothing. Its byte counts do: the client side counts as `bytes_sent` what
  the app wrote into the tunnel and as `bytes_recv` what came back, the server side counts as `bytes_recv` what left
  the tunnel for the app and as `bytes_sent` the app's answer. One connection's two lines mirror each other.
* Both lines close within the probe's time window and name the same identities.

Through a waypoint (l7) there is no such pair: the waypoint ends sleep's connection and opens its own to productpage,
rewrites the HTTP headers (so the byte counts differ) and keeps that connection for later requests. There the server
line is the waypoint's connection to productpage that was open while the probe ran.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta

from lab import catalog
from verify.checks.base import (
    CLOCK_TOLERANCE_S,
    GATEWAY_NAME_LABEL,
    LOG_EVIDENCE_CHECK,
    LOG_WINDOW_MARGIN_S,
    OK,
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
from verify.checks.traffic import TRAFFIC_CASES, send_probe
from verify.evidence import (
    AccessLogEntry,
    parse_ztunnel_access_log,
)
from verify.report import CheckResult

# productpage's gunicorn closes an idle keep-alive connection after 2 s (samples/bookinfo/src/productpage/Dockerfile,
# `--keep-alive 2`), and ztunnel logs a connection only when it closes: in l7 the waypoint's connection to productpage
# is logged about 2 s after its last request. Wait a little longer before reading the server's log.
WAYPOINT_UPSTREAM_CLOSE_S = 3.0
WAYPOINT_LOG_READS = 4  # reads of the same probe's logs, WAYPOINT_UPSTREAM_CLOSE_S apart, before a new probe

# --- d. ztunnel log evidence -------------------------------------------------------------------------------------


def port_of(address: str | None) -> int | None:
    """The port of an address as ztunnel logs it (``10.244.1.7:40312``, ``[fd00::7]:40312``), None without one."""
    _, colon, port = (address or "").rpartition(":")
    return int(port) if colon and port.isdigit() else None


def _time(entry: AccessLogEntry) -> datetime | None:
    try:
        return entry.time
    except ValueError:  # a JSON line without a readable time cannot be placed in a window
        return None


def closed_within(entry: AccessLogEntry, start: datetime, end: datetime) -> bool:
    """The line (written when its connection closed) falls between `start` and `end`, give or take the clock slack."""
    when = _time(entry)
    slack = timedelta(seconds=CLOCK_TOLERANCE_S)
    return when is not None and start - slack <= when <= end + slack


def open_during(entry: AccessLogEntry, start: datetime, end: datetime) -> bool:
    """The line's connection was open at some time between `start` and `end` (opened = closed - duration)."""
    closed = _time(entry)
    if closed is None:
        return False
    opened = closed - timedelta(milliseconds=entry.duration_ms or 0)
    slack = timedelta(seconds=CLOCK_TOLERANCE_S)
    return opened <= end + slack and closed >= start - slack


def lines_from_port(
    entries: Iterable[AccessLogEntry], direction: str, pod: str, local_port: int, start: datetime, end: datetime
) -> list[AccessLogEntry]:
    """The `direction` lines of `pod` (the source of an ``outbound`` line, the destination of an ``inbound`` one)
    whose client came from port `local_port` and that closed between `start` and `end`."""
    return [entry for entry in entries
            if entry.direction == direction
            and (entry.src_workload if direction == "outbound" else entry.dst_workload) == pod
            and port_of(entry.src_addr) == local_port and closed_within(entry, start, end)]


def probe_client_lines(
    entries: Iterable[AccessLogEntry], client_pod: str, local_port: int, start: datetime, end: datetime
) -> list[AccessLogEntry]:
    """The ``outbound`` lines of `client_pod` from port `local_port` that closed between `start` and `end`."""
    return lines_from_port(entries, "outbound", client_pod, local_port, start, end)


def mirrors(client_line: AccessLogEntry, server_line: AccessLogEntry) -> bool:
    """The two lines count the same bytes each way: what the client side sent, the server side received."""
    return (client_line.bytes_sent, client_line.bytes_recv) == (server_line.bytes_recv, server_line.bytes_sent)


def probe_server_lines(
    entries: Iterable[AccessLogEntry], client_line: AccessLogEntry, server_pod: str, start: datetime, end: datetime
) -> list[AccessLogEntry]:
    """The ``inbound`` lines to `server_pod` of the connection `client_line` logged: same source, same identities,
    mirrored byte counts, closed between `start` and `end`."""
    return [entry for entry in entries
            if entry.direction == "inbound" and entry.dst_workload == server_pod
            and entry.src_workload == client_line.src_workload
            and (entry.src_identity, entry.dst_identity) == (client_line.src_identity, client_line.dst_identity)
            and mirrors(client_line, entry) and closed_within(entry, start, end)]


def waypoint_server_lines(
    entries: Iterable[AccessLogEntry], server_pod: str, waypoint_pods: Collection[str], start: datetime,
    end: datetime
) -> list[AccessLogEntry]:
    """The ``inbound`` lines to `server_pod` from a waypoint pod whose connection was open between `start` and
    `end` (the waypoint's own connection to the server, which carried the probe onwards, and perhaps others)."""
    return [entry for entry in entries
            if entry.direction == "inbound" and entry.dst_workload == server_pod
            and entry.src_workload in waypoint_pods and open_during(entry, start, end)]


def only_line(candidates: Sequence[AccessLogEntry], what: str) -> tuple[AccessLogEntry | None, str | None]:
    """The one line of `candidates`, else None and why: none, or several that cannot be told apart."""
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, f"no {what}"
    return None, f"{len(candidates)} lines could be the {what}; cannot tell which"


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
    if outbound is not None:
        if outbound.error:
            problems.append(f"outbound line has error {outbound.error!r}")
        if outbound.src_identity != client_identity:
            problems.append(f"outbound src.identity is {outbound.src_identity}, not {client_identity}")
        if outbound.dst_identity != hop_identity:
            problems.append(f"outbound dst.identity is {outbound.dst_identity}, not {hop_identity}")
    if inbound is not None:
        if inbound.error:
            problems.append(f"inbound line has error {inbound.error!r}")
        if inbound.src_identity != source_identity:
            problems.append(f"inbound src.identity is {inbound.src_identity}, not {source_identity}")
        if inbound.dst_identity != server_identity:
            problems.append(f"inbound dst.identity is {inbound.dst_identity}, not {server_identity}")
    return problems


def check_ztunnel_logs(ctx: CheckContext) -> CheckResult:
    """Send sleep -> productpage and find that request in both ztunnels' access logs, each on its own node."""
    started = ctx.clock()
    waypoint_selector = f"{GATEWAY_NAME_LABEL}={catalog.WAYPOINT_NAME}"
    client_name, server_name = catalog.SLEEP, catalog.PRODUCTPAGE
    in_path = ctx.facts.waypoint_in_path

    def probe() -> Observation:
        kube = ctx.cluster
        client = one_running_pod(kube, ctx.namespace, app_selector(client_name))
        server = one_running_pod(kube, ctx.namespace, app_selector(server_name))
        commands = [kube.command(["get", "pods", "-n", ctx.namespace, "-l", app_selector(name), "-o", "json"])
                    for name in (client_name, server_name)]
        waypoint_pods: list[str] = []
        waypoint_identity = None
        if in_path:
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

        probe_started = ctx.clock()
        sent = send_probe(ctx, client_name, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace))
        commands.append(sent.command)
        evidence = {"probe": sent.to_dict(), "request": sent.outcome.to_dict(), "waypoint_pods": waypoint_pods,
                    "client": {**client.to_dict(), "ztunnel_pod": client_ztunnel, "entry": None},
                    "server": {**server.to_dict(), "ztunnel_pod": server_ztunnel, "entry": None}}
        if sent.outcome.kind != OK:
            return Observation(False, f"the probe request failed: {sent.outcome.detail}", evidence, commands)
        # In l7 the server side's line is written when the waypoint's pooled connection to productpage closes,
        # which other checks' requests can keep open for a while: read the logs again for this same probe (bounded)
        # rather than send a new probe, which would only start the wait over.
        for _ in range(WAYPOINT_LOG_READS if in_path else 1):
            if in_path:
                ctx.sleep(WAYPOINT_UPSTREAM_CLOSE_S)
            since_s = math.ceil(ctx.clock() - probe_started) + LOG_WINDOW_MARGIN_S
            client_log = kube.logs(catalog.ISTIO_NAMESPACE, client_ztunnel, since_s=since_s)
            server_log = client_log if server_ztunnel == client_ztunnel else kube.logs(
                catalog.ISTIO_NAMESPACE, server_ztunnel, since_s=since_s)
            read_at = ctx.now()
            if not in_path or waypoint_server_lines(parse_ztunnel_access_log(server_log), server.name, waypoint_pods,
                                                    sent.sent_at, sent.done_at):
                break
        commands += [kube.command(["logs", "-n", catalog.ISTIO_NAMESPACE, pod, f"--since={since_s}s"])
                     for pod in dict.fromkeys((client_ztunnel, server_ztunnel))]

        client_lines = probe_client_lines(parse_ztunnel_access_log(client_log), client.name, sent.local_port,
                                          sent.sent_at, read_at)
        outbound, missing_client = only_line(
            client_lines, f"outbound line from {client.name} port {sent.local_port} on the client's ztunnel")
        inbound, missing_server = None, None
        server_entries = parse_ztunnel_access_log(server_log)
        if in_path:
            # The waypoint may hold more than one connection to productpage; any open during the probe may have
            # carried it, and nothing in the log says which, so the first one stands for them.
            through_waypoint = waypoint_server_lines(server_entries, server.name, waypoint_pods, sent.sent_at,
                                                     sent.done_at)
            inbound = through_waypoint[0] if through_waypoint else None
            if inbound is None:
                missing_server = "no inbound line from the waypoint open during the probe on the server's ztunnel"
        elif outbound is not None:
            inbound, missing_server = only_line(
                probe_server_lines(server_entries, outbound, server.name, sent.sent_at, read_at),
                f"inbound line mirroring the probe's bytes (sent {outbound.bytes_sent}, received "
                f"{outbound.bytes_recv}) on the server's ztunnel")
        evidence["client"]["entry"] = outbound.to_dict() if outbound else None
        evidence["server"]["entry"] = inbound.to_dict() if inbound else None
        problems = [problem for problem in (missing_client, missing_server) if problem]
        hops = waypoint_pods or [server.name]
        if outbound is not None and outbound.dst_workload not in hops:
            problems.append(f"the probe's outbound line goes to {outbound.dst_workload}, not {' or '.join(hops)}")
        problems += assess_log_pair(
            outbound, inbound,
            client_identity=catalog.spiffe_id(ctx.namespace, client.service_account),
            server_identity=catalog.spiffe_id(ctx.namespace, server.service_account),
            waypoint_identity=waypoint_identity,
        )
        if problems or outbound is None or inbound is None:
            return Observation(False, "; ".join(problems), evidence, commands)
        return Observation(
            True,
            f"probe from port {sent.local_port}: outbound on {client_ztunnel} ({client.node}): "
            f"{outbound.src_identity} -> {outbound.dst_identity} [{outbound.dst_workload}], bytes "
            f"{outbound.bytes_sent}/{outbound.bytes_recv}; inbound on {server_ztunnel} ({server.node}): "
            f"{inbound.src_identity} -> {inbound.dst_identity}, bytes {inbound.bytes_recv}/{inbound.bytes_sent}",
            evidence,
            commands,
        )

    if in_path:
        waypoint = f"waypoint {catalog.WAYPOINT_NAME}"
        expected = (
            f"the probe's outbound line {client_name} -> {waypoint} (its client port in src.addr) on the ztunnel of "
            f"{client_name}'s node, and an inbound line {waypoint} -> {server_name} whose connection was open during "
            f"the probe on the ztunnel of {server_name}'s node, both with the SPIFFE identities of those "
            "ServiceAccounts and no error"
        )
    else:
        expected = (
            f"the probe's outbound line {client_name} -> {server_name} (its client port in src.addr) on the ztunnel "
            f"of {client_name}'s node, and the inbound line of the same connection (mirrored byte counts, same "
            f"identities, within the probe's time) on the ztunnel of {server_name}'s node, with the SPIFFE "
            "identities of those ServiceAccounts and no error"
        )
    return check_result(ctx, LOG_EVIDENCE_CHECK, expected, poll(ctx, probe),
                        "both access-log lines of the probe sleep -> productpage", started)
