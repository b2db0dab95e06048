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
* Both lines name the same identities.

Neither is placed by its time against this machine's clock: a node's clock may be minutes off it (a VM, a remote
cluster), and the port and the byte counts need no clock. The log read itself covers only the seconds since the probe
(``kubectl logs --since``, measured by the node).

Through a waypoint (l7) there is no such pair: the waypoint ends sleep's connection and opens its own to productpage,
rewrites the HTTP headers (so the byte counts differ) and keeps that connection for later requests. There the server
line is a waypoint connection to productpage that was open while the probe's own connection to the waypoint was, by
the client line's own time and duration (two nodes of one cluster, whose clocks NTP keeps close).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lab import catalog
from verify.checks.base import (
    GATEWAY_NAME_LABEL,
    LOG_EVIDENCE_CHECK,
    LOG_WINDOW_MARGIN_S,
    NODE_CLOCK_TOLERANCE_S,
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
    ztunnels_logging_on_node,
)
from verify.checks.traffic import TRAFFIC_CASES, send_probe
from verify.cluster import ClusterError
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


def open_during(entry: AccessLogEntry, start: datetime, end: datetime) -> bool:
    """The line's connection was open at some time between `start` and `end` (opened = closed - duration), give or
    take the slack between two nodes' clocks."""
    closed = _time(entry)
    if closed is None:
        return False
    opened = closed - timedelta(milliseconds=entry.duration_ms or 0)
    slack = timedelta(seconds=NODE_CLOCK_TOLERANCE_S)
    return opened <= end + slack and closed >= start - slack


def open_window(line: AccessLogEntry) -> tuple[datetime, datetime] | None:
    """When `line`'s connection was open, by its own node's clock: from its close minus its duration to its close."""
    closed = _time(line)
    if closed is None:
        return None
    return closed - timedelta(milliseconds=line.duration_ms or 0), closed


def lines_from_port(entries: Iterable[AccessLogEntry], direction: str, pod: str, local_port: int) -> list[AccessLogEntry]:
    """The `direction` lines of `pod` (the source of an ``outbound`` line, the destination of an ``inbound`` one)
    whose client came from port `local_port`.

    No clock window: the port was drawn for one probe of this run, and the log read covers only the seconds since it
    (``--since``, which the node measures by its own clock), so a line's time, stamped by a node whose clock may be
    minutes off this machine's, has nothing to add.
    """
    return [entry for entry in entries
            if entry.direction == direction
            and (entry.src_workload if direction == "outbound" else entry.dst_workload) == pod
            and port_of(entry.src_addr) == local_port]


def probe_client_lines(entries: Iterable[AccessLogEntry], client_pod: str, local_port: int) -> list[AccessLogEntry]:
    """The ``outbound`` lines of `client_pod` from port `local_port`."""
    return lines_from_port(entries, "outbound", client_pod, local_port)


def mirrors(client_line: AccessLogEntry, server_line: AccessLogEntry) -> bool:
    """The two lines count the same bytes each way: what the client side sent, the server side received."""
    return (client_line.bytes_sent, client_line.bytes_recv) == (server_line.bytes_recv, server_line.bytes_sent)


def probe_server_lines(
    entries: Iterable[AccessLogEntry], client_line: AccessLogEntry, server_pod: str
) -> list[AccessLogEntry]:
    """The ``inbound`` lines to `server_pod` of the connection `client_line` logged: same source, same identities,
    mirrored byte counts. No clock window: the probe's padding makes its byte counts its own (see `PROBE_PORTS`)."""
    return [entry for entry in entries
            if entry.direction == "inbound" and entry.dst_workload == server_pod
            and entry.src_workload == client_line.src_workload
            and (entry.src_identity, entry.dst_identity) == (client_line.src_identity, client_line.dst_identity)
            and mirrors(client_line, entry)]


def waypoint_server_lines(
    entries: Iterable[AccessLogEntry], server_pod: str, waypoint_pods: Collection[str], client_line: AccessLogEntry
) -> list[AccessLogEntry]:
    """The ``inbound`` lines to `server_pod` from a waypoint pod whose connection was open while the probe's own
    connection to the waypoint was (`client_line`, the client node's line: the window is in the cluster's time, not
    this machine's): the waypoint's connection to the server that carried the probe onwards, and perhaps others."""
    window = open_window(client_line)
    if window is None:
        return []
    return [entry for entry in entries
            if entry.direction == "inbound" and entry.dst_workload == server_pod
            and entry.src_workload in waypoint_pods and open_during(entry, *window)]


def first_without_error(candidates: Sequence[AccessLogEntry]) -> AccessLogEntry | None:
    """The first of `candidates` that has no error, else the first (whose error then says what went wrong)."""
    return next((entry for entry in candidates if not entry.error), candidates[0] if candidates else None)


@dataclass(frozen=True)
class NodeLog:
    """The access lines of every ztunnel pod on one node (`ztunnels_logging_on_node`), and which pod logged which.

    Attributes:
        pods: the pods read, newest first.
        by_pod: each pod's parsed lines.
        commands: the ``kubectl logs`` commands, as the user could repeat them.
    """

    pods: tuple[str, ...]
    by_pod: Mapping[str, list[AccessLogEntry]]
    commands: tuple[str, ...]

    @property
    def entries(self) -> list[AccessLogEntry]:
        return [entry for pod in self.pods for entry in self.by_pod.get(pod, [])]

    def pod_of(self, entry: AccessLogEntry | None) -> str:
        """The pod that logged `entry` (the newest pod when it is None or not one of these lines)."""
        found = (pod for pod in self.pods if any(line is entry for line in self.by_pod.get(pod, [])))
        return next(found, self.pods[0])


