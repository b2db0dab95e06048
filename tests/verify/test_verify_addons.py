"""The Prometheus and Kiali checks: their decisions on answers in the APIs' own formats, and the checks themselves
through the fake boundary (retries with a fake clock, so nothing waits)."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from lab import catalog
from verify.checks import addons, base, check_specs, run_checks
from verify.checks.addons import (
    assess_kiali_graph,
    assess_prometheus_mtls,
    kiali_graph_path,
    prometheus_mtls_query,
    prometheus_query_path,
)
from verify.checks.base import KIALI_CHECK, PROMETHEUS_CHECK

SLEEP_PRINCIPAL = "spiffe://cluster.local/ns/default/sa/sleep"
EMPTY_GRAPH = (
    "Kiali's graph of namespace default is empty: Kiali saw no traffic there in the last 120s yet; the "
    "bookinfo-traffic CronJob sends requests every minute, so wait a minute and re-run `./lab.sh verify <stack>`."
)
KIALI_503 = (
    "The kiali Service did not answer through the API server's service proxy (Error from server (ServiceUnavailable): "
    'no endpoints available for service "kiali"); check that the kiali pod in istio-system is Running and Ready'
)


def roundtrip(document):
    """What the check decodes: the document as it travels, JSON text."""
    return json.loads(json.dumps(document))


# --- Paths and queries ----------------------------------------------------------------------------------------------


def test_the_prometheus_query_selects_mtls_connections_from_the_sleep_principal_to_productpage_or_its_waypoint():
    query = prometheus_mtls_query(catalog.spiffe_id("default", "sleep"), "default")
    assert query == ('istio_tcp_connections_opened_total{source_principal="spiffe://cluster.local/ns/default/sa/sleep",'
                     'connection_security_policy="mutual_tls",destination_workload_namespace="default",'
                     'destination_workload=~"productpage-v1|productpage-waypoint"}')
    path = prometheus_query_path(query)
    assert path.startswith("/api/v1/namespaces/istio-system/services/prometheus:9090/proxy/api/v1/query?query=")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) == {"query": [query]}
    assert not set(path) & set('{}" ')  # encoded: kubectl passes it on as one request URI


def test_the_kiali_graph_path_goes_through_the_service_proxy_and_the_web_root():
    assert kiali_graph_path("default") == (
        "/api/v1/namespaces/istio-system/services/kiali:20001/proxy/kiali/api/namespaces/graph?"
        "namespaces=default&graphType=workload&duration=120s&refreshInterval=0"
    )


def test_kiali_is_asked_for_an_uncached_graph_right_after_a_mode_switch(fx, healthy):
    """Kiali's cache may still hold the l4-only graph after a switch to l7; only the uncached query sees today's."""
    cluster = healthy("l7")
    uncached = kiali_graph_path("default")
    # The fake answers the uncached query with today's graph and anything else with the cached l4-only one.
    cluster.raw_answers = {uncached: fx.Graph.l7_waypoint_node(), fx.PROMETHEUS_PROXY: fx.PROMETHEUS_L7,
                           fx.KIALI_PROXY: fx.Graph.l4()}
    ctx, _ = fx.make_context(cluster, "l7", addons=True, timeout_s=4)
    result = addons.check_kiali_graph(ctx)
    assert result.passed, result.observed
    assert all("refreshInterval=0" in call[1] for call in cluster.calls if call[0] == "get_raw")


# --- Prometheus decision ----------------------------------------------------------------------------------------------


def baseline_of(answer):
    counts, _ = addons.prometheus_counts(roundtrip(answer), SLEEP_PRINCIPAL)
    return {key: float(item["value"]) for key, item in counts.items()}


def test_prometheus_series_that_grew_since_the_baseline_pass_with_their_labels(fx):
    before = baseline_of(fx.PROMETHEUS_L4)
    ok, observed, evidence = assess_prometheus_mtls(roundtrip(fx.prometheus_counted(fx.PROMETHEUS_L4, 3)),
                                                    SLEEP_PRINCIPAL, before)
    assert ok
    assert observed.startswith("2 series of mTLS connections from spiffe://cluster.local/ns/default/sa/sleep grew "
                               "during the check: ")
    assert "source reporter: sleep -> productpage-v1 (spiffe://cluster.local/ns/default/sa/bookinfo-productpage) " \
           "7 -> 10" in observed
    assert evidence["series"][1] == {
        "reporter": "destination", "source_workload": "sleep", "destination_workload": "productpage-v1",
        "destination_principal": fx.PRODUCTPAGE_ID, "value": "10", "baseline": 7.0,
    }


def test_a_counter_above_zero_that_did_not_grow_fails(fx):
    """Before, any value above 0 passed: yesterday's connections, from a Prometheus that has not scraped ztunnel
    since, looked like today's."""
    ok, observed, evidence = assess_prometheus_mtls(roundtrip(fx.PROMETHEUS_L4), SLEEP_PRINCIPAL,
                                                    baseline_of(fx.PROMETHEUS_L4))
    assert not ok
    assert observed.startswith("no istio_tcp_connections_opened_total series from "
                               "spiffe://cluster.local/ns/default/sa/sleep with mutual_tls grew since before the "
                               "check's requests (source reporter: sleep -> productpage-v1 ")
    assert "7 -> 7" in observed and [item["baseline"] for item in evidence["series"]] == [7.0, 7.0]


