"""The observability addons: Prometheus' count of ztunnel's mTLS connections grows with the check's requests, and
Kiali's graph shows the expected edge."""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab import catalog
from verify.checks.base import KIALI_CHECK, MODE_FACTS, PROMETHEUS_CHECK, CheckContext, Observation, check_result, poll
from verify.checks.traffic import TRAFFIC_CASES, send_curl
from verify.cluster import ClusterError, proxy_cannot_reach
from verify.report import CheckResult

# --- f. Observability addons: Prometheus and Kiali saw the mesh traffic ---------------------------------------------

# The workload the Kiali graph names for productpage: its Deployment.
PRODUCTPAGE_WORKLOAD = next(
    deployment for deployment, service, _ in catalog.BOOKINFO_WORKLOADS if service == catalog.PRODUCTPAGE)
# ztunnel's counter of opened TCP connections, labelled with both principals and the connection's security policy.
TCP_CONNECTIONS_METRIC = "istio_tcp_connections_opened_total"
MUTUAL_TLS = "mutual_tls"
# The window Kiali's graph looks back over; Prometheus needs two scrapes (15 s apart) inside it to see a rate.
KIALI_GRAPH_DURATION = "120s"
# Requests sent from sleep before the addon checks start asking, so there is something to see.
ADDON_TRAFFIC_REQUESTS = 3
# The lab's Prometheus scrapes every catalog.PROMETHEUS_SCRAPE_INTERVAL_S. Asking five times per interval sees a new
# scrape within 3 s of it. Prometheus shows the requests sent first at the next scrape (allow one missed: 3 intervals);
# Kiali draws the edge from a rate, which needs one sample more (4), and is asked uncached (no 60 s cache to outwait).
# Waiting longer cannot help: past these, something is wrong, and the check says what it saw.
ADDON_POLL_INTERVAL_S = catalog.PROMETHEUS_SCRAPE_INTERVAL_S / 5
PROMETHEUS_WAIT_S = 3 * catalog.PROMETHEUS_SCRAPE_INTERVAL_S
KIALI_WAIT_S = 4 * catalog.PROMETHEUS_SCRAPE_INTERVAL_S
# The labels of a Prometheus series that the evidence keeps.
PROMETHEUS_EVIDENCE_LABELS = ("reporter", "source_workload", "destination_workload", "destination_principal")


def _service_proxy(service: str, port: int) -> str:
    """The API server's proxy prefix for a Service in istio-system: reachable with ``kubectl get --raw``."""
    return f"/api/v1/namespaces/{catalog.ISTIO_NAMESPACE}/services/{service}:{port}/proxy"


# Where sleep's requests to productpage open their mTLS connections: productpage itself (l4-only) or its waypoint (l7).
PROMETHEUS_DESTINATIONS = (PRODUCTPAGE_WORKLOAD, catalog.WAYPOINT_NAME)


def prometheus_mtls_query(source_principal: str, namespace: str) -> str:
    """The instant query for mTLS connections opened by `source_principal` (a SPIFFE ID) to productpage or its
    waypoint in `namespace`."""
    destinations = "|".join(PROMETHEUS_DESTINATIONS)
    return (f'{TCP_CONNECTIONS_METRIC}{{source_principal="{source_principal}",'
            f'connection_security_policy="{MUTUAL_TLS}",destination_workload_namespace="{namespace}",'
            f'destination_workload=~"{destinations}"}}')


def prometheus_query_path(query: str) -> str:
    """Prometheus' instant-query API for `query`, through the API server's service proxy."""
    return (f"{_service_proxy(catalog.PROMETHEUS_SERVICE, catalog.PROMETHEUS_PORT)}/api/v1/query?"
            f"query={urllib.parse.quote(query, safe='')}")


