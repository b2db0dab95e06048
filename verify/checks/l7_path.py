"""The L7 path: whether the productpage waypoint's Envoy handled sleep -> productpage, from the response headers only
Envoy adds and from the line sleep's ztunnel logged for each of those requests."""

from __future__ import annotations

import math
from collections.abc import Mapping

from lab import catalog
from verify.checks.base import (
    ENVOY_SERVER_NAME,
    ENVOY_UPSTREAM_TIME_HEADER,
    L7_PATH_CHECK,
    LOG_WINDOW_MARGIN_S,
    OK,
    CheckContext,
    Observation,
    app_selector,
    check_result,
    one_running_pod,
    poll,
)
from verify.checks.traffic import TRAFFIC_CASES, send_probe
from verify.checks.ztunnel_logs import only_line, probe_client_lines, read_node_log, ztunnels_on
from verify.evidence import AccessLogEntry
from verify.report import CheckResult

# --- e. L7 path proof --------------------------------------------------------------------------------------------


def envoy_markers(headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers that only an Istio Envoy adds, among `headers` (names in lower case).

    * ``server: istio-envoy``: Istio configures the waypoint's HTTP connection manager with server name
      ``istio-envoy`` and ``OVERWRITE`` (pilot/pkg/networking/util/proxy_headers.go, used by
      buildWaypointInboundHTTPFilters in pilot/pkg/networking/core/listener_waypoint.go), replacing productpage's
      own ``Server: gunicorn`` (samples/bookinfo/src/productpage/Dockerfile runs gunicorn).
    * ``x-envoy-upstream-service-time``: Envoy's router adds it to every proxied response unless
      ``suppress_envoy_headers`` is set, and Istio sets that only when the mesh disables Envoy debug headers
      (proxyHeaders.envoyDebugHeaders; pilot/pkg/networking/core/listener_builder.go builds the router).

    ztunnel is a plain L4 proxy and adds neither.
    """
    markers = {}
    if headers.get("server", "").lower() == ENVOY_SERVER_NAME:
        markers["server"] = headers["server"]
    if ENVOY_UPSTREAM_TIME_HEADER in headers:
        markers[ENVOY_UPSTREAM_TIME_HEADER] = headers[ENVOY_UPSTREAM_TIME_HEADER]
    return markers


# The response headers that an Istio Envoy adds (`envoy_markers`); in l7 every response carries both.
ENVOY_MARKERS = ("server", ENVOY_UPSTREAM_TIME_HEADER)
# Responses read per attempt; every one must agree with the mode.
L7_PATH_REQUESTS = 3


def is_waypoint(workload: str | None) -> bool:
    """`workload`, as ztunnel logs a destination, is the productpage waypoint: one of its pods, which istiod names
    after the Gateway (``<name>-<hash>-<suffix>``), or the name itself when ztunnel knows no pod name."""
    name = catalog.WAYPOINT_NAME
    return workload is not None and (workload == name or workload.startswith(f"{name}-"))


def hop_problem(line: AccessLogEntry, in_path: bool, waypoint_identity: str) -> str | None:
    """Why the probe's client-side ztunnel line disagrees with the mode; None when it agrees.

    In l7 sleep's ztunnel must have tunnelled the request to the productpage waypoint (its pod and its identity): then
    the Envoy that answered is that waypoint's, not some other Envoy on the way. In l4-only it must not have.
    """
    if in_path and not (is_waypoint(line.dst_workload) and line.dst_identity == waypoint_identity):
        return f"went to {line.dst_workload} ({line.dst_identity}), not the waypoint {catalog.WAYPOINT_NAME}"
    if not in_path and is_waypoint(line.dst_workload):
        return f"went to the waypoint {line.dst_workload}"
    return None


def check_l7_path(ctx: CheckContext) -> CheckResult:
    """Show whether the productpage waypoint's Envoy handled sleep -> productpage: in ``l7`` it did, in ``l4-only`` no
    Envoy did.

    Istio's integration tests prove the L7 path with an ``X-Request-Id`` request header that an echo server
    reflects. productpage reflects no request header, and Envoy does not return the request ID in responses by
    default (``always_set_request_id_in_response`` is off in Istio), so this check uses the response headers that
    only Envoy adds (see `envoy_markers`): ``server: istio-envoy`` and ``x-envoy-upstream-service-time``. A response
    passes in ``l7`` when both are present (Istio adds both by default, and the lab's istiod sets no proxyHeaders
    that would switch either off), and in ``l4-only`` when neither is.

    Headers show that an Envoy answered, not which one. So each request goes out from a client port drawn for it, and
    the line sleep's ztunnel logged for that port must name the productpage waypoint as its destination in ``l7``
    (and must not in ``l4-only``): then the Envoy that answered is the waypoint's.

    One answer can be luck (a request that happened to miss or hit the waypoint while a mode switch propagates), so
    each attempt reads `L7_PATH_REQUESTS` responses, each on a new connection, and passes only when every one of
    them says the same.
    """
    started = ctx.clock()
    in_path = ctx.facts.waypoint_in_path
    url = TRAFFIC_CASES[0].url(ctx.namespace)
    waypoint_identity = catalog.spiffe_id(ctx.namespace, catalog.WAYPOINT_NAME)

    def probe() -> Observation:
        kube = ctx.cluster
        client = one_running_pod(kube, ctx.namespace, app_selector(catalog.SLEEP))
        ztunnels = ztunnels_on(ctx, kube.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL), client.node)
        probes, commands, responses = [], [], []
        probes_started = ctx.clock()
        for _ in range(L7_PATH_REQUESTS):
            # From the very pod whose node's ztunnels are read (see `send_probe`).
            sent = send_probe(ctx, catalog.SLEEP, ctx.namespace, "GET", url, pod=client.name)
            probes.append(sent)
            commands.append(sent.command)
            responses.append({"envoy_headers": envoy_markers(sent.outcome.headers),
                              "server": sent.outcome.headers.get("server"), "probe": sent.to_dict()})
            if sent.outcome.kind != OK:
                return Observation(False, f"request failed: {sent.outcome.detail}", {"responses": responses},
                                   commands[-1:])
        since_s = math.ceil(ctx.clock() - probes_started) + LOG_WINDOW_MARGIN_S
        log = read_node_log(ctx, ztunnels, since_s)
        commands += log.commands
        hop_problems = []
        for sent, response in zip(probes, responses, strict=True):
            line, missing = only_line(
                probe_client_lines(log.entries, client.name, sent.local_port),
                f"outbound line from port {sent.local_port} on {' or '.join(log.pods)}")
            response["ztunnel_line"] = line.to_dict() if line else None
            response["ztunnel_pod"] = log.pod_of(line)
            problem = missing or (hop_problem(line, in_path, waypoint_identity) if line else None)
            if problem:
                hop_problems.append(f"port {sent.local_port}: {problem}")
        ztunnel = log.pods[0]
        evidence = {"responses": responses, "ztunnel_pod": ztunnel}

        with_envoy = sum(bool(response["envoy_headers"]) for response in responses)
        with_both = sum(len(response["envoy_headers"]) == len(ENVOY_MARKERS) for response in responses)
        if with_envoy:
            first = next(response["envoy_headers"] for response in responses if response["envoy_headers"])
            seen = (f"Envoy headers in {with_envoy} of {len(responses)} responses ("
                    + ", ".join(f"{name}: {value}" for name, value in first.items()) + ")")
            lacking = sorted({name for response in responses if response["envoy_headers"]
                              for name in ENVOY_MARKERS if name not in response["envoy_headers"]})
            if in_path and lacking:
                seen += f", but {with_envoy - with_both} of them without {' or '.join(lacking)}"
        else:
            servers = sorted({str(response["server"] or "absent") for response in responses})
            seen = f"no Envoy headers in any of {len(responses)} responses (server: {', '.join(servers)})"
        if hop_problems:
            seen += "; sleep's ztunnel: " + "; ".join(hop_problems)
        elif in_path:
            seen += f"; sleep's ztunnel sent all {len(responses)} to the waypoint"
        else:
            seen += f"; sleep's ztunnel sent all {len(responses)} straight to productpage"
        every_one_agrees = with_both == len(responses) if in_path else with_envoy == 0
        return Observation(every_one_agrees and not hop_problems, seen, evidence, commands)

    if in_path:
        expected = (f"every response from sleep GET /productpage carries both server: {ENVOY_SERVER_NAME} and "
                    f"{ENVOY_UPSTREAM_TIME_HEADER}, and sleep's ztunnel logged each of those requests (by its "
                    f"client port) as tunnelled to the waypoint {catalog.WAYPOINT_NAME}")
    else:
        expected = (f"no response from sleep GET /productpage carries server: {ENVOY_SERVER_NAME} or "
                    f"{ENVOY_UPSTREAM_TIME_HEADER}, and sleep's ztunnel logged each of those requests (by its "
                    "client port) as going to productpage, not to a waypoint")
    return check_result(ctx, L7_PATH_CHECK, expected, poll(ctx, probe),
                        "the waypoint to be in the path" if in_path else "the waypoint to be out of the path", started)