def test_a_series_new_since_the_baseline_or_restarted_counts_as_growth(fx):
    ok, observed, _ = assess_prometheus_mtls(roundtrip(fx.PROMETHEUS_L7), SLEEP_PRINCIPAL, {})
    assert ok and f"sleep -> {catalog.WAYPOINT_NAME} ({fx.WAYPOINT_ID}) absent -> 4" in observed
    # ztunnel restarted in the same pod: its counter starts over below the baseline, and counts again.
    ok, observed, _ = assess_prometheus_mtls(roundtrip(fx.PROMETHEUS_L7), SLEEP_PRINCIPAL,
                                             baseline_of(fx.prometheus_counted(fx.PROMETHEUS_L7, 500)))
    assert ok and "504 -> 4" in observed


def test_prometheus_through_the_waypoint_names_it(fx):
    ok, observed, evidence = assess_prometheus_mtls(roundtrip(fx.prometheus_counted(fx.PROMETHEUS_L7, 1)),
                                                    SLEEP_PRINCIPAL, baseline_of(fx.PROMETHEUS_L7))
    assert ok and f"sleep -> {catalog.WAYPOINT_NAME}" in observed
    assert evidence["series"][0]["destination_principal"] == fx.WAYPOINT_ID


def test_prometheus_empty_result_fails_and_says_why(fx):
    ok, observed, evidence = assess_prometheus_mtls(roundtrip(fx.PROMETHEUS_EMPTY), SLEEP_PRINCIPAL, {})
    assert not ok and evidence == {"series": []}
    assert observed == (
        "Prometheus has no istio_tcp_connections_opened_total series with source_principal "
        "spiffe://cluster.local/ns/default/sa/sleep and connection_security_policy mutual_tls to productpage-v1 or "
        "productpage-waypoint yet: it scrapes ztunnel every 15 s, so this fills in shortly after traffic; if it stays "
        "empty, check that Prometheus scrapes the ztunnel pods (Status > Targets in its UI)"
    )


def test_prometheus_error_status_is_reported(fx):
    ok, observed, evidence = assess_prometheus_mtls(roundtrip(fx.PROMETHEUS_BAD_QUERY), SLEEP_PRINCIPAL, {})
    assert not ok
    assert observed == ('Prometheus refused the query (bad_data: invalid parameter "query": 1:36: parse error: '
                        'unexpected "=" in label matching)')
    assert evidence["errorType"] == "bad_data"


def test_prometheus_zero_values_other_principals_and_other_destinations_do_not_count(fx):
    zero = fx.prometheus_vector(fx.prometheus_series("source", "productpage-v1", fx.PRODUCTPAGE_ID, "0"))
    ok, observed, _ = assess_prometheus_mtls(roundtrip(zero), SLEEP_PRINCIPAL, {})
    assert not ok and observed.endswith("but every value is 0")
    other = fx.prometheus_vector(fx.prometheus_series("source", "productpage-v1", fx.PRODUCTPAGE_ID, "9",
                                                      source_principal=fx.NOTSLEEP_ID))
    ok, observed, _ = assess_prometheus_mtls(roundtrip(other), SLEEP_PRINCIPAL, {})
    assert not ok and observed.startswith("Prometheus has no istio_tcp_connections_opened_total series")
    details = fx.prometheus_vector(fx.prometheus_series("source", "details-v1", fx.PRODUCTPAGE_ID, "9"))
    ok, observed, _ = assess_prometheus_mtls(roundtrip(details), SLEEP_PRINCIPAL, {})
    assert not ok and observed.startswith("Prometheus has no istio_tcp_connections_opened_total series")
    nan = fx.prometheus_vector(fx.prometheus_series("source", "productpage-v1", fx.PRODUCTPAGE_ID, "NaN"))
    assert not assess_prometheus_mtls(roundtrip(nan), SLEEP_PRINCIPAL, {})[0]