def kiali_graph_path(namespace: str, duration: str = KIALI_GRAPH_DURATION) -> str:
    """Kiali's workload graph API for `namespace`, through the API server's service proxy, uncached.

    Kiali 2.27 and newer serve graphs from a cache refreshed every 60 s and shared by every anonymous user, so right
    after a switch from l4-only to l7 the cached graph can still be the old mode's. ``refreshInterval=0`` asks for a
    graph computed now (kiali graph/options.go: zero or less bypasses the cache); older Kialis ignore the parameter.
    """
    query = urllib.parse.urlencode({"namespaces": namespace, "graphType": "workload", "duration": duration,
                                    "refreshInterval": 0})
    web_root = f"{_service_proxy(catalog.KIALI_SERVICE, catalog.KIALI_PORT)}{catalog.KIALI_WEB_ROOT}"
    return f"{web_root}/api/namespaces/graph?{query}"


def _number(text: Any) -> float:
    """A number Prometheus or Kiali wrote as a string ("12", "100", "NaN"); NaN when it is not one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


SeriesKey = tuple[tuple[str, str], ...]


def series_key(labels: Mapping[str, Any]) -> SeriesKey:
    """One series' identity: its whole label set (a restarted ztunnel pod, say, starts a series of its own)."""
    return tuple(sorted((str(name), str(value)) for name, value in labels.items()))


def prometheus_counts(query_json: Any, source_principal: str) -> tuple[dict[SeriesKey, dict[str, Any]] | None, str]:
    """The counter's series in a Prometheus instant-query answer, or None and why not (in words).

    Args:
        query_json: the decoded answer of ``/api/v1/query`` for `prometheus_mtls_query`: ``{status: "success",
            data: {resultType: "vector", result: [{metric: {labels}, value: [<unix time>, "<number>"]}]}}``, or
            ``{status: "error", errorType, error}``.
        source_principal: the client's SPIFFE ID.

    Returns:
        ``(series, why)``: each series with ``source_principal``, ``connection_security_policy="mutual_tls"`` and a
        destination in `PROMETHEUS_DESTINATIONS`, by `series_key`: its reporter, workloads, destination principal
        and value as Prometheus wrote it. None when the answer is an error or not a vector; `why` says so.
    """
    if not isinstance(query_json, Mapping):
        return None, "Prometheus answered with JSON that is not an object"
    if query_json.get("status") == "error":
        error_type, error = query_json.get("errorType", "error"), query_json.get("error", "no message")
        return None, f"Prometheus refused the query ({error_type}: {error})"
    data = query_json.get("data")
    if not isinstance(data, Mapping):
        data = {}
    if query_json.get("status") != "success" or data.get("resultType") != "vector":
        return None, (f"Prometheus answered status {query_json.get('status')!r} with result type "
                      f"{data.get('resultType')!r}, not a success with a vector")
    series: dict[SeriesKey, dict[str, Any]] = {}
    for sample in data.get("result") or []:
        if not isinstance(sample, Mapping):
            continue
        labels, value = sample.get("metric") or {}, sample.get("value")
        if labels.get("source_principal", source_principal) != source_principal or labels.get(
                "connection_security_policy", MUTUAL_TLS) != MUTUAL_TLS or labels.get(
                "destination_workload", PRODUCTPAGE_WORKLOAD) not in PROMETHEUS_DESTINATIONS:
            continue  # the query selects on these; anything else is not evidence for them
        raw = value[1] if isinstance(value, (list, tuple)) and len(value) == 2 else None
        series[series_key(labels)] = {**{name: labels.get(name) for name in PROMETHEUS_EVIDENCE_LABELS}, "value": raw}
    return series, ""


def grew(value: float, before: float | None) -> bool:
    """A counter that reads `value` now and read `before` at the baseline (None: no such series then) counted new
    connections since: it rose, or it restarted from 0 (its ztunnel restarted) and counts again."""
    if not value > 0:
        return False
    return before is None or value != before


