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


def check_l7_path(ctx: CheckContext) -> CheckResult:
    """Show whether the waypoint's Envoy handled sleep -> productpage: present in ``l7``, absent in ``l4-only``.

    Istio's integration tests prove the L7 path with an ``X-Request-Id`` request header that an echo server
    reflects. productpage reflects no request header, and Envoy does not return the request ID in responses by
    default (``always_set_request_id_in_response`` is off in Istio), so this check uses the response headers that
    only Envoy adds (see `envoy_markers`): ``server: istio-envoy`` and ``x-envoy-upstream-service-time``. It passes
    in ``l7`` when at least one is present (a mesh may switch either off in proxyHeaders, not both by default),
    and in ``l4-only`` when neither is.
    """
    started = ctx.clock()
    in_path = ctx.facts.waypoint_in_path
    url = TRAFFIC_CASES[0].url(ctx.namespace)

    def probe() -> Observation:
        outcome, command = send_curl(ctx, catalog.SLEEP, ctx.namespace, "GET", url)
        markers = envoy_markers(outcome.headers)
        evidence = {"envoy_headers": markers, "server": outcome.headers.get("server"), "request": outcome.to_dict()}
        if outcome.kind != OK:
            return Observation(False, f"request failed: {outcome.detail}", evidence, [command])
        if markers:
            seen = "Envoy headers " + ", ".join(f"{name}: {value}" for name, value in markers.items())
        else:
            seen = f"no Envoy headers (server: {outcome.headers.get('server', 'absent')})"
        return Observation(bool(markers) == in_path, seen, evidence, [command])

    if in_path:
        expected = (f"response from sleep GET /productpage carries server: {ENVOY_SERVER_NAME} or "
                    f"{ENVOY_UPSTREAM_TIME_HEADER} (the waypoint's Envoy handled it)")
    else:
        expected = (f"response from sleep GET /productpage carries neither server: {ENVOY_SERVER_NAME} nor "
                    f"{ENVOY_UPSTREAM_TIME_HEADER} (no Envoy in the path)")
    return check_result(ctx, L7_PATH_CHECK, expected, poll(ctx, probe),
                   "the waypoint to be in the path" if in_path else "the waypoint to be out of the path", started)