@pytest.mark.parametrize("answer", [[], {"status": "success", "data": {"resultType": "matrix", "result": []}},
                                    {"status": "success"}])
def test_prometheus_answers_of_another_shape_fail(answer):
    ok, observed, _ = assess_prometheus_mtls(answer, SLEEP_PRINCIPAL, {})
    assert not ok and observed.startswith("Prometheus answered")


# --- Kiali decision ---------------------------------------------------------------------------------------------------


def test_l4_only_direct_tcp_edge_with_mtls_passes(fx):
    ok, observed, evidence = assess_kiali_graph(roundtrip(fx.Graph.l4()), "default", "l4-only")
    assert ok, observed
    assert observed == "sleep -> productpage-v1: tcp, mTLS 100%, no waypoint"
    route = evidence["routes"][0]
    assert route["edges"][0] == {"source": "sleep", "target": "productpage-v1", "protocol": "tcp", "isMTLS": "100",
                                 "rates": {"tcp": "412.05"}, "waypoint": None}
    assert (evidence["nodes"], evidence["edges"], evidence["graphType"]) == (4, 3, "workload")  # boxes left out


def test_l4_only_without_mtls_fails(fx):
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l4(mtls=None)), "default", "l4-only")
    assert not ok
    assert observed == ("no direct tcp edge sleep -> productpage-v1 with mTLS "
                        "(seen: sleep -> productpage-v1: tcp, mTLS 0%, no waypoint)")


def test_l4_only_without_a_direct_tcp_edge_fails(fx):
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l7_waypoint_node()), "default", "l4-only")
    assert not ok and observed.startswith("no direct tcp edge sleep -> productpage-v1 with mTLS (seen: ")
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l7_collapsed()), "default", "l4-only")
    assert not ok and observed.startswith("no direct tcp edge sleep -> productpage-v1 with mTLS (seen: ")
    assert "http" in observed


def test_l4_only_after_a_switch_from_l7_passes_on_the_direct_edge(fx):
    """Kiali's 120 s window still holds the waypoint's routes right after l7 -> l4-only: history, not a fault."""
    before, now = fx.Graph.l7_waypoint_node(), fx.Graph.l4()
    nodes = before["elements"]["nodes"] + [n for n in now["elements"]["nodes"] if n not in before["elements"]["nodes"]]
    merged = {**now, "elements": {"nodes": nodes, "edges": before["elements"]["edges"] + now["elements"]["edges"]}}
    ok, observed, _ = assess_kiali_graph(roundtrip(merged), "default", "l4-only")
    assert ok, observed
    assert observed.startswith("sleep -> productpage-v1: tcp, mTLS 100%, no waypoint")
    assert "(also in the window, from before: " in observed


def test_l7_collapsed_edge_with_a_waypoint_field_passes(fx):
    ok, observed, evidence = assess_kiali_graph(roundtrip(fx.Graph.l7_collapsed()), "default", "l7")
    assert ok, observed
    assert observed == "sleep -> productpage-v1: http, mTLS 100%, waypoint field on the edge"
    assert evidence["routes"][0]["edges"][0]["waypoint"] == "to"


def test_l7_through_a_waypoint_node_passes(fx):
    ok, observed, evidence = assess_kiali_graph(roundtrip(fx.Graph.l7_waypoint_node()), "default", "l7")
    assert ok, observed
    assert observed == (f"sleep -> {catalog.WAYPOINT_NAME} -> productpage-v1: http, mTLS 100%/100%, "
                        f"waypoint {catalog.WAYPOINT_NAME}")
    assert evidence["routes"][0]["waypoints"] == [catalog.WAYPOINT_NAME]