def assess_prometheus_mtls(
    query_json: Any, source_principal: str, baseline: Mapping[SeriesKey, float]
) -> tuple[bool, str, dict[str, Any]]:
    """Decide whether a Prometheus instant-query answer shows mTLS connections opened by `source_principal` to
    productpage or its waypoint since `baseline` was read.

    A counter above 0 says only that such connections happened once, perhaps yesterday, from a Prometheus that no
    longer scrapes ztunnel (a series stays readable for minutes after its last scrape). Growth since the baseline,
    read before the check sent its requests, says ztunnel counted them and Prometheus scraped that count.

    Args:
        query_json: the decoded answer of ``/api/v1/query`` for `prometheus_mtls_query` (see `prometheus_counts`).
        source_principal: the client's SPIFFE ID.
        baseline: each series' value before the check's requests (`prometheus_counts` of the first answer); a
            series missing there had no connections yet.

    Returns:
        ``(ok, observed, evidence)``: ok when at least one series grew; the evidence lists each series' reporter,
        workloads, destination principal, value and value at the baseline.
    """
    found, why = prometheus_counts(query_json, source_principal)
    if found is None:
        evidence = {key: query_json.get(key) for key in ("errorType", "error")} if isinstance(
            query_json, Mapping) and query_json.get("status") == "error" else {}
        return False, why, evidence
    series = [{**item, "baseline": baseline.get(key)} for key, item in found.items()]
    evidence: dict[str, Any] = {"series": series}
    if not series:
        observed = (f"Prometheus has no {TCP_CONNECTIONS_METRIC} series with source_principal {source_principal} "
                    f"and connection_security_policy {MUTUAL_TLS} to {' or '.join(PROMETHEUS_DESTINATIONS)} yet: it "
                    "scrapes ztunnel every 15 s, so this fills in shortly after traffic; if it stays empty, check that "
                    "Prometheus scrapes the ztunnel pods (Status > Targets in its UI)")
        return False, observed, evidence

    def shown(item: dict[str, Any]) -> str:
        before = "absent" if item["baseline"] is None else f"{item['baseline']:g}"
        return (f"{item['reporter']} reporter: {item['source_workload']} -> {item['destination_workload']} "
                f"({item['destination_principal']}) {before} -> {item['value']}")

    grown = [item for item in series if grew(_number(item["value"]), item["baseline"])]
    if not grown:
        if not any(_number(item["value"]) > 0 for item in series):
            return False, (f"{len(series)} {TCP_CONNECTIONS_METRIC} series from {source_principal} with mutual_tls, "
                           "but every value is 0"), evidence
        observed = (f"no {TCP_CONNECTIONS_METRIC} series from {source_principal} with mutual_tls grew since before "
                    f"the check's requests ({'; '.join(shown(item) for item in series)}): Prometheus shows "
                    "ztunnel's count as of its last scrape (every 15 s); if it never grows, check that Prometheus "
                    "still scrapes the ztunnel pods (Status > Targets in its UI)")
        return False, observed, evidence
    return True, (f"{len(grown)} series of mTLS connections from {source_principal} grew during the check: "
                  + "; ".join(shown(item) for item in grown)), evidence


