"""The checks' decision logic against recorded cluster outputs, through a fake boundary (no kubectl, no waiting)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from lab import catalog
from verify import checks
from verify.checks import (
    base,
    certificates,
    check_specs,
    enrolment,
    l7_path,
    run_checks,
    stack_outputs,
    strict_mtls,
    traffic,
    ztunnel_logs,
)
from verify.checks.base import EMPTY_REPLY, FORBIDDEN, OK, OTHER, RESET, ztunnel_for_node
from verify.checks.enrolment import assess_enrolment
from verify.checks.l7_path import envoy_markers
from verify.checks.traffic import TRAFFIC_CASES, classify_curl, curl_argv
from verify.checks.ztunnel_logs import (
    assess_log_pair,
    mirrors,
    only_line,
    port_of,
    probe_client_lines,
    probe_server_lines,
    waypoint_server_lines,
)
from verify.cluster import ExecResult
from verify.evidence import parse_ztunnel_access_log
from verify.report import CheckResult

# --- classify_curl -----------------------------------------------------------------------------------------------


def classify(result: ExecResult):
    return classify_curl(result.exit_code, result.stdout, result.stderr)


def test_classify_ok_page_with_title(fx):
    outcome = classify(fx.curl_page())
    assert (outcome.kind, outcome.curl_exit, outcome.http_code) == (OK, 0, 200)
    assert outcome.title == "Simple Bookstore App"
    assert outcome.headers["server"] == "gunicorn"


def test_classify_reset_is_exit_56_and_code_000(fx):
    outcome = classify(fx.curl_reset())
    assert (outcome.kind, outcome.curl_exit, outcome.http_code) == (RESET, 56, None)
    assert "curl exit 56, http_code 000" in outcome.detail


def test_classify_empty_reply(fx):
    assert classify(fx.curl_empty_reply()).kind == EMPTY_REPLY


def test_classify_rbac_forbidden(fx):
    outcome = classify(fx.curl_forbidden())
    assert (outcome.kind, outcome.http_code) == (FORBIDDEN, 403)
    assert outcome.headers["server"] == "istio-envoy"


def test_classify_403_without_rbac_body_is_other(fx):
    outcome = classify(fx.curl_page(status="403 Forbidden", body="go away"))
    assert outcome.kind == OTHER and outcome.detail.startswith("HTTP 403")


def test_classify_kubectl_failure_is_other_without_curl_exit(fx):
    outcome = classify(fx.exec_failure())
    assert outcome.kind == OTHER and outcome.curl_exit is None
    assert "curl did not run" in outcome.detail and "container not found" in outcome.detail


def test_classify_other_curl_errors():
    outcome = classify_curl(6, "\nverify-http-code:000\n",
                            "curl: (6) Could not resolve host: productpage\ncommand terminated with exit code 6\n")
    assert outcome.kind == OTHER and outcome.curl_exit == 6
    assert outcome.detail == "curl: (6) Could not resolve host: productpage"


def test_classify_uses_final_response_after_100_continue(fx):
    page = fx.curl_page()
    outcome = classify_curl(0, "HTTP/1.1 100 Continue\r\n\r\n" + page.stdout, "")
    assert outcome.kind == OK and outcome.headers["server"] == "gunicorn"


def test_curl_argv_forces_a_new_connection_and_prints_the_code():
    argv = curl_argv("DELETE", "http://productpage:9080/productpage")
    assert argv[0] == "curl" and "Connection: close" in argv
    assert argv[argv.index("-X") + 1] == "DELETE"
    assert "%{http_code}" in argv[argv.index("-w") + 1]
    assert "-X" not in curl_argv("GET", "http://x")


# --- ztunnel_for_node, enrolment ----------------------------------------------------------------------------------


def test_ztunnel_for_node_picks_the_running_pod_on_that_node(fx):
    pods = fx.pod_list(
        fx.pod("ztunnel-old", app="ztunnel", node="n1", phase="Failed"),
        fx.pod("ztunnel-b", app="ztunnel", node="n1"),
        fx.pod("ztunnel-c", app="ztunnel", node="n2"),
    )
    assert ztunnel_for_node(pods, "n1") == "ztunnel-b"
    assert ztunnel_for_node(pods, "n2") == "ztunnel-c"
    assert ztunnel_for_node(pods, "n3") is None
    terminating = fx.pod("ztunnel-b", app="ztunnel", node="n1")
    terminating["metadata"]["deletionTimestamp"] = "2026-10-02T09:00:00Z"
    assert ztunnel_for_node(fx.pod_list(terminating), "n1") is None


def app_pods(fx, **overrides):
    pods = [fx.pod(f"{app}-1", app=app) for app in enrolment.REQUIRED_APPS]
    return pods


def test_enrolment_passes_and_skips_gateway_pods(fx):
    pods = app_pods(fx) + [fx.pod("productpage-waypoint-1", enrolled=False,
                                  labels={base.GATEWAY_NAME_LABEL: catalog.WAYPOINT_NAME})]
    seen = assess_enrolment(fx.pod_list(*pods), fx.pod_list(fx.pod("outside-1", enrolled=False)))
    assert seen.ok, seen.observed
    assert "6 app pods enrolled" in seen.observed
    assert [item["pod"] for item in seen.evidence["outside_pods"]] == ["outside-1"]


def test_enrolment_fails_on_a_pod_without_redirection(fx):
    pods = app_pods(fx) + [fx.pod("ratings-v1-2", app="ratings", enrolled=False)]
    seen = assess_enrolment(fx.pod_list(*pods), fx.pod_list())
    assert not seen.ok and not seen.settled
    assert "ratings-v1-2 is not enrolled (ambient.istio.io/redirection=None)" in seen.observed


def test_enrolment_ignores_pods_that_are_not_the_labs_apps(fx):
    """The traffic CronJob's finished pods (and anything else in an existing namespace) are not judged."""
    pods = app_pods(fx) + [fx.pod("bookinfo-traffic-29001-x", app="bookinfo-traffic", phase="Succeeded"),
                           fx.pod("someone-elses", app="billing", enrolled=False)]
    seen = assess_enrolment(fx.pod_list(*pods), fx.pod_list())
    assert seen.ok, seen.observed
    assert "bookinfo-traffic" not in seen.observed and "someone-elses" not in seen.observed