def read_node_log(ctx: CheckContext, pods: Sequence[str], since_s: int) -> NodeLog:
    """Read and parse the last `since_s` seconds of the logs of `pods` (the ztunnels of one node, newest first).

    An older pod that is gone by now (a rollout deleted it) is skipped; the newest must answer.
    """
    by_pod: dict[str, list[AccessLogEntry]] = {}
    read: list[str] = []
    for index, pod in enumerate(pods):
        try:
            text = ctx.cluster.logs(catalog.ISTIO_NAMESPACE, pod, since_s=since_s)
        except ClusterError:
            if index == 0:
                raise
            continue
        by_pod[pod] = parse_ztunnel_access_log(text)
        read.append(pod)
    commands = tuple(ctx.cluster.command(["logs", "-n", catalog.ISTIO_NAMESPACE, pod, f"--since={since_s}s"])
                     for pod in read)
    return NodeLog(tuple(read), by_pod, commands)


def ztunnels_on(ctx: CheckContext, ztunnels_json: Mapping[str, Any], node: str | None) -> list[str]:
    """The ztunnel pods logging on `node`, newest first; NotFound when none runs there."""
    pods = ztunnels_logging_on_node(ztunnels_json, node or "")
    if not pods:
        raise NotFound(f"no running ztunnel pod on node {node}")
    return pods


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
        client_ztunnels = ztunnels_on(ctx, ztunnels, client.node)
        server_ztunnels = ztunnels_on(ctx, ztunnels, server.node)

        probe_started = ctx.clock()
        # From the very pod found above (not deploy/sleep, which a rollout may resolve to a pod on another node).
        sent = send_probe(ctx, client_name, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace), pod=client.name)
        commands.append(sent.command)
        evidence = {"probe": sent.to_dict(), "request": sent.outcome.to_dict(), "waypoint_pods": waypoint_pods,
                    "client": {**client.to_dict(), "ztunnel_pod": client_ztunnels[0], "entry": None},
                    "server": {**server.to_dict(), "ztunnel_pod": server_ztunnels[0], "entry": None}}
        if sent.outcome.kind != OK:
            return Observation(False, f"the probe request failed: {sent.outcome.detail}", evidence, commands)
        outbound: AccessLogEntry | None = None
        inbound: AccessLogEntry | None = None
        missing_client = missing_server = None
        # In l7 the server side's line is written when the waypoint's pooled connection to productpage closes,
        # which other checks' requests can keep open for a while: read the logs again for this same probe (bounded)
        # rather than send a new probe, which would only start the wait over.
        for _ in range(WAYPOINT_LOG_READS if in_path else 1):
            if in_path:
                ctx.sleep(WAYPOINT_UPSTREAM_CLOSE_S)
            since_s = math.ceil(ctx.clock() - probe_started) + LOG_WINDOW_MARGIN_S
            client_log = read_node_log(ctx, client_ztunnels, since_s)
            server_log = client_log if server_ztunnels == client_ztunnels else read_node_log(
                ctx, server_ztunnels, since_s)
            outbound, missing_client = only_line(
                probe_client_lines(client_log.entries, client.name, sent.local_port),
                f"outbound line from {client.name} port {sent.local_port} on the client's ztunnel")
            if outbound is None:
                continue
            if in_path:
                # The waypoint may hold more than one connection to productpage; any open while the probe's was may
                # have carried it, and nothing in the log says which: one without an error stands for them.
                inbound = first_without_error(
                    waypoint_server_lines(server_log.entries, server.name, waypoint_pods, outbound))
                missing_server = None if inbound else (
                    "no inbound line from the waypoint open during the probe on the server's ztunnel")
                if inbound is not None and not inbound.error:
                    break
            else:
                inbound, missing_server = only_line(
                    probe_server_lines(server_log.entries, outbound, server.name),
                    f"inbound line mirroring the probe's bytes (sent {outbound.bytes_sent}, received "
                    f"{outbound.bytes_recv}) on the server's ztunnel")
        commands += [*client_log.commands, *(server_log.commands if server_log is not client_log else ())]
        client_ztunnel, server_ztunnel = client_log.pod_of(outbound), server_log.pod_of(inbound)
        evidence["client"]["ztunnel_pod"], evidence["server"]["ztunnel_pod"] = client_ztunnel, server_ztunnel
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
            f"{client_name}'s node, and an inbound line {waypoint} -> {server_name} whose connection was open while the "
            f"probe's was (by the outbound line's time) on the ztunnel of {server_name}'s node, both with the SPIFFE identities of those "
            "ServiceAccounts and no error"
        )
    else:
        expected = (
            f"the probe's outbound line {client_name} -> {server_name} (its client port in src.addr) on the ztunnel "
            f"of {client_name}'s node, and the inbound line of the same connection (mirrored byte counts, same "
            f"identities) on the ztunnel of {server_name}'s node, with the SPIFFE "
            "identities of those ServiceAccounts and no error"
        )
    return check_result(ctx, LOG_EVIDENCE_CHECK, expected, poll(ctx, probe),
                        "both access-log lines of the probe sleep -> productpage", started)