@dataclass(frozen=True)
class GraphRoute:
    """A way from one node to another in Kiali's graph: direct, or through waypoint (or service) nodes.

    Attributes:
        names: the node names along the way, ends included.
        edges: the edges' ``data`` objects, in order.
        waypoints: the waypoint nodes passed through, by workload name.
    """

    names: tuple[str, ...]
    edges: tuple[Mapping[str, Any], ...]
    waypoints: tuple[str, ...]

    @property
    def text(self) -> str:
        return " -> ".join(self.names)

    @property
    def protocol(self) -> str:
        """The protocol of the first (client-side) edge."""
        return str((self.edges[0].get("traffic") or {}).get("protocol") or "unknown")

    @property
    def mtls(self) -> bool:
        """Every edge carries some mTLS traffic (``isMTLS`` is a percentage string, absent without mTLS)."""
        return all(_number(edge.get("isMTLS")) > 0 for edge in self.edges)

    @property
    def waypoint_field(self) -> bool:
        """An edge says it goes to or through a waypoint (Kiali's ``waypoint`` edge field)."""
        return any(edge.get("waypoint") for edge in self.edges)

    @property
    def via_waypoint(self) -> bool:
        return bool(self.waypoints) or self.waypoint_field

    def to_dict(self, names_by_id: Mapping[str, str]) -> dict[str, Any]:
        return {
            "route": self.text,
            "protocol": self.protocol,
            "mtls": self.mtls,
            "waypoints": list(self.waypoints),
            "edges": [{
                "source": names_by_id.get(str(edge.get("source")), edge.get("source")),
                "target": names_by_id.get(str(edge.get("target")), edge.get("target")),
                "protocol": (edge.get("traffic") or {}).get("protocol"),
                "isMTLS": edge.get("isMTLS"),
                "rates": (edge.get("traffic") or {}).get("rates"),
                "waypoint": (edge.get("waypoint") or {}).get("direction") if edge.get("waypoint") else None,
            } for edge in self.edges],
        }


def _graph_elements(graph_json: Any, kind: str) -> list[Mapping[str, Any]]:
    elements = graph_json.get("elements") if isinstance(graph_json, Mapping) else None
    items = (elements or {}).get(kind) if isinstance(elements, Mapping) else None
    return [item["data"] for item in items or [] if isinstance(item, Mapping) and isinstance(item.get("data"), Mapping)]


def _graph_name(node: Mapping[str, Any]) -> str:
    return str(node.get("workload") or node.get("app") or node.get("service") or node.get("id"))


def _routes(nodes: list[Mapping[str, Any]], edges: list[Mapping[str, Any]], sources: set[str], targets: set[str],
            max_edges: int = 3) -> list[GraphRoute]:
    """Every way from a source to a target node through waypoint or service nodes only (no other workload)."""
    by_id = {str(node.get("id")): node for node in nodes}
    outgoing: dict[str, list[Mapping[str, Any]]] = {}
    for edge in edges:
        outgoing.setdefault(str(edge.get("source")), []).append(edge)
    found: list[GraphRoute] = []

    def walk(node_id: str, path: tuple[Mapping[str, Any], ...], seen: tuple[str, ...]) -> None:
        for edge in outgoing.get(node_id, []):
            target = str(edge.get("target"))
            if target in seen:
                continue
            route = (*path, edge)
            if target in targets:
                ids = (*seen, target)
                waypoints = tuple(_graph_name(by_id[i]) for i in ids[1:-1] if by_id.get(i, {}).get("isWaypoint"))
                found.append(GraphRoute(tuple(_graph_name(by_id.get(i, {"id": i})) for i in ids), route, waypoints))
                continue
            middle = by_id.get(target, {})
            if len(route) < max_edges and (middle.get("isWaypoint") or middle.get("nodeType") == "service"):
                walk(target, route, (*seen, target))

    for source in sorted(sources):
        walk(source, (), (source,))
    return found


def kiali_empty_graph_message(namespace: str) -> str:
    return (f"Kiali's graph of namespace {namespace} is empty: Kiali saw no traffic there in the last "
            f"{KIALI_GRAPH_DURATION} yet; the {catalog.TRAFFIC_CRONJOB} CronJob sends requests every minute, so wait "
            "a minute and re-run `./lab.sh verify <stack>`.")