def test_l7_as_kiali_draws_it_by_default_passes(fx):
    """The waypoint's HTTP edge goes straight to productpage-v1; ztunnel's TCP edges go through the waypoint node."""
    ok, observed, evidence = assess_kiali_graph(roundtrip(fx.Graph.l7_default()), "default", "l7")
    assert ok, observed
    assert observed == ("sleep -> productpage-v1: http, mTLS 100%, no waypoint; "
                        f"sleep -> {catalog.WAYPOINT_NAME} -> productpage-v1: tcp, mTLS 100%/100%, "
                        f"waypoint {catalog.WAYPOINT_NAME}")
    assert len(evidence["routes"]) == 2


def test_l7_with_tcp_only_fails(fx):
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l7_tcp_only()), "default", "l7")
    assert not ok
    assert observed.startswith("sleep -> productpage-v1 carries only tcp, no http: no waypoint parsed the requests; "
                               "no waypoint productpage-waypoint on the way")
    tcp_via_waypoint = fx.Graph.l7_waypoint_node(protocol="tcp")
    ok, observed, _ = assess_kiali_graph(roundtrip(tcp_via_waypoint), "default", "l7")
    assert not ok and observed.startswith("sleep -> productpage-v1 carries only tcp, no http")


def test_l7_without_mtls_fails(fx):
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l7_waypoint_node(mtls=None)), "default", "l7")
    assert not ok
    assert observed.startswith("the http edge from sleep has no mTLS; the way through waypoint productpage-waypoint "
                               "has no mTLS")


def test_l7_through_another_waypoint_fails(fx):
    other = fx.kiali_node("namespace-waypoint", app="", isWaypoint=True)
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l7_waypoint_node(waypoint=other)), "default", "l7")
    assert not ok
    assert "the traffic goes through waypoint namespace-waypoint, not productpage-waypoint" in observed


@pytest.mark.parametrize("mode", base.MODES)
def test_an_empty_graph_says_to_wait_for_the_traffic_job(fx, mode):
    ok, observed, evidence = assess_kiali_graph(roundtrip(fx.Graph.empty()), "default", mode)
    assert not ok and observed == EMPTY_GRAPH
    assert evidence["nodes"] == 0
    # Boxes alone are no traffic either.
    only_box = fx.kiali_graph([fx.Graph.box], [])
    assert assess_kiali_graph(only_box, "default", mode)[1] == EMPTY_GRAPH
    # Neither is a document with no elements at all.
    assert assess_kiali_graph({"timestamp": 1, "duration": 120, "graphType": "workload",
                               "elements": {"nodes": None, "edges": None}}, "default", mode)[1] == EMPTY_GRAPH


def test_a_graph_without_sleep_says_so(fx):
    graph = fx.kiali_graph([fx.Graph.gateway, fx.Graph.productpage, fx.Graph.details],
                           [fx.kiali_edge(fx.Graph.gateway, fx.Graph.productpage, "tcp")])
    ok, observed, _ = assess_kiali_graph(roundtrip(graph), "default", "l4-only")
    assert not ok
    assert observed == ("Kiali's graph of namespace default has no sleep workload (it shows: bookinfo-gateway-istio, "
                        "details-v1, productpage-v1): Kiali saw no traffic of sleep in the last 120s")


def test_a_graph_without_the_edge_says_where_sleep_went(fx):
    graph = fx.kiali_graph([fx.Graph.sleep, fx.Graph.productpage, fx.Graph.details],
                           [fx.kiali_edge(fx.Graph.sleep, fx.Graph.details, "tcp")])
    ok, observed, _ = assess_kiali_graph(roundtrip(graph), "default", "l4-only")
    assert not ok
    assert observed == "Kiali's graph has sleep and productpage-v1 but no edge between them (sleep's edges go to: " \
                       "details-v1)"


def test_the_namespace_must_match(fx):
    ok, observed, _ = assess_kiali_graph(roundtrip(fx.Graph.l4()), "shop", "l4-only")
    assert not ok and "namespace shop has no sleep workload" in observed


def test_an_injected_service_node_on_the_way_is_accepted(fx):
    service = {"data": {"id": fx._hash("svc-productpage"), "nodeType": "service", "cluster": "Kubernetes",
                        "namespace": "default", "service": "productpage", "isInjected": True}}
    graph = fx.kiali_graph([fx.Graph.sleep, service, fx.Graph.productpage],
                           [fx.kiali_edge(fx.Graph.sleep, service, "tcp"),
                            fx.kiali_edge(service, fx.Graph.productpage, "tcp")])
    ok, observed, _ = assess_kiali_graph(roundtrip(graph), "default", "l4-only")
    assert ok and observed.startswith("sleep -> productpage -> productpage-v1: tcp")