def test_enrolment_restart_fails_and_settles(fx):
    pods = app_pods(fx)
    pods[0] = fx.pod("details-1", app="details", restarts=2)
    seen = assess_enrolment(fx.pod_list(*pods), fx.pod_list())
    assert not seen.ok and seen.settled
    assert "details-1 container details restarted 2 time(s)" in seen.observed


def test_enrolment_fails_on_missing_apps_and_enrolled_outside_client(fx):
    pods = [item for item in app_pods(fx) if item["metadata"]["labels"]["app"] != "notsleep"]
    seen = assess_enrolment(fx.pod_list(*pods), fx.pod_list(fx.pod("outside-1")))
    assert "no pod for app notsleep" in seen.observed
    assert "outside pod outside-1 is enrolled" in seen.observed


def test_enrolment_check_retries_until_pods_run(fx):
    pending = [fx.pod(f"{app}-1", app=app, phase="Pending", enrolled=False) for app in enrolment.REQUIRED_APPS]
    running = app_pods(fx)
    answers = [fx.pod_list(*pending), fx.pod_list(*pending), fx.pod_list(*running)]
    cluster = fx.FakeCluster()
    cluster.pods = lambda namespace, selector=None: answers.pop(0) if namespace == "default" else fx.pod_list()
    ctx, clock = fx.make_context(cluster, "l4-only")
    result = enrolment.check_enrolment(ctx)
    assert result.passed, result.observed
    assert result.evidence["attempts"] == 3 and clock.sleeps == [2.0, 2.0]


def test_enrolment_check_stops_at_once_on_a_restart(fx, healthy):
    cluster = healthy("l4-only")
    cluster.pods_by_namespace["default"][0]["status"]["containerStatuses"][0]["restartCount"] = 1
    ctx, clock = fx.make_context(cluster, "l4-only")
    result = enrolment.check_enrolment(ctx)
    assert not result.passed and clock.sleeps == []
    assert "retrying cannot change this" in result.details


# --- traffic matrix ----------------------------------------------------------------------------------------------


def case(client: str, method: str = "GET"):
    return next(item for item in TRAFFIC_CASES if item.client == client and item.method == method)


@pytest.mark.parametrize("mode", base.MODES)
def test_every_traffic_case_passes_on_a_healthy_lab(fx, healthy, mode):
    cluster = healthy(mode)
    for item in TRAFFIC_CASES:
        if mode not in item.expect:
            continue
        ctx, _ = fx.make_context(cluster, mode)
        result = traffic.check_traffic(ctx, item)
        assert result.passed, f"{item.name} in {mode}: {result.observed}"
        assert result.evidence["attempts"] == traffic.TRAFFIC_CONSECUTIVE


def test_notsleep_getting_200_in_l4_only_fails_with_the_observation(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = fx.curl_page()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=6)
    result = traffic.check_traffic(ctx, case("notsleep"))
    assert not result.passed
    assert result.observed == "HTTP 200, title 'Simple Bookstore App'"
    assert result.expected.startswith("connection closed by ztunnel's L4 policy")
    assert "Timed out after" in result.details and "waiting for 2 answers in a row of: connection closed" in \
        result.details and "last seen: HTTP 200" in result.details
    assert result.command and "deploy/notsleep" in result.command[0] and "Connection: close" in result.command[0]


@pytest.mark.parametrize("closed, seen", [("curl_reset", "curl exit 56"), ("curl_empty_reply", "curl exit 52")])
def test_an_l4_deny_is_accepted_as_reset_or_empty_reply_and_says_which(fx, healthy, closed, seen):
    """Before, an empty reply (curl exit 52) from ztunnel's L4 deny failed the check although Istio accepts it."""
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = getattr(fx, closed)()
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = traffic.check_traffic(ctx, case("notsleep"))
    assert result.passed and seen in result.observed
    assert result.evidence["curl_exit"] == int(seen[-2:])


def test_a_policy_that_propagates_late_passes_after_retries(fx, healthy):
    cluster = healthy("l7")
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = [fx.curl_page(envoy=True)] * 3 + [
        fx.curl_forbidden()]
    ctx, clock = fx.make_context(cluster, "l7")
    result = traffic.check_traffic(ctx, case("notsleep"))
    assert result.passed and result.evidence["attempts"] == 5
    assert len(clock.sleeps) == 4


def test_one_good_answer_is_not_stable_enough(fx, healthy):
    cluster = healthy("l7")
    flapping = [fx.curl_forbidden(), fx.curl_page(envoy=True)] * 20
    cluster.exec_answers[("default", "deploy/notsleep", "GET")] = flapping
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=10)
    assert not traffic.check_traffic(ctx, case("notsleep")).passed


def test_sleep_delete_allowed_in_l7_fails(fx, healthy):
    cluster = healthy("l7")
    not_allowed = fx.curl_page(envoy=True, status="405 METHOD NOT ALLOWED", body="Method Not Allowed")
    cluster.exec_answers[("default", "deploy/sleep", "DELETE")] = not_allowed
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = traffic.check_traffic(ctx, case("sleep", "DELETE"))
    assert not result.passed and result.observed.startswith("HTTP 405")


# --- STRICT mTLS ---------------------------------------------------------------------------------------------------

OUTSIDE_GET = (catalog.OUTSIDE_NAMESPACE, f"deploy/{catalog.OUTSIDE_CLIENT}", "GET")
SLEEP_GET_DETAILS = ("default", "deploy/sleep", "GET", "http://details:9080/details/0")


def details_ztunnel_writes(fx, cluster, line_for_port):
    """Make the ztunnel on details' node log `line_for_port(port)` for each of outside-client's probes."""
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = lambda: "\n".join(
        fx.stamped(line_for_port(port), when) for target, _, port, when in cluster.probes()
        if target == f"deploy/{catalog.OUTSIDE_CLIENT}")