def assess_kiali_graph(graph_json: Any, namespace: str, mode: str) -> tuple[bool, str, dict[str, Any]]:
    """Decide whether Kiali's workload graph shows sleep -> productpage as the mode expects.

    Kiali draws a waypoint either as a node of its own (``isWaypoint``; edges sleep -> waypoint -> productpage-v1,
    the edge to it carrying a ``waypoint`` field) or folds it into one edge sleep -> productpage-v1 that carries the
    ``waypoint`` field; both are accepted.

    Args:
        graph_json: the decoded answer of ``/kiali/api/namespaces/graph?graphType=workload``: ``{elements: {nodes:
            [{data: {id, nodeType, namespace, workload, isWaypoint?}}], edges: [{data: {source, target, isMTLS?,
            traffic: {protocol, rates}, waypoint?}}]}}``.
        namespace: the applications' namespace.
        mode: ``l4-only`` (expects a direct tcp edge with mTLS and no waypoint) or ``l7`` (expects http on sleep's
            side and the waypoint `catalog.WAYPOINT_NAME` on the way, with mTLS).

    Returns:
        ``(ok, observed, evidence)``.
    """
    facts = MODE_FACTS[mode]
    nodes = [node for node in _graph_elements(graph_json, "nodes") if node.get("nodeType") != "box"]
    edges = _graph_elements(graph_json, "edges")
    evidence: dict[str, Any] = {"nodes": len(nodes), "edges": len(edges)}
    if isinstance(graph_json, Mapping):
        evidence.update({key: graph_json.get(key) for key in ("timestamp", "duration", "graphType")})
    if not nodes:
        return False, kiali_empty_graph_message(namespace), evidence

    def workload_ids(name: str) -> set[str]:
        return {str(node.get("id")) for node in nodes if node.get("workload") == name
                and node.get("namespace") == namespace and node.get("nodeType") != "service"}

    client, server = catalog.SLEEP, PRODUCTPAGE_WORKLOAD
    shown = sorted({_graph_name(node) for node in nodes})
    evidence["workloads"] = shown
    client_ids, server_ids = workload_ids(client), workload_ids(server)
    for name, ids in ((client, client_ids), (server, server_ids)):
        if not ids:
            observed = (f"Kiali's graph of namespace {namespace} has no {name} workload (it shows: "
                        f"{', '.join(shown)}): Kiali saw no traffic of {name} in the last {KIALI_GRAPH_DURATION}")
            return False, observed, evidence
    names_by_id = {str(node.get("id")): _graph_name(node) for node in nodes}
    routes = _routes(nodes, edges, client_ids, server_ids)
    evidence["routes"] = [route.to_dict(names_by_id) for route in routes]
    if not routes:
        targets = sorted({names_by_id.get(str(edge.get("target")), "?") for edge in edges
                          if str(edge.get("source")) in client_ids})
        observed = (f"Kiali's graph has {client} and {server} but no edge between them ({client}'s edges go to: "
                    f"{', '.join(targets) or 'nothing'})")
        return False, observed, evidence

    def describe(route: GraphRoute) -> str:
        percentages = "/".join(f"{edge.get('isMTLS') or 0}%" for edge in route.edges)
        via = f", waypoint {', '.join(route.waypoints)}" if route.waypoints else (
            ", waypoint field on the edge" if route.waypoint_field else ", no waypoint")
        return f"{route.text}: {route.protocol}, mTLS {percentages}{via}"

    seen = "; ".join(describe(route) for route in routes)
    if not facts.waypoint_in_path:
        good = [route for route in routes if route.protocol == facts.graph_protocol and route.mtls
                and not route.via_waypoint]
        if not good:
            return False, f"no direct {facts.graph_protocol} edge {client} -> {server} with mTLS (seen: {seen})", evidence
        # Kiali's graph covers the last 120 s: right after a switch from l7, the waypoint's routes are still in it.
        # They are history, not a fault; the direct mTLS edge is what this mode must show.
        older = [route for route in routes if route not in good]
        note = f" (also in the window, from before: {'; '.join(describe(route) for route in older)})" if older else ""
        return True, "; ".join(describe(route) for route in good) + note, evidence

    expected_waypoint = catalog.WAYPOINT_NAME
    protocol_ok = [route for route in routes if route.protocol == facts.graph_protocol and route.mtls]
    through = [route for route in routes if route.via_waypoint and route.mtls
               and (not route.waypoints or expected_waypoint in route.waypoints)]
    problems = []
    if not any(route.protocol == facts.graph_protocol for route in routes):
        problems.append(f"{client} -> {server} carries only "
                        f"{'/'.join(sorted({route.protocol for route in routes}))}, no {facts.graph_protocol}: no "
                        "waypoint parsed the requests")
    elif not protocol_ok:
        problems.append(f"the {facts.graph_protocol} edge from {client} has no mTLS")
    if not through:
        others = sorted({name for route in routes for name in route.waypoints} - {expected_waypoint})
        if others:
            problems.append(f"the traffic goes through waypoint {', '.join(others)}, not {expected_waypoint}")
        elif any(route.via_waypoint for route in routes):
            problems.append(f"the way through waypoint {expected_waypoint} has no mTLS")
        else:
            problems.append(f"no waypoint {expected_waypoint} on the way (neither a waypoint node nor an edge's "
                            "waypoint field)")
    if problems:
        return False, f"{'; '.join(problems)} (seen: {seen})", evidence
    chosen = sorted({describe(route) for route in [*protocol_ok, *through]})
    return True, "; ".join(chosen), evidence