# --- Which checks run -------------------------------------------------------------------------------------------------


def test_the_addon_checks_run_only_with_the_addons():
    without = [spec.name for spec in check_specs()]
    with_addons = check_specs(addons=True)
    assert PROMETHEUS_CHECK not in without and KIALI_CHECK not in without
    assert [spec.name for spec in with_addons][-2:] == [PROMETHEUS_CHECK, KIALI_CHECK]
    assert [spec.name for spec in with_addons if spec.needs_addons] == [PROMETHEUS_CHECK, KIALI_CHECK]
    assert all(spec.modes == frozenset(base.MODES) for spec in with_addons if spec.needs_addons)
    assert PROMETHEUS_CHECK == "prometheus: mTLS connections from sleep"
    assert KIALI_CHECK == "kiali: graph edge sleep -> productpage"


@pytest.mark.parametrize("mode", base.MODES)
def test_a_healthy_lab_with_addons_passes_every_check(fx, healthy, mode):
    cluster = healthy(mode)
    ctx, _ = fx.make_context(cluster, mode, addons=True)
    report = run_checks(ctx)
    assert report.passed, report.summary + "\n" + "\n".join(r.observed for r in report.failed)
    assert [result.name for result in report.results][-2:] == [PROMETHEUS_CHECK, KIALI_CHECK]
    assert len(report.results) == (11 if mode == "l7" else 10)


@pytest.mark.parametrize("mode", base.MODES)
def test_without_addons_nothing_asks_prometheus_or_kiali(fx, healthy, mode):
    cluster = healthy(mode)
    ctx, _ = fx.make_context(cluster, mode)
    report = run_checks(ctx)
    assert report.passed and not [call for call in cluster.calls if call[0] == "get_raw"]


# --- The Prometheus check through the boundary ------------------------------------------------------------------------


def test_prometheus_check_reads_a_baseline_sends_traffic_then_polls_until_the_scrape_shows_growth(fx, healthy):
    cluster = healthy("l4-only")
    grown = fx.prometheus_counted(fx.PROMETHEUS_L4, 3)
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = [fx.PROMETHEUS_L4, fx.PROMETHEUS_L4, fx.PROMETHEUS_L4, grown]
    ctx, clock = fx.make_context(cluster, "l4-only", timeout_s=60)
    result = addons.check_prometheus_mtls(ctx)
    assert result.passed, result.observed
    assert result.evidence["attempts"] == 3 and clock.sleeps == [addons.ADDON_POLL_INTERVAL_S] * 2
    kinds = [call[0] for call in cluster.calls]
    assert kinds == ["get_raw"] + ["exec"] * addons.ADDON_TRAFFIC_REQUESTS + ["get_raw"] * 3
    assert all(call[2] == "deploy/sleep" for call in cluster.calls if call[0] == "exec")
    assert result.evidence["requests_sent"] == {"ok": 3}
    assert result.evidence["query"] == prometheus_mtls_query(SLEEP_PRINCIPAL, "default")
    assert [(series["reporter"], series["baseline"], series["value"]) for series in result.evidence["series"]] == [
        ("source", 7.0, "10"), ("destination", 7.0, "10")]
    query = ("kubectl --context fake get --raw /api/v1/namespaces/istio-system/services/prometheus:9090/proxy/api/v1/"
             "query?query=istio_tcp_connections_opened_total")
    assert result.command[0].startswith(query) and result.command[-1].startswith(query)
    assert result.command[1].startswith("kubectl --context fake exec -n default deploy/sleep -c sleep -- curl")


def test_prometheus_check_fails_when_the_count_stays_where_it_was(fx, healthy):
    """Before, a counter above 0 passed at once: here Prometheus still answers with the count it scraped before it
    stopped scraping ztunnel, and the check's requests never show."""
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = fx.PROMETHEUS_L4
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=60)
    result = addons.check_prometheus_mtls(ctx)
    assert not result.passed
    assert result.observed.startswith("no istio_tcp_connections_opened_total series from")
    assert "waiting for Prometheus to scrape a grown count of ztunnel's mTLS connections" in result.details