@pytest.mark.parametrize("mode", base.MODES)
def test_strict_passes_with_control_refusal_and_strict_log_line(fx, healthy, mode):
    cluster = healthy(mode)
    ctx, _ = fx.make_context(cluster, mode)
    result = strict_mtls.check_strict_mtls(ctx)
    assert result.passed, result.observed
    assert result.name == "strict mtls: plaintext to details refused by STRICT"
    port = result.evidence["probe"]["local_port"]
    assert result.evidence["entry"]["src_addr"].endswith(f":{port}")
    assert result.evidence["control"]["http_code"] == 200
    assert "explicitly denied by: istio-system/istio_converted_static_strict" in result.observed
    outside = [call for call in cluster.calls if call[0] == "exec" and call[1] == catalog.OUTSIDE_NAMESPACE]
    assert outside[0][4][-1] == "http://details.default.svc.cluster.local:9080/details/0"
    assert outside[0][4][outside[0][4].index("--local-port") + 1] == str(port)
    assert ("logs", "istio-system", fx.ZTUNNEL_CLIENT) == next(c for c in cluster.calls if c[0] == "logs")[:3]


def test_strict_fails_when_details_is_down_although_the_outside_client_is_reset(fx, healthy):
    """Before, a details that did not listen passed: the outside client saw a reset either way."""
    cluster = healthy("l4-only")
    cluster.exec_answers[SLEEP_GET_DETAILS] = fx.curl_reset()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = strict_mtls.check_strict_mtls(ctx)
    assert not result.passed
    assert result.observed == "positive control failed: sleep got connection reset (curl exit 56, http_code 000) " \
                              "from details"


def test_strict_fails_when_another_policy_refused_the_plaintext(fx, healthy):
    """Before, any refusal passed: here a DENY policy, not STRICT, closed the connection."""
    cluster = healthy("l4-only")
    details_ztunnel_writes(fx, cluster, lambda port: fx.from_port(fx.LINE_STRICT_REFUSAL_DETAILS, port).replace(
        "istio-system/istio_converted_static_strict", "default/deny-outside"))
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = strict_mtls.check_strict_mtls(ctx)
    assert not result.passed
    assert result.observed.endswith("but ztunnel refused the probe with 'connection closed due to policy rejection: "
                                    "explicitly denied by: default/deny-outside', not by "
                                    "istio-system/istio_converted_static_strict")


def test_strict_fails_when_only_an_earlier_connection_was_refused_by_strict(fx, healthy):
    """Before, no log line was read at all; a STRICT line from another port proves nothing about the probe, however
    recent. (Its time is not compared with this machine's: the log read covers only the seconds since the probe.)"""
    cluster = healthy("l4-only")
    other_port = fx.stamped(fx.from_port(fx.LINE_STRICT_REFUSAL_DETAILS, 38870), fx.NOW)
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = other_port
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = strict_mtls.check_strict_mtls(ctx)
    assert not result.passed
    port = result.evidence["probe"]["local_port"]
    assert result.observed == (f"connection reset (curl exit 56, http_code 000), but no inbound line from port {port} "
                               f"to {fx.DETAILS_POD} on {fx.ZTUNNEL_CLIENT}")


def test_strict_fails_when_ztunnel_let_the_plaintext_through_to_a_dead_port(fx, healthy):
    """Without STRICT, ztunnel lets plaintext through and logs the failed connect: not a STRICT refusal."""
    cluster = healthy("l4-only")
    details_ztunnel_writes(fx, cluster, lambda port: fx.from_port(fx.LINE_STRICT_REFUSAL_DETAILS, port).replace(
        "connection closed due to policy rejection: explicitly denied by: istio-system/istio_converted_static_strict",
        "connection failed: Connection refused (os error 111)"))
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = strict_mtls.check_strict_mtls(ctx)
    assert not result.passed and "'connection failed: Connection refused (os error 111)', not by" in result.observed