def _send_traffic(ctx: CheckContext, count: int, sent: dict[str, int]) -> list[str]:
    """Send `count` sleep -> productpage requests (outcome kinds counted into `sent`); the commands, once each."""
    commands: list[str] = []
    for _ in range(count):
        try:
            outcome, command = send_curl(ctx, catalog.SLEEP, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace))
        except ClusterError:
            sent["error"] = sent.get("error", 0) + 1
            continue
        sent[outcome.kind] = sent.get(outcome.kind, 0) + 1
        if command not in commands:
            commands.append(command)
    return commands


def _proxy_failure(service: str, error: ClusterError) -> str:
    reason = error.reason or str(error)
    return (f"The {service} Service did not answer through the API server's service proxy ({reason}); check that "
            f"the {service} pod in {catalog.ISTIO_NAMESPACE} is Running and Ready")


def _decode(service: str, body: str) -> tuple[Any, str | None]:
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"The {service} Service answered with something that is not JSON: {' '.join(body.split())[:80]!r}"


def _forward_path(service: str, port: int, path: str) -> str:
    """`path` as the addon itself serves it: without the API server's service-proxy prefix."""
    prefix = _service_proxy(service, port)
    return path[len(prefix):] if path.startswith(prefix) else path


def _get_addon_json(ctx: CheckContext, service: str, port: int, path: str,
                    commands: list[str]) -> tuple[Any, str | None]:
    """The decoded answer of `service` at `path` (a service-proxy path), or None and why not (in one sentence).

    Through the API server's service proxy first, which needs nothing running here. Where the API server cannot open
    a connection to the pod (a private control plane, a NetworkPolicy), a port-forward still can: it goes through the
    kubelet into the pod's network namespace. Its commands join `commands`, so the report shows how it was asked.
    """
    try:
        return _decode(service, ctx.cluster.get_raw(path))
    except ClusterError as error:
        if not proxy_cannot_reach(error):
            return None, _proxy_failure(service, error)
        proxy_reason = error.reason or str(error)
    target = f"svc/{service}"
    try:
        response = ctx.cluster.http_get(catalog.ISTIO_NAMESPACE, target, port, _forward_path(service, port, path))
    except ClusterError as error:
        return None, (f"The API server cannot reach the {service} pod through its service proxy ({proxy_reason}) "
                      f"and a port-forward to {target} in {catalog.ISTIO_NAMESPACE} failed too "
                      f"({str(error).rstrip('.')}); check that the {service} pod is Running and Ready")
    for command in response.commands:
        if command not in commands:
            commands.append(command)
    if response.status != 200:
        return None, (f"The {service} Service answered HTTP {response.status} through a port-forward (the API "
                      f"server's service proxy cannot reach it): {' '.join(response.body.split())[:80]!r}")
    return _decode(service, response.body)