def test_prometheus_check_takes_its_baseline_again_when_prometheus_did_not_answer(fx, healthy):
    cluster = healthy("l4-only")
    unavailable = fx.raw_error("ServiceUnavailable", 'no endpoints available for service "prometheus"')
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = [unavailable, fx.PROMETHEUS_L4, fx.prometheus_counted(
        fx.PROMETHEUS_L4, 1)]
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=60)
    result = addons.check_prometheus_mtls(ctx)
    assert result.passed and result.evidence["attempts"] == 2
    assert [call[0] for call in cluster.calls].count("exec") == addons.ADDON_TRAFFIC_REQUESTS


def test_prometheus_check_times_out_with_the_last_answer(fx, healthy):
    cluster = healthy("l7")
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = fx.PROMETHEUS_EMPTY
    ctx, clock = fx.make_context(cluster, "l7", timeout_s=30)
    result = addons.check_prometheus_mtls(ctx)
    assert not result.passed
    assert result.observed.startswith("Prometheus has no istio_tcp_connections_opened_total series")
    assert result.details.startswith("Timed out after") and \
        "waiting for Prometheus to scrape a grown count of ztunnel's mTLS connections" in result.details
    assert len(clock.sleeps) >= 4


def test_prometheus_not_ready_is_retried_then_reported_in_one_sentence(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = fx.raw_error("ServiceUnavailable",
                                                            'no endpoints available for service "prometheus"')
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=12)
    result = addons.check_prometheus_mtls(ctx)
    assert addons.ADDON_POLL_INTERVAL_S == 3
    assert not result.passed and result.evidence["attempts"] == 4  # at once, then every 3 s within the 12 s
    assert result.observed == (
        "The prometheus Service did not answer through the API server's service proxy (Error from server "
        '(ServiceUnavailable): no endpoints available for service "prometheus"); check that the prometheus pod in '
        "istio-system is Running and Ready")