def test_strict_fails_when_the_outside_client_is_answered(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[OUTSIDE_GET] = fx.curl_details()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = strict_mtls.check_strict_mtls(ctx)
    assert not result.passed and result.observed.startswith("outside-client's plaintext request was not refused: HTTP")
    assert "STRICT" in result.details


def test_strict_accepts_an_empty_reply(fx, healthy):
    cluster = healthy("l7")
    cluster.exec_answers[OUTSIDE_GET] = fx.curl_empty_reply()
    ctx, _ = fx.make_context(cluster, "l7")
    result = strict_mtls.check_strict_mtls(ctx)
    assert result.passed and "empty reply from server (curl exit 52)" in result.observed


def test_sleep_page_with_a_wrong_title_fails(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_page(body="<title>Oops</title>")
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = traffic.check_traffic(ctx, case("sleep"))
    assert not result.passed and result.observed == "HTTP 200, title 'Oops'"


def test_clients_are_execd_by_deployment_and_container(fx, healthy):
    cluster = healthy("l4-only")
    ctx, _ = fx.make_context(cluster, "l4-only")
    traffic.check_traffic(ctx, case("sleep"))
    call = next(call for call in cluster.calls if call[0] == "exec")
    assert call[1:4] == ("default", "deploy/sleep", "sleep")
    assert call[4][-1] == "http://productpage:9080/productpage"


# --- certificates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("app", certificates.CERTIFICATE_WORKLOADS)
def test_certificate_check_reads_the_ztunnel_on_the_workloads_node(fx, healthy, app):
    cluster = healthy("l4-only")
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = certificates.check_certificate(ctx, app)
    assert result.passed, result.observed
    expected_ztunnel = fx.ZTUNNEL_CLIENT if app == "sleep" else fx.ZTUNNEL_SERVER
    assert [call[2] for call in cluster.calls if call[0] == "http_get"] == [expected_ztunnel]
    assert ("http_get", "istio-system", expected_ztunnel, 15000, "/config_dump") in cluster.calls
    certificate = result.evidence["certificate"]
    assert certificate["issuer"] == "O=cluster.local" and certificate["chains_to_root"]
    assert result.evidence["ztunnel_pod"] == expected_ztunnel
    assert "SAN spiffe://cluster.local/ns/default/sa/" in result.observed and "chains to root" in result.observed
    assert any("port-forward" in command for command in result.command)


def test_certificate_initializing_then_available(fx, healthy):
    cluster = healthy("l4-only")
    ready = cluster.config_dumps[fx.ZTUNNEL_CLIENT]
    cluster.config_dumps[fx.ZTUNNEL_CLIENT] = [
        {"certificates": [{"identity": fx.SLEEP_ID, "state": "Initializing", "certChain": [], "rootCerts": []}]},
        ready,
    ]
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = certificates.check_certificate(ctx, "sleep")
    assert result.passed and result.evidence["attempts"] == 2


def test_certificate_with_wrong_san_fails(fx, healthy, root_ca):
    cluster = healthy("l4-only")
    wrong = fx.mint_leaf(root_ca, [fx.NOTSLEEP_ID])
    cluster.config_dumps[fx.ZTUNNEL_CLIENT] = {
        "certificates": [fx.certificate_entry(fx.SLEEP_ID, [wrong], [root_ca.certificate])]}
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    result = certificates.check_certificate(ctx, "sleep")
    assert not result.passed and "URI SANs are ['spiffe://cluster.local/ns/default/sa/notsleep']" in result.observed


def test_certificate_missing_from_that_ztunnel_lists_what_it_holds(fx, healthy):
    cluster = healthy("l4-only")
    cluster.config_dumps[fx.ZTUNNEL_CLIENT] = cluster.config_dumps[fx.ZTUNNEL_SERVER]
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    result = certificates.check_certificate(ctx, "sleep")
    assert not result.passed and "holds no certificate for spiffe://cluster.local/ns/default/sa/sleep" in \
        result.observed and fx.PRODUCTPAGE_ID in result.observed


def test_corrupted_config_dump_is_reported(fx, healthy):
    cluster = healthy("l4-only")
    cluster.config_dumps[fx.ZTUNNEL_CLIENT] = "this is not json"
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    result = certificates.check_certificate(ctx, "sleep")
    assert not result.passed and "/config_dump is not JSON" in result.observed


def test_no_ztunnel_on_the_node(fx, healthy):
    cluster = healthy("l4-only")
    cluster.pods_by_namespace["istio-system"] = cluster.pods_by_namespace["istio-system"][1:]
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    result = certificates.check_certificate(ctx, "sleep")
    assert not result.passed and result.observed == "no running ztunnel pod on node lab-worker"


# --- ztunnel log evidence ------------------------------------------------------------------------------------------


def at_now(fx, line, port=None, seconds=0.0):
    """A fixture line as logged at the time the checks run (fx.NOW), from `port` when given."""
    import datetime as dt

    return fx.stamped(fx.from_port(line, port) if port else line, fx.NOW + dt.timedelta(seconds=seconds))


def entries_of(*lines):
    return parse_ztunnel_access_log("\n".join(lines))


def test_port_of_reads_ipv4_and_ipv6_addresses():
    assert port_of("10.244.1.7:40312") == 40312
    assert port_of("[fd00:10:244::7]:40312") == 40312
    assert port_of(None) is None and port_of("10.244.1.7") is None


def test_probe_client_line_is_the_one_from_the_probes_port(fx):
    """Before, the latest sleep -> productpage line won, whichever request it was. The line's time does not count:
    the node's clock may be minutes off this machine's, and the log read covers only the seconds since the probe."""
    mine = at_now(fx, fx.LINE_131_OUTBOUND, 23456, seconds=-600)
    entries = entries_of(mine, fx.LINE_131_OUTBOUND, at_now(fx, fx.LINE_131_OUTBOUND, 23457))
    assert probe_client_lines(entries, fx.SLEEP_POD, 23456) == entries_of(mine)
    assert probe_client_lines(entries, fx.NOTSLEEP_POD, 23456) == []


def test_probe_server_line_mirrors_the_client_lines_bytes(fx):
    """The server side's src.addr is the pooled HBONE connection: only bytes and identities tie it to the probe. An
    inbound line of another sleep request (another response size) is not the probe's."""
    (client,) = entries_of(at_now(fx, fx.LINE_131_OUTBOUND, 23456))
    mine = at_now(fx, fx.LINE_131_INBOUND, seconds=420)  # the server node's clock says 7 minutes later: no matter
    other_response = at_now(fx, fx.LINE_131_INBOUND.replace("bytes_sent=5002", "bytes_sent=4688"))
    entries = entries_of(other_response, mine)
    assert probe_server_lines(entries, client, fx.PRODUCTPAGE_POD) == entries_of(mine)
    assert mirrors(client, entries_of(mine)[0]) and not mirrors(client, entries_of(other_response)[0])
    # The same bytes from another client are not the probe's either.
    notsleep = at_now(fx, fx.LINE_131_INBOUND.replace(fx.SLEEP_POD, fx.NOTSLEEP_POD).replace(fx.SLEEP_ID,
                                                                                          fx.NOTSLEEP_ID))
    assert probe_server_lines(entries_of(notsleep), client, fx.PRODUCTPAGE_POD) == []


def test_waypoint_server_line_is_one_open_while_the_client_lines_connection_was(fx):
    """The window is the client line's own (its close minus its 14 ms), by the cluster's clocks, not this machine's."""
    (client,) = entries_of(at_now(fx, fx.LINE_WAYPOINT_OUTBOUND, 23456, seconds=-300))
    open_then = at_now(fx, fx.LINE_WAYPOINT_INBOUND, seconds=-300 + 2.1)  # opened 2093 ms before it closed
    closed_before = at_now(fx, fx.LINE_WAYPOINT_INBOUND, seconds=-305)
    opened_after = at_now(fx, fx.LINE_WAYPOINT_INBOUND, seconds=-295)
    at_machine_time = at_now(fx, fx.LINE_WAYPOINT_INBOUND, seconds=2.1)  # what a window on this machine's clock took
    entries = entries_of(open_then, closed_before, opened_after, at_machine_time)
    assert waypoint_server_lines(entries, fx.PRODUCTPAGE_POD, [fx.WAYPOINT_POD], client) == entries_of(open_then)


def test_the_first_waypoint_server_line_without_an_error_stands_for_them(fx):
    """Before, the first candidate stood for them all, even one the server's ztunnel logged with an error."""
    failed, good = entries_of(
        at_now(fx, fx.LINE_WAYPOINT_INBOUND.replace('duration="2093ms"',
                                                     'duration="2093ms" error="connection reset by peer"')),
        at_now(fx, fx.LINE_WAYPOINT_INBOUND))
    assert ztunnel_logs.first_without_error([failed, good]) is good
    assert ztunnel_logs.first_without_error([failed]) is failed
    assert ztunnel_logs.first_without_error([]) is None


def test_only_line_refuses_none_and_several(fx):
    (line,) = entries_of(fx.LINE_131_OUTBOUND)
    assert only_line([line], "x") == (line, None)
    assert only_line([], "outbound line") == (None, "no outbound line")
    assert only_line([line, line], "outbound line") == (None, "2 lines could be the outbound line; cannot tell which")


def test_denied_lines_fail_the_pair(fx):
    outbound, inbound = entries_of(fx.LINE_CLIENT_401, fx.LINE_DENY_NONE_ALLOWED)
    problems = assess_log_pair(outbound, inbound, client_identity=fx.NOTSLEEP_ID, server_identity=fx.PRODUCTPAGE_ID,
                               waypoint_identity=None)
    assert "outbound line has error 'http status: 401 Unauthorized'" in problems
    assert any(problem.startswith("inbound line has error 'connection closed due to policy") for problem in problems)


def test_waypoint_lines_do_not_prove_a_direct_request(fx):
    outbound, inbound = entries_of(fx.LINE_WAYPOINT_OUTBOUND, fx.LINE_WAYPOINT_INBOUND)
    assert assess_log_pair(outbound, inbound, client_identity=fx.SLEEP_ID, server_identity=fx.PRODUCTPAGE_ID,
                           waypoint_identity=fx.WAYPOINT_ID) == []
    problems = assess_log_pair(outbound, inbound, client_identity=fx.SLEEP_ID, server_identity=fx.PRODUCTPAGE_ID,
                               waypoint_identity=None)
    assert any("outbound dst.identity" in problem for problem in problems)


@pytest.mark.parametrize("mode", base.MODES)
def test_log_check_passes_on_the_probes_own_lines_and_names_nodes_and_ztunnels(fx, healthy, mode):
    cluster = healthy(mode)
    ctx, _ = fx.make_context(cluster, mode)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed
    client, server = result.evidence["client"], result.evidence["server"]
    assert (client["node"], client["ztunnel_pod"]) == (fx.CLIENT_NODE, fx.ZTUNNEL_CLIENT)
    assert (server["node"], server["ztunnel_pod"]) == (fx.SERVER_NODE, fx.ZTUNNEL_SERVER)
    assert client["entry"]["direction"] == "outbound" and server["entry"]["direction"] == "inbound"
    port = result.evidence["probe"]["local_port"]
    assert client["entry"]["src_addr"].endswith(f":{port}")
    assert client["entry"]["timestamp"].startswith("2026-10-02T09:30")
    expected_hop = fx.WAYPOINT_POD if mode == "l7" else fx.PRODUCTPAGE_POD
    assert client["entry"]["dst_workload"] == expected_hop
    if mode == "l4-only":
        assert (server["entry"]["bytes_recv"], server["entry"]["bytes_sent"]) == (
            client["entry"]["bytes_sent"], client["entry"]["bytes_recv"])
    logs_calls = [call for call in cluster.calls if call[0] == "logs"]
    assert {call[2] for call in logs_calls} == {fx.ZTUNNEL_CLIENT, fx.ZTUNNEL_SERVER}
    assert all(call[3] and call[3] >= base.LOG_WINDOW_MARGIN_S for call in logs_calls)


@pytest.mark.parametrize("mode", base.MODES)
def test_log_check_fails_on_lines_of_earlier_requests(fx, healthy, mode):
    """Before, the latest sleep -> productpage lines passed; here ztunnel logged the traffic checks' requests, not
    the probe (its connection never reached ztunnel), and the check must say the probe's lines are missing."""
    cluster = healthy(mode)
    earlier = [fx.LINE_WAYPOINT_OUTBOUND] if mode == "l7" else [fx.LINE_131_OUTBOUND]
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = "\n".join(earlier + [at_now(fx, earlier[0], seconds=-0.5)])
    ctx, _ = fx.make_context(cluster, mode, timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed
    port = result.evidence["probe"]["local_port"]
    assert result.observed.startswith(f"no outbound line from {fx.SLEEP_POD} port {port} on the client's ztunnel")
    assert result.evidence["client"]["entry"] is None


def test_log_check_fails_when_the_server_line_of_the_probe_is_missing(fx, healthy):
    """Before, any sleep -> productpage inbound line passed: here the only recent one carried another response."""
    cluster = healthy("l4-only")
    other = at_now(fx, fx.LINE_131_INBOUND.replace("bytes_sent=5002", "bytes_sent=4688"))
    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = f"{fx.LINE_131_INBOUND}\n{other}"
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed
    sent = result.evidence["client"]["entry"]["bytes_sent"]
    assert sent > 90, "the probe's padding header counts in its bytes"
    assert result.observed == (f"no inbound line mirroring the probe's bytes (sent {sent}, received 5002) on the "
                               "server's ztunnel")
    assert "waiting for both access-log lines of the probe sleep -> productpage" in result.details
    assert result.evidence["client"]["entry"] is not None and result.evidence["server"]["entry"] is None


def test_log_check_in_l7_fails_without_a_waypoint_connection_open_during_the_probe(fx, healthy):
    cluster = healthy("l7")
    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = fx.LINE_WAYPOINT_INBOUND  # closed at 09:17, long before the probe
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed
    assert result.observed == "no inbound line from the waypoint open during the probe on the server's ztunnel"


def test_log_check_in_l7_waits_for_productpage_to_close_the_waypoints_connection(fx, healthy):
    cluster = healthy("l7")
    ctx, clock = fx.make_context(cluster, "l7")
    assert ztunnel_logs.check_ztunnel_logs(ctx).passed
    assert clock.sleeps == [ztunnel_logs.WAYPOINT_UPSTREAM_CLOSE_S]


def test_log_check_retries_with_a_new_probe_until_its_lines_appear(fx, healthy):
    cluster = healthy("l4-only")
    written = cluster.logs_by_pod[fx.ZTUNNEL_SERVER]
    reads: list[str] = []

    def late_server_log():  # the server's line is not there for the first two reads
        reads.append("read")
        return written() if len(reads) > 2 else ""

    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = late_server_log
    ctx, _ = fx.make_context(cluster, "l4-only")
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed and result.evidence["attempts"] == 3
    assert len(cluster.probes()) == 3 and result.evidence["probe"]["local_port"] == cluster.probes()[-1][2]


def test_log_check_fails_when_the_probe_itself_fails(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_reset()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed and result.observed.startswith("the probe request failed: connection reset")


def test_log_check_in_l7_without_waypoint_pods_fails(fx, healthy):
    cluster = healthy("l4-only")  # no waypoint pod exists
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=2)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed and "no running waypoint pod" in result.observed


# --- L7 path -------------------------------------------------------------------------------------------------------


def test_envoy_markers():
    assert envoy_markers({"server": "istio-envoy", "x-envoy-upstream-service-time": "7"}) == {
        "server": "istio-envoy", "x-envoy-upstream-service-time": "7"}
    assert envoy_markers({"server": "gunicorn"}) == {}
    assert envoy_markers({"x-envoy-upstream-service-time": "7"}) == {"x-envoy-upstream-service-time": "7"}


@pytest.mark.parametrize("mode", base.MODES)
def test_l7_path_passes_on_a_healthy_lab(fx, healthy, mode):
    ctx, _ = fx.make_context(healthy(mode), mode)
    result = l7_path.check_l7_path(ctx)
    assert result.passed, result.observed
    responses = result.evidence["responses"]
    assert len(responses) == l7_path.L7_PATH_REQUESTS
    assert all(bool(response["envoy_headers"]) == (mode == "l7") for response in responses)


def sleeps_ztunnel_writes(fx, cluster, line_for_port):
    """Make the ztunnel on sleep's node log `line_for_port(port)` for each of sleep's probes to productpage."""
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = lambda: "\n".join(
        fx.stamped(line_for_port(port), when) for _, url, port, when in cluster.probes_from("default", "sleep")
        if "productpage" in url)


@pytest.mark.parametrize("mode", base.MODES)
def test_l7_path_ties_every_response_to_sleeps_ztunnel_line(fx, healthy, mode):
    cluster = healthy(mode)
    ctx, _ = fx.make_context(cluster, mode)
    result = l7_path.check_l7_path(ctx)
    assert result.passed, result.observed
    hop = fx.WAYPOINT_POD if mode == "l7" else fx.PRODUCTPAGE_POD
    for response in result.evidence["responses"]:
        assert response["ztunnel_line"]["dst_workload"] == hop
        assert response["ztunnel_line"]["src_addr"].endswith(f":{response['probe']['local_port']}")
    ports = [call[4][call[4].index("--local-port") + 1] for call in cluster.calls if call[0] == "exec"]
    assert len(ports) == l7_path.L7_PATH_REQUESTS  # each request from its own drawn port
    assert result.observed.endswith("to the waypoint" if mode == "l7" else "straight to productpage")


def test_l7_path_fails_when_another_envoy_answered_in_l7(fx, healthy):
    """Before, Envoy's headers passed whichever Envoy added them: here sleep's ztunnel sent the requests straight to
    productpage (so the headers came from some other Envoy, not the productpage waypoint)."""
    cluster = healthy("l7")
    sleeps_ztunnel_writes(fx, cluster, lambda port: fx.from_port(fx.LINE_131_OUTBOUND, port))
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed
    assert result.observed.startswith("Envoy headers in 3 of 3 responses")
    assert f"went to {fx.PRODUCTPAGE_POD} ({fx.PRODUCTPAGE_ID}), not the waypoint productpage-waypoint" in \
        result.observed


def test_l7_path_fails_when_the_probes_ztunnel_lines_are_missing(fx, healthy):
    cluster = healthy("l7")
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = fx.LINE_WAYPOINT_OUTBOUND  # an earlier request's line only
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed and "no outbound line from port" in result.observed


def test_l7_path_in_l4_only_fails_when_sleeps_ztunnel_went_to_the_waypoint(fx, healthy):
    cluster = healthy("l4-only")
    sleeps_ztunnel_writes(fx, cluster, lambda port: fx.from_port(fx.LINE_WAYPOINT_OUTBOUND, port))
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed and f"went to the waypoint {fx.WAYPOINT_POD}" in result.observed


def test_is_waypoint_names_its_pods_and_itself_only():
    assert l7_path.is_waypoint(f"{catalog.WAYPOINT_NAME}-5f7d9c8b6-7lq4w")
    assert l7_path.is_waypoint(catalog.WAYPOINT_NAME)
    assert not l7_path.is_waypoint("productpage-v1-7c9f8b5d4-qx2lp") and not l7_path.is_waypoint(None)
    assert not l7_path.is_waypoint(f"{catalog.WAYPOINT_NAME}2-abc")


def test_l7_path_fails_when_the_waypoint_is_missing_in_l7(fx, healthy):
    cluster = healthy("l7")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_page(envoy=False)
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed
    assert result.observed.startswith("no Envoy headers in any of 3 responses (server: gunicorn)")
    assert "waiting for the waypoint to be in the path" in result.details


def test_l7_path_fails_when_envoy_is_in_the_path_in_l4_only(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_page(envoy=True)
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed and "server: istio-envoy" in result.observed


@pytest.mark.parametrize("mode", base.MODES)
def test_l7_path_fails_when_only_some_responses_match_the_mode(fx, healthy, mode):
    """Before, one matching response passed: in l4-only a path where the waypoint answered every other request did."""
    cluster = healthy(mode)
    wrong = fx.curl_page(envoy=mode != "l7")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = [fx.curl_page(envoy=mode == "l7"), wrong] * 50
    ctx, _ = fx.make_context(cluster, mode, timeout_s=6)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed, result.observed
    assert ("Envoy headers in 1 of 3" in result.observed) or ("Envoy headers in 2 of 3" in result.observed)


def test_l7_path_needs_a_successful_request(fx, healthy):
    cluster = healthy("l4-only")
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = fx.curl_reset()
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=2)
    assert l7_path.check_l7_path(ctx).observed.startswith("request failed: connection reset")


# --- running, applicability, outputs ---------------------------------------------------------------------------


def test_which_checks_run_in_which_mode():
    names = {mode: [spec.name for spec in check_specs() if mode in spec.modes] for mode in base.MODES}
    assert "traffic: sleep DELETE /productpage" in names["l7"]
    assert "traffic: sleep DELETE /productpage" not in names["l4-only"]
    assert set(names["l7"]) - set(names["l4-only"]) == {"traffic: sleep DELETE /productpage"}
    assert names["l7"][0] == "enrolment" and len(names["l7"]) == 9


@pytest.mark.parametrize("mode", base.MODES)
def test_a_healthy_lab_passes_every_check(fx, healthy, mode):
    ctx, _ = fx.make_context(healthy(mode), mode)
    lines: list[str] = []
    report = run_checks(ctx, progress=lines.append)
    assert report.passed, report.summary + "\n" + "\n".join(r.observed for r in report.failed)
    assert len(lines) == 2 * len(report.results)
    assert lines[0].startswith("[1/") and any(line.startswith("[1/") and "PASS enrolment" in line for line in lines)


def test_a_crashing_check_is_reported_and_the_run_goes_on(fx, healthy, monkeypatch):
    def boom(ctx):
        raise RuntimeError("kaputt")

    monkeypatch.setattr(checks, "check_enrolment", boom)
    ctx, _ = fx.make_context(healthy("l4-only"), "l4-only")
    report = run_checks(ctx)
    assert report.results[0].observed == "the check crashed: RuntimeError: kaputt"
    assert not report.passed and len(report.failed) == 1


def test_stack_outputs(fx, healthy):
    ctx, _ = fx.make_context(healthy("l7"), "l7")
    outputs = stack_outputs(run_checks(ctx))
    assert outputs["certificate_san"] == {"sleep": fx.SLEEP_ID, "productpage": fx.PRODUCTPAGE_ID}
    assert outputs["ztunnel_evidence"]["client"]["entry"]["dst_identity"] == fx.WAYPOINT_ID
    assert outputs["ztunnel_evidence"]["server"]["ztunnel_pod"] == fx.ZTUNNEL_SERVER
    assert outputs["verification"]["passed"] is True


def test_stack_outputs_from_the_printed_json(fx, healthy):
    ctx, _ = fx.make_context(healthy("l4-only"), "l4-only")
    report = run_checks(ctx)
    assert stack_outputs(json.loads(report.to_json())) == json.loads(json.dumps(stack_outputs(report), default=str))
    assert stack_outputs({"results": []})["certificate_san"] == {"sleep": None, "productpage": None}


def test_unknown_mode_is_refused(fx):
    with pytest.raises(ValueError, match="use one of: l4-only, l7"):
        base.CheckContext(cluster=fx.FakeCluster(), mode="l5")


def test_checks_run_side_by_side_bounded_and_report_in_spec_order(fx, healthy, monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()

    def check(name: str, seconds: float):
        def run(ctx):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(seconds)  # real time: the later checks finish first
            with lock:
                running[0] -= 1
            return CheckResult(name, [], "x", "seen", {}, True, seconds)
        return checks.CheckSpec(name, frozenset(checks.MODES), run)

    specs = [check(f"c{index}", 0.05 * (6 - index)) for index in range(6)]
    monkeypatch.setattr(checks, "check_specs", lambda addons=False, image_record=False: specs)
    ctx, _ = fx.make_context(healthy("l4-only"), "l4-only")
    ctx.parallel = 3
    lines: list[str] = []
    report = run_checks(ctx, progress=lines.append)
    assert most[0] == 3, "at most ctx.parallel checks at once, and that many"
    assert [result.name for result in report.results] == [f"c{index}" for index in range(6)]
    assert sorted(lines) == sorted([f"[{i}/6] c{i - 1} ..." for i in range(1, 7)]
                                   + [f"[{i}/6] PASS c{i - 1} ({0.05 * (7 - i):.1f}s): seen" for i in range(1, 7)])


def test_log_check_tells_its_probe_from_the_same_request_sent_at_the_same_time(fx, healthy):
    """Checks run side by side: another probe's sleep -> productpage request closes in the same second. Its padding
    header has another length, so only the probe's own server line mirrors the probe's bytes."""
    cluster = healthy("l4-only")
    ports = iter([20007, 20500])
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    ctx = dataclasses.replace(ctx, local_port=lambda: next(ports))
    other = traffic.send_probe(ctx, "sleep", "default", "GET", traffic.TRAFFIC_CASES[0].url("default"))
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed
    assert other.local_port == 20007 and result.evidence["probe"]["local_port"] == 20500
    assert result.evidence["server"]["entry"]["bytes_recv"] == result.evidence["client"]["entry"]["bytes_sent"]
    assert result.evidence["client"]["entry"]["bytes_sent"] == 90 + len("x-lab-probe: ") + 501 + 2


def test_probe_ports_are_never_drawn_twice_in_a_run():
    """Two probes on one port would share a padding length (and the second could meet the first's TIME_WAIT)."""
    draw = base.ProbePorts()
    drawn = [draw() for _ in range(len(base.PROBE_PORTS))]
    assert sorted(drawn) == list(base.PROBE_PORTS)
    assert draw() in base.PROBE_PORTS, "a run that outlasts the range starts over"


def test_log_check_in_l7_reads_again_for_the_same_probe_while_the_waypoints_connection_stays_open(fx, healthy):
    """Other checks' requests keep the waypoint's connection to productpage open: its line comes later. The check
    reads the logs again for the probe it sent instead of sending new probes that would only start the wait over."""
    cluster = healthy("l7")
    healthy_logs = cluster.logs_by_pod[fx.ZTUNNEL_SERVER]
    reads = []

    def server_log():
        reads.append(1)
        return healthy_logs() if len(reads) >= 3 else ""  # the connection closes after the second read

    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = server_log
    ctx, _ = fx.make_context(cluster, "l7")
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed
    probes = [call for call in cluster.calls if call[0] == "exec" and "--local-port" in call[4]]
    assert len(probes) == 1 and len(reads) == 3


HELD_IMAGES = {"istiod": "docker.io/istio/pilot:1.31.1-distroless",
               "istio-cni": "docker.io/istio/install-cni:1.31.1-distroless",
               "ztunnel": "docker.io/istio/ztunnel:1.31.1",
               "ingress gateway": "docker.io/istio/proxyv2:1.31.1-distroless",
               "waypoint": "docker.io/istio/proxyv2:1.31.1-distroless"}


def _with_image_ids(fx, cluster, digests: dict[str, str], mode: str = "l4-only") -> None:
    """The held pods report their images as a container runtime does: the tag, and the digest."""
    from verify.checks import images

    ctx, _ = fx.make_context(cluster, mode)
    for name, namespace, selector in images.held_pods(ctx):
        key, _, value = selector.partition("=")
        pods = cluster.pods_by_namespace.setdefault(namespace, [])
        pods[:] = [pod for pod in pods if pod["metadata"].get("labels", {}).get(key) != value]
        pods.append({
            "metadata": {"name": f"{name.replace(' ', '-')}-abcde", "labels": {key: value}},
            "spec": {"nodeName": "lab-worker"},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": name, "image": HELD_IMAGES[name], "imageID": digests[name]}]}})


def _digests(**changed: str) -> dict[str, str]:
    """Registry image IDs for every held pod: one digest per image, proxyv2's shared by both gateways."""
    letters = {"istiod": "1", "istio-cni": "a", "ztunnel": "b", "ingress gateway": "e", "waypoint": "e"}
    first = {name: HELD_IMAGES[name].split(":")[0] + "@sha256:" + letter * 64 for name, letter in letters.items()}
    return {**first, **changed}


def test_the_mesh_images_are_held_to_the_digests_first_seen(fx, healthy, tmp_path):
    from verify.checks import images

    record = tmp_path / "image-digests.json"
    cluster = healthy("l4-only")
    _with_image_ids(fx, cluster, _digests())
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    ctx = dataclasses.replace(ctx, image_record=str(record))
    seen = images.check_image_digests(ctx)
    assert seen.passed and "4 image(s) checked; recorded at first use" in seen.observed, seen.observed
    assert json.loads(record.read_text()) == {"docker.io/istio/install-cni:1.31.1-distroless": "sha256:" + "a" * 64,
                                             "docker.io/istio/pilot:1.31.1-distroless": "sha256:" + "1" * 64,
                                             "docker.io/istio/proxyv2:1.31.1-distroless": "sha256:" + "e" * 64,
                                             "docker.io/istio/ztunnel:1.31.1": "sha256:" + "b" * 64}
    assert images.check_image_digests(ctx).passed, "the same digests again"

    swapped = healthy("l4-only")
    _with_image_ids(fx, swapped, _digests(ztunnel="docker.io/istio/ztunnel@sha256:" + "c" * 64))
    ctx, _ = fx.make_context(swapped, "l4-only", timeout_s=60)
    result = images.check_image_digests(dataclasses.replace(ctx, image_record=str(record)))
    assert not result.passed and result.evidence["attempts"] == 1, "settled: waiting cannot fix a swapped image"
    assert result.observed.startswith(f"docker.io/istio/ztunnel:1.31.1 runs sha256:{'c' * 64}, but this lab first "
                                      f"saw sha256:{'b' * 64}: if the tag was re-published on purpose")


@pytest.mark.parametrize("what, image", [("istiod", "pilot"), ("ingress gateway", "proxyv2")])
def test_istiod_which_holds_the_mesh_ca_and_proxyv2_are_held_like_the_data_plane(fx, healthy, tmp_path, what, image):
    from verify.checks import images

    record = tmp_path / "image-digests.json"
    cluster = healthy("l4-only")
    _with_image_ids(fx, cluster, _digests())
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    assert images.check_image_digests(dataclasses.replace(ctx, image_record=str(record))).passed

    swapped = healthy("l4-only")
    _with_image_ids(fx, swapped, _digests(**{what: f"docker.io/istio/{image}@sha256:" + "f" * 64}))
    ctx, _ = fx.make_context(swapped, "l4-only", timeout_s=60)
    result = images.check_image_digests(dataclasses.replace(ctx, image_record=str(record)))
    assert not result.passed and result.observed.startswith(
        f"docker.io/istio/{image}:1.31.1-distroless runs sha256:{'f' * 64}, but this lab first saw"), result.observed


def test_in_l7_the_waypoint_runs_the_recorded_proxyv2_too(fx, healthy, tmp_path):
    from verify.checks import images

    record = tmp_path / "image-digests.json"
    cluster = healthy("l7")
    _with_image_ids(fx, cluster, _digests(waypoint="docker.io/istio/proxyv2@sha256:" + "9" * 64), mode="l7")
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=60)
    result = images.check_image_digests(dataclasses.replace(ctx, image_record=str(record)))
    assert not result.passed, "the waypoint runs another proxyv2 than the ingress gateway, whose digest came first"
    assert "docker.io/istio/proxyv2:1.31.1-distroless runs sha256:" in result.observed
    l4, _ = fx.make_context(healthy("l4-only"), "l4-only")
    assert [what for what, _, _ in images.held_pods(l4)] == ["istiod", "istio-cni", "ztunnel", "ingress gateway"]


def test_a_missing_istiod_is_waited_for_not_passed(fx, healthy, tmp_path):
    from verify.checks import images

    cluster = healthy("l4-only")
    _with_image_ids(fx, cluster, _digests())
    pods = cluster.pods_by_namespace[catalog.ISTIO_NAMESPACE]
    pods[:] = [pod for pod in pods if pod["metadata"]["labels"].get("app") != "istiod"]
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    result = images.check_image_digests(dataclasses.replace(ctx, image_record=str(tmp_path / "record.json")))
    assert not result.passed and "no pod labelled app=istiod in istio-system" in result.observed


def test_the_image_check_runs_only_with_a_record():
    assert images_check_names(False) == [] and images_check_names(True) == [
        "images: istiod, istio-cni, ztunnel and proxyv2 run the digests this lab first saw"]


def images_check_names(with_record: bool) -> list[str]:
    return [spec.name for spec in check_specs(image_record=with_record) if spec.name.startswith("images:")]


def test_preloaded_images_have_no_registry_digest_in_the_runtime_and_are_not_waited_for(fx, healthy, tmp_path):
    """`kind load image-archive` imports images whose runtime ID is the bare config digest: lab.images held them to
    the record before loading, so the check says so instead of waiting for a registry digest that never comes."""
    from verify.checks import images

    cluster = healthy("l4-only")
    _with_image_ids(fx, cluster, _digests(**{"istio-cni": "sha256:" + "d" * 64}))
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=5)
    result = images.check_image_digests(dataclasses.replace(ctx, image_record=str(tmp_path / "record.json")))
    assert result.passed and result.evidence["preloaded"] == ["docker.io/istio/install-cni:1.31.1-distroless"]