def check_prometheus_mtls(ctx: CheckContext) -> CheckResult:
    """Prometheus' count of mTLS connections from sleep to productpage (or its waypoint) grows while the check sends
    requests from sleep: the first attempt reads the count, sends the requests, and every attempt compares."""
    started = ctx.clock()
    principal = catalog.spiffe_id(ctx.namespace, catalog.SLEEP)
    query = prometheus_mtls_query(principal, ctx.namespace)
    path = prometheus_query_path(query)
    sent: dict[str, int] = {}
    commands = [ctx.cluster.command(["get", "--raw", path])]
    baseline: list[dict[SeriesKey, float]] = []  # read once, before the requests

    def probe() -> Observation:
        evidence: dict[str, Any] = {"query": query, "requests_sent": dict(sent)}
        if not baseline:
            answer, failure = _get_addon_json(ctx, catalog.PROMETHEUS_SERVICE, catalog.PROMETHEUS_PORT, path, commands)
            counts, why = prometheus_counts(answer, principal) if not failure else (None, failure)
            if counts is None:
                return Observation(False, why, evidence, commands)
            baseline.append({key: _number(item["value"]) for key, item in counts.items()})
            commands.extend([*_send_traffic(ctx, ADDON_TRAFFIC_REQUESTS, sent), commands[0]])
            evidence["requests_sent"] = dict(sent)
        answer, failure = _get_addon_json(ctx, catalog.PROMETHEUS_SERVICE, catalog.PROMETHEUS_PORT, path, commands)
        if failure:
            return Observation(False, failure, evidence, commands)
        ok, observed, found = assess_prometheus_mtls(answer, principal, baseline[0])
        return Observation(ok, observed, {**evidence, **found}, commands)

    expected = (f"at least one {TCP_CONNECTIONS_METRIC} series with source_principal {principal}, "
                f"connection_security_policy {MUTUAL_TLS} and destination {' or '.join(PROMETHEUS_DESTINATIONS)} "
                f"grows after {ADDON_TRAFFIC_REQUESTS} requests from {catalog.SLEEP} (compared with its value before "
                "them)")
    return check_result(ctx, PROMETHEUS_CHECK, expected, poll(ctx, probe, interval_s=ADDON_POLL_INTERVAL_S,
                                                               timeout_s=PROMETHEUS_WAIT_S),
                        "Prometheus to scrape a grown count of ztunnel's mTLS connections", started)


def kiali_login(ctx: CheckContext) -> tuple[tuple[str, ...], str | None]:
    """Sign in to a Kiali that asks for a token: Kiali's session cookies, or none and why (in one sentence).

    The token is one of Kiali's own service account (read-only: the chart binds it to the viewer role only, with
    view_only_mode), minted for ten minutes, posted to Kiali's login through a port-forward (Kiali takes it as a
    form field and answers with a session cookie) and then dropped: never printed, never stored. A port-forward,
    because the API server's service proxy can neither POST this form through ``kubectl get --raw`` nor carry cookies.
    """
    account = catalog.KIALI_SERVICE_ACCOUNT
    try:
        token = ctx.cluster.create_token(catalog.ISTIO_NAMESPACE, account)
        response = ctx.cluster.http_get(catalog.ISTIO_NAMESPACE, f"svc/{catalog.KIALI_SERVICE}", catalog.KIALI_PORT,
                                        f"{catalog.KIALI_WEB_ROOT}/api/authenticate", form={"token": token})
    except ClusterError as error:
        return (), (f"Could not sign in to Kiali with a token of service account {account} in "
                    f"{catalog.ISTIO_NAMESPACE} ({error.reason or str(error).rstrip('.')})")
    if response.status != 200 or not response.cookies:
        answer, _ = _decode(catalog.KIALI_SERVICE, response.body)
        said = answer.get("error") if isinstance(answer, Mapping) else None
        return (), (f"Kiali refused the token of service account {account} in {catalog.ISTIO_NAMESPACE} (HTTP "
                    f"{response.status}: {said or 'no session cookie'})")
    return response.cookies, None