def test_prometheus_check_survives_failed_requests(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_reset()
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = addons.check_prometheus_mtls(ctx)
    assert result.passed and result.evidence["requests_sent"] == {"reset": 3}


# --- The Kiali check through the boundary -----------------------------------------------------------------------------


def test_kiali_503_while_starting_is_retried(fx, healthy):
    cluster = healthy("l7")
    unavailable = fx.raw_error("ServiceUnavailable", fx.KIALI_UNAVAILABLE)
    cluster.raw_answers[fx.KIALI_PROXY] = [unavailable, unavailable, fx.Graph.l7_waypoint_node()]
    ctx, clock = fx.make_context(cluster, "l7", timeout_s=60)
    result = addons.check_kiali_graph(ctx)
    assert result.passed, result.observed
    assert result.evidence["attempts"] == 3 and clock.sleeps == [addons.ADDON_POLL_INTERVAL_S] * 2
    # Traffic first, then one more request before every look, so Kiali's rates stay fresh.
    kinds = [call[0] for call in cluster.calls]
    assert kinds == ["exec", "exec", "exec", "get_raw", "exec", "get_raw", "exec", "get_raw"]
    assert result.evidence["requests_sent"] == {"ok": 5}
    assert [call[1] for call in cluster.calls if call[0] == "get_raw"] == [kiali_graph_path("default")] * 3
    assert "waypoint productpage-waypoint" in result.observed


def test_kiali_that_never_answers_is_one_sentence(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.raw_error("ServiceUnavailable", fx.KIALI_UNAVAILABLE)
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=20)
    result = addons.check_kiali_graph(ctx)
    assert not result.passed and result.observed == KIALI_503
    assert "\n" not in result.observed and result.details.endswith(f"last seen: {KIALI_503}")


def test_kiali_empty_graph_until_the_timeout_reports_the_helpful_message(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.Graph.empty()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=20)
    result = addons.check_kiali_graph(ctx)
    assert not result.passed and result.observed == EMPTY_GRAPH
    assert "waiting for Kiali's graph to show sleep -> productpage-v1" in result.details


def test_kiali_graph_filling_in_passes(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = [fx.Graph.empty(), fx.Graph.l4()]
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = addons.check_kiali_graph(ctx)
    assert result.passed and result.evidence["attempts"] == 2
    assert result.expected == ("a direct tcp edge sleep -> productpage-v1 in Kiali's graph (120s) with mTLS and no "
                               "waypoint")


def test_kiali_l7_expectation_in_words(fx, healthy):
    ctx, _ = fx.make_context(healthy("l7"), "l7")
    result = addons.check_kiali_graph(ctx)
    assert result.passed
    assert result.expected == ("sleep -> productpage-v1 in Kiali's graph (120s) with http on sleep's side, through "
                               "waypoint productpage-waypoint, mTLS")


def test_kiali_answering_html_is_reported(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = "<html><body>Kiali is starting</body></html>"
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = addons.check_kiali_graph(ctx)
    assert not result.passed
    assert result.observed == ("The kiali Service answered with something that is not JSON: "
                               "'<html><body>Kiali is starting</body></html>'")


def test_l7_graph_in_the_l4_stack_fails_the_check(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.Graph.l7_waypoint_node()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=6)
    result = addons.check_kiali_graph(ctx)
    assert not result.passed and "no direct tcp edge sleep -> productpage-v1 with mTLS" in result.observed


def test_addon_polls_wait_no_longer_than_the_scrape_interval_requires(fx, healthy):
    """Prometheus shows new requests at the next scrape (one may be missed), Kiali's rate needs one sample more; a
    longer --timeout does not make them wait longer than that."""
    assert catalog.PROMETHEUS_SCRAPE_INTERVAL_S == 15
    for check, wait_s, path, empty in (
            (addons.check_prometheus_mtls, 45, fx.PROMETHEUS_PROXY, fx.PROMETHEUS_EMPTY),
            (addons.check_kiali_graph, 60, fx.KIALI_PROXY, fx.Graph.empty())):
        cluster = healthy("l4-only")
        cluster.raw_answers[path] = empty
        ctx, clock = fx.make_context(cluster, "l4-only", timeout_s=300)
        result = check(ctx)
        assert not result.passed
        assert wait_s - addons.ADDON_POLL_INTERVAL_S <= sum(clock.sleeps) <= wait_s
        assert f"(limit {wait_s} s)" in result.details


# --- Where the API server's service proxy cannot reach the addons (private control planes) ----------------------------


def test_prometheus_behind_a_private_control_plane_is_read_through_a_port_forward(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = fx.raw_error("ServiceUnavailable",
                                                            fx.PROXY_DIAL_TIMEOUT.format(port=9090))
    cluster.forward_answers["/api/v1/query?"] = [fx.HttpResponse((), 200, json.dumps(answer)) for answer in (
        fx.PROMETHEUS_L4, fx.prometheus_counted(fx.PROMETHEUS_L4, 3))]
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = addons.check_prometheus_mtls(ctx)
    assert result.passed, result.observed
    forwards = [call for call in cluster.calls if call[0] == "forward"]
    assert forwards[0][1:5] == ("istio-system", "svc/prometheus", 9090, prometheus_query_path(
        prometheus_mtls_query(SLEEP_PRINCIPAL, "default")).split("/proxy", 1)[1])
    assert any("port-forward -n istio-system svc/prometheus" in command for command in result.command)


def test_a_proxy_that_cannot_reach_and_a_failing_port_forward_are_one_sentence(fx, healthy):
    cluster = healthy("l4-only")
    reason = fx.PROXY_DIAL_TIMEOUT.format(port=9090)
    cluster.raw_answers[fx.PROMETHEUS_PROXY] = fx.raw_error("ServiceUnavailable", reason)
    cluster.forward_answers["/api/v1/query?"] = fx.ClusterError(
        "`kubectl port-forward -n istio-system svc/prometheus 40000:9090` exited early: error: unable to forward port "
        "because pod is not running. Current status=Pending")
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = addons.check_prometheus_mtls(ctx)
    assert not result.passed
    assert result.observed == (
        f"The API server cannot reach the prometheus pod through its service proxy (Error from server "
        f"(ServiceUnavailable): {reason}) and a port-forward to svc/prometheus in istio-system failed too "
        "(`kubectl port-forward -n istio-system svc/prometheus 40000:9090` exited early: error: unable to forward "
        "port because pod is not running. Current status=Pending); check that the prometheus pod is Running and Ready")


def test_an_addon_without_a_ready_pod_is_not_port_forwarded(fx, healthy):
    cluster = healthy("l4-only")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.raw_error("ServiceUnavailable", fx.KIALI_UNAVAILABLE)
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = addons.check_kiali_graph(ctx)
    assert not result.passed and result.observed == KIALI_503
    assert not [call for call in cluster.calls if call[0] == "forward"]


def test_anonymous_kiali_behind_a_private_control_plane_is_read_through_a_port_forward(fx, healthy):
    cluster = healthy("l7")
    cluster.raw_answers[fx.KIALI_PROXY] = fx.raw_error("ServiceUnavailable", fx.PROXY_DIAL_TIMEOUT.format(port=20001))
    cluster.forward_answers["/kiali/api/namespaces/graph?"] = fx.HttpResponse(
        (), 200, json.dumps(fx.Graph.l7_waypoint_node()))
    ctx, _ = fx.make_context(cluster, "l7")
    result = addons.check_kiali_graph(ctx)
    assert result.passed, result.observed
    assert [call[2] for call in cluster.calls if call[0] == "forward"] == ["svc/kiali"]


# --- A Kiali that asks for a login (an existing cluster) --------------------------------------------------------------


def kiali_with_login(fx, healthy, mode, graph):
    cluster = healthy(mode)
    del cluster.raw_answers[fx.KIALI_PROXY]  # anything through the proxy would be a mistake: NotFound
    cluster.forward_answers = {"/kiali/api/authenticate": fx.kiali_login_answer,
                               "/kiali/api/namespaces/graph?": fx.kiali_graph_answer(graph)}
    ctx, clock = fx.make_context(cluster, mode, addons=True)
    ctx.kiali_login = True
    return cluster, ctx, clock


@pytest.mark.parametrize("mode", base.MODES)
def test_kiali_with_a_login_is_signed_in_with_a_kiali_token_and_the_token_is_never_shown(fx, healthy, mode):
    graph = fx.Graph.l7_waypoint_node() if mode == "l7" else fx.Graph.l4()
    cluster, ctx, _ = kiali_with_login(fx, healthy, mode, graph)
    report = run_checks(ctx)
    assert report.passed, report.summary + "\n" + "\n".join(r.observed for r in report.failed)
    assert ("create_token", "istio-system", "kiali", 600) in cluster.calls
    login, graph_call = [call for call in cluster.calls if call[0] == "forward"]
    assert login[4] == "/kiali/api/authenticate" and login[5]["token"].startswith(fx.FAKE_TOKEN)
    assert graph_call[4] == kiali_graph_path("default").split("/proxy", 1)[1] and graph_call[6] == fx.KIALI_SESSION
    assert not [call for call in cluster.calls if call[0] == "get_raw" and "kiali" in call[1]]
    text = report.to_json()
    assert fx.FAKE_TOKEN not in text and "c2VhbGVkLXNlc3Npb24" not in text
    kiali = next(result for result in report.results if result.name == KIALI_CHECK)
    assert kiali.command[-1].startswith("GET http://127.0.0.1:40000/kiali/api/namespaces/graph?")


def test_kiali_refusing_the_token_is_one_sentence(fx, healthy):
    cluster, ctx, _ = kiali_with_login(fx, healthy, "l4-only", fx.Graph.l4())
    cluster.forward_answers["/kiali/api/authenticate"] = fx.HttpResponse(
        (), 401, json.dumps({"error": "not enough privileges to login"}))
    ctx.timeout_s = 4
    result = addons.check_kiali_graph(ctx)
    assert not result.passed
    assert result.observed == ("Kiali refused the token of service account kiali in istio-system (HTTP 401: not "
                               "enough privileges to login)")


def test_no_right_to_mint_a_kiali_token_is_one_sentence_without_a_token(fx, healthy):
    cluster, ctx, _ = kiali_with_login(fx, healthy, "l4-only", fx.Graph.l4())
    reason = ('error: failed to create token: serviceaccounts "kiali" is forbidden: User "dev" cannot create '
              'resource "serviceaccounts/token" in API group "" in the namespace "istio-system"')
    cluster.token_error = fx.ClusterError(f"`kubectl create token kiali` failed: {reason}", reason)
    ctx.timeout_s = 4
    result = addons.check_kiali_graph(ctx)
    assert not result.passed
    assert result.observed == ("Could not sign in to Kiali with a token of service account kiali in istio-system "
                               f"({reason})")


def test_a_kiali_session_that_ends_is_opened_again(fx, healthy):
    cluster, ctx, _ = kiali_with_login(fx, healthy, "l4-only", fx.Graph.l4())
    graph = cluster.forward_answers["/kiali/api/namespaces/graph?"]
    cluster.forward_answers["/kiali/api/namespaces/graph?"] = [fx.HttpResponse((), 401, '{"error":"Unauthorized"}'),
                                                               graph]
    result = addons.check_kiali_graph(ctx)
    assert result.passed, result.observed
    assert [call[0] for call in cluster.calls].count("create_token") == 2
