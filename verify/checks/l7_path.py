"""The L7 path: whether the waypoint's Envoy handled sleep -> productpage, from the response headers only Envoy adds."""

from __future__ import annotations

from collections.abc import Mapping

from lab import catalog
from verify.checks.base import (
    ENVOY_SERVER_NAME,
    ENVOY_UPSTREAM_TIME_HEADER,
    L7_PATH_CHECK,
    OK,
    CheckContext,
    Observation,
    check_result,
    poll,
)
from verify.checks.traffic import TRAFFIC_CASES, send_curl
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


# Responses read per attempt; every one must agree with the mode.
L7_PATH_REQUESTS = 3


def check_l7_path(ctx: CheckContext) -> CheckResult:
    """Show whether the waypoint's Envoy handled sleep -> productpage: present in ``l7``, absent in ``l4-only``.

    Istio's integration tests prove the L7 path with an ``X-Request-Id`` request header that an echo server
    reflects. productpage reflects no request header, and Envoy does not return the request ID in responses by
    default (``always_set_request_id_in_response`` is off in Istio), so this check uses the response headers that
    only Envoy adds (see `envoy_markers`): ``server: istio-envoy`` and ``x-envoy-upstream-service-time``. It passes
    in ``l7`` when at least one is present (a mesh may switch either off in proxyHeaders, not both by default),
    and in ``l4-only`` when neither is.

    One answer can be luck (a request that happened to miss or hit the waypoint while a mode switch propagates), so
    each attempt reads `L7_PATH_REQUESTS` responses, each on a new connection, and passes only when every one of
    them says the same.
    """
    started = ctx.clock()
    in_path = ctx.facts.waypoint_in_path
    url = TRAFFIC_CASES[0].url(ctx.namespace)

    def probe() -> Observation:
        responses, commands, failed = [], [], None
        for _ in range(L7_PATH_REQUESTS):
            outcome, command = send_curl(ctx, catalog.SLEEP, ctx.namespace, "GET", url)
            commands.append(command)
            responses.append({"envoy_headers": envoy_markers(outcome.headers),
                              "server": outcome.headers.get("server"), "request": outcome.to_dict()})
            if outcome.kind != OK:
                failed = outcome.detail
                break
        evidence = {"responses": responses}
        if failed:
            return Observation(False, f"request failed: {failed}", evidence, commands[-1:])
        with_envoy = sum(bool(response["envoy_headers"]) for response in responses)
        if with_envoy:
            first = next(response["envoy_headers"] for response in responses if response["envoy_headers"])
            seen = (f"Envoy headers in {with_envoy} of {len(responses)} responses ("
                    + ", ".join(f"{name}: {value}" for name, value in first.items()) + ")")
        else:
            servers = sorted({str(response["server"] or "absent") for response in responses})
            seen = f"no Envoy headers in any of {len(responses)} responses (server: {', '.join(servers)})"
        every_one_agrees = with_envoy == len(responses) if in_path else with_envoy == 0
        return Observation(every_one_agrees, seen, evidence, commands[-1:])

    if in_path:
        expected = (f"response from sleep GET /productpage carries server: {ENVOY_SERVER_NAME} or "
                    f"{ENVOY_UPSTREAM_TIME_HEADER} (the waypoint's Envoy handled it)")
    else:
        expected = (f"response from sleep GET /productpage carries neither server: {ENVOY_SERVER_NAME} nor "
                    f"{ENVOY_UPSTREAM_TIME_HEADER} (no Envoy in the path)")
    return check_result(ctx, L7_PATH_CHECK, expected, poll(ctx, probe),
                   "the waypoint to be in the path" if in_path else "the waypoint to be out of the path", started)