def check_kiali_graph(ctx: CheckContext) -> CheckResult:
    """Kiali's graph shows sleep -> productpage-v1 with mTLS: tcp direct in ``l4-only``, http via the waypoint in
    ``l7``. Requests from sleep go first and again before every look, so the rate Kiali draws edges from is fresh.

    An anonymous Kiali (the lab's kind cluster) is asked through the API server's service proxy; one that asks for a
    login (`CheckContext.kiali_login`: an existing cluster) through a port-forward, with the session of `kiali_login`.
    """
    started = ctx.clock()
    path = kiali_graph_path(ctx.namespace)
    sent: dict[str, int] = {}
    commands = [*_send_traffic(ctx, ADDON_TRAFFIC_REQUESTS - 1, sent)]
    session: list[tuple[str, ...]] = []  # the cookies of the current login; emptied when Kiali ends it

    def get_graph(shown: list[str]) -> tuple[Any, str | None]:
        if not ctx.kiali_login:
            shown.append(ctx.cluster.command(["get", "--raw", path]))
            return _get_addon_json(ctx, catalog.KIALI_SERVICE, catalog.KIALI_PORT, path, shown)
        if not session:
            cookies, failure = kiali_login(ctx)
            if failure:
                return None, failure
            session.append(cookies)
        try:
            response = ctx.cluster.http_get(catalog.ISTIO_NAMESPACE, f"svc/{catalog.KIALI_SERVICE}",
                                            catalog.KIALI_PORT,
                                            _forward_path(catalog.KIALI_SERVICE, catalog.KIALI_PORT, path),
                                            cookies=session[0])
        except ClusterError as error:
            return None, f"Kiali did not answer through a port-forward ({str(error).rstrip('.')})"
        shown.extend(command for command in response.commands if command not in shown)
        if response.status == 401:
            session.clear()  # the session ended: sign in again on the next look
        if response.status != 200:
            return None, (f"Kiali answered HTTP {response.status} through a port-forward: "
                          f"{' '.join(response.body.split())[:80]!r}")
        return _decode(catalog.KIALI_SERVICE, response.body)

    def probe() -> Observation:
        for command in _send_traffic(ctx, 1, sent):
            if command not in commands:
                commands.append(command)
        shown = list(commands)
        graph, failure = get_graph(shown)
        evidence: dict[str, Any] = {"requests_sent": dict(sent)}
        if failure:
            return Observation(False, failure, evidence, shown)
        ok, observed, found = assess_kiali_graph(graph, ctx.namespace, ctx.mode)
        return Observation(ok, observed, {**evidence, **found}, shown)

    facts = ctx.facts
    if facts.waypoint_in_path:
        expected = (f"{catalog.SLEEP} -> {PRODUCTPAGE_WORKLOAD} in Kiali's graph ({KIALI_GRAPH_DURATION}) with "
                    f"{facts.graph_protocol} on {catalog.SLEEP}'s side, through waypoint {catalog.WAYPOINT_NAME}, "
                    "mTLS")
    else:
        expected = (f"a direct {facts.graph_protocol} edge {catalog.SLEEP} -> {PRODUCTPAGE_WORKLOAD} in Kiali's graph "
                    f"({KIALI_GRAPH_DURATION}) with mTLS and no waypoint")
    return check_result(ctx, KIALI_CHECK, expected,
                        poll(ctx, probe, interval_s=ADDON_POLL_INTERVAL_S, timeout_s=KIALI_WAIT_S),
                        f"Kiali's graph to show {catalog.SLEEP} -> {PRODUCTPAGE_WORKLOAD}", started)
