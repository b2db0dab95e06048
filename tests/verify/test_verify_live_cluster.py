"""The checks hold on a live cluster: clocks that are not this machine's, a client Deployment or the ztunnel DaemonSet
in the middle of a rollout, and a waypoint that keeps more than one connection to productpage."""

from __future__ import annotations

import datetime as dt

import pytest

from lab import catalog
from verify.checks import base, l7_path, run_checks, strict_mtls, ztunnel_logs
from verify.cluster import ExecResult

NEW_SLEEP = "sleep-7f9b8c6d5-zr4tn"  # sorts after fx.SLEEP_POD: the check picks fx.SLEEP_POD, kubectl this one
NEW_ZTUNNEL = "ztunnel-zq8wd"  # sorts after fx.ZTUNNEL_CLIENT: picking by name would take the old pod


# --- clocks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [-600, -90, 90, 600])
@pytest.mark.parametrize("mode", base.MODES)
def test_a_healthy_mesh_passes_whatever_this_machines_clock_says(fx, healthy, mode, offset_s):
    """Before, a node clock more than a second off this machine's failed the log, STRICT and L7 path checks: a VM or
    a remote cluster whose clock drifts is no broken mesh. The nodes still agree with each other."""
    cluster = healthy(mode)
    cluster.node_clock_offset = dt.timedelta(seconds=offset_s)
    ctx, _ = fx.make_context(cluster, mode)
    report = run_checks(ctx)
    assert report.passed, "\n".join(f"{result.name}: {result.observed}" for result in report.failed)


def test_the_l7_server_line_is_placed_by_the_client_lines_time_not_this_machines(fx, healthy):
    """The waypoint's connection to productpage is found against sleep's line (both stamped by the cluster): a line
    that matches this machine's time but not the client line's does not count."""
    cluster = healthy("l7")
    cluster.node_clock_offset = dt.timedelta(seconds=300)

    def server_log() -> str:  # the waypoint's connection as if the server node's clock agreed with this machine's
        return "\n".join(fx.stamped(fx.LINE_WAYPOINT_INBOUND, when - cluster.node_clock_offset
                                    + dt.timedelta(seconds=2.1))
                         for _, _, _, when in cluster.probes_from("default", "sleep"))

    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = server_log
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed
    assert result.observed == "no inbound line from the waypoint open during the probe on the server's ztunnel"


# --- a client Deployment in a rollout ------------------------------------------------------------------------------


def sleep_rolling(fx, healthy, mode):
    """sleep's Deployment rolls: its new pod runs on the other node, and `kubectl exec deploy/sleep` lands there."""
    cluster = healthy(mode)
    cluster.pods_by_namespace["default"].append(
        fx.pod(NEW_SLEEP, app="sleep", node=fx.SERVER_NODE, service_account="sleep"))
    cluster.deploy_lands_on["deploy/sleep"] = NEW_SLEEP
    return cluster


@pytest.mark.parametrize("mode", base.MODES)
def test_the_log_check_probes_from_the_pod_whose_ztunnel_it_reads(fx, healthy, mode):
    """Before, the probe went to deploy/sleep, which a rollout resolved to a pod on another node than the one whose
    ztunnel the check read: the probe's lines were never there."""
    cluster = sleep_rolling(fx, healthy, mode)
    ctx, _ = fx.make_context(cluster, mode, timeout_s=6)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed
    probes = [call for call in cluster.calls if call[0] == "exec" and "--local-port" in call[4]]
    assert {call[2] for call in probes} == {fx.SLEEP_POD}
    assert result.evidence["client"]["entry"]["src_workload"] == fx.SLEEP_POD
    assert result.command[0].startswith("kubectl --context fake get pods") and any(
        f"exec -n default {fx.SLEEP_POD} -c sleep -- curl" in command for command in result.command)


@pytest.mark.parametrize("mode", base.MODES)
def test_the_l7_path_check_probes_from_the_pod_whose_ztunnel_it_reads(fx, healthy, mode):
    cluster = sleep_rolling(fx, healthy, mode)
    ctx, _ = fx.make_context(cluster, mode, timeout_s=6)
    result = l7_path.check_l7_path(ctx)
    assert result.passed, result.observed
    probes = [call for call in cluster.calls if call[0] == "exec" and "--local-port" in call[4]]
    assert len(probes) == l7_path.L7_PATH_REQUESTS and {call[2] for call in probes} == {fx.SLEEP_POD}


def test_a_probe_from_a_pod_that_is_gone_fails_and_is_retried(fx, healthy):
    """kubectl refuses to exec into a pod that a rollout has deleted: that attempt fails, the next finds the pod
    that runs now."""
    cluster = healthy("l4-only")
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=6)
    apps = cluster.pods_by_namespace["default"]
    original = cluster.exec

    def exec_once_gone(namespace, target, container, argv, timeout_s=30.0):
        result = original(namespace, target, container, argv, timeout_s)
        if target == fx.SLEEP_POD and not any(call[0] == "gone" for call in cluster.calls):
            cluster.calls.append(("gone",))
            return ExecResult(result.command, 1, "", f'Error from server (NotFound): pods "{target}" not found\n')
        return result

    cluster.exec = exec_once_gone
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed and result.evidence["attempts"] == 2
    assert apps  # the pod list itself never changed


# --- the ztunnel DaemonSet in a rollout ------------------------------------------------------------------------------


def ztunnel_rolling(fx, cluster, *, lines_in: str, old_terminating: bool) -> None:
    """The chart's maxSurge: 1 puts a new ztunnel beside the old one on sleep's and details' node; `lines_in` says
    which of the two logged the checks' connections (the other logged only older, unrelated lines)."""
    pods = cluster.pods_by_namespace[catalog.ISTIO_NAMESPACE]
    old = next(item for item in pods if item["metadata"]["name"] == fx.ZTUNNEL_CLIENT)
    old["metadata"]["creationTimestamp"] = "2026-10-01T08:00:00Z"
    if old_terminating:
        old["metadata"]["deletionTimestamp"] = "2026-10-02T09:29:58Z"
    new = fx.pod(NEW_ZTUNNEL, app="ztunnel", node=fx.CLIENT_NODE, enrolled=False, service_account="ztunnel")
    new["metadata"]["creationTimestamp"] = "2026-10-02T09:29:40Z"
    pods.append(new)
    writer = cluster.logs_by_pod[fx.ZTUNNEL_CLIENT]
    quiet = "\n".join(fx.UNRELATED_LINES[:3])
    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = writer if lines_in == "old" else quiet
    cluster.logs_by_pod[NEW_ZTUNNEL] = writer if lines_in == "new" else quiet
    cluster.config_dumps[NEW_ZTUNNEL] = cluster.config_dumps[fx.ZTUNNEL_CLIENT]


@pytest.mark.parametrize(("lines_in", "old_terminating"), [("new", False), ("old", True), ("old", False)])
@pytest.mark.parametrize("mode", base.MODES)
def test_the_log_checks_read_every_ztunnel_on_the_node_during_its_rollout(fx, healthy, mode, lines_in,
                                                                          old_terminating):
    """Before, one ztunnel per node was read (the first running one by name): the connection's line was in the other
    one's log, the new pod's, or the old pod's while it drains after its deletion."""
    cluster = healthy(mode)
    ztunnel_rolling(fx, cluster, lines_in=lines_in, old_terminating=old_terminating)
    writer = fx.ZTUNNEL_CLIENT if lines_in == "old" else NEW_ZTUNNEL
    for check in (ztunnel_logs.check_ztunnel_logs, l7_path.check_l7_path, strict_mtls.check_strict_mtls):
        ctx, _ = fx.make_context(cluster, mode, timeout_s=4)
        result = check(ctx)
        assert result.passed, f"{result.name}: {result.observed}"
        if check is ztunnel_logs.check_ztunnel_logs:
            assert result.evidence["client"]["ztunnel_pod"] == writer
        elif check is strict_mtls.check_strict_mtls:
            assert result.evidence["ztunnel_pod"] == writer
        else:
            assert {response["ztunnel_pod"] for response in result.evidence["responses"]} == {writer}


def test_the_newest_ztunnel_on_a_node_serves_it_and_every_one_still_running_is_read(fx):
    from verify.checks.base import ztunnel_for_node, ztunnels_logging_on_node

    old = fx.pod("ztunnel-zzz-old", app="ztunnel", node="n1")
    old["metadata"]["creationTimestamp"] = "2026-10-01T08:00:00Z"
    new = fx.pod("ztunnel-aaa-new", app="ztunnel", node="n1")
    new["metadata"]["creationTimestamp"] = "2026-10-02T09:29:40Z"
    elsewhere = fx.pod("ztunnel-n2", app="ztunnel", node="n2")
    failed = fx.pod("ztunnel-failed", app="ztunnel", node="n1", phase="Failed")
    pods = fx.pod_list(old, elsewhere, new, failed)
    assert ztunnel_for_node(pods, "n1") == "ztunnel-aaa-new"
    assert ztunnels_logging_on_node(pods, "n1") == ["ztunnel-aaa-new", "ztunnel-zzz-old"]
    new["metadata"]["deletionTimestamp"] = "2026-10-02T09:30:00Z"
    assert ztunnel_for_node(pods, "n1") == "ztunnel-zzz-old", "a pod being deleted serves no new workload"
    assert ztunnels_logging_on_node(pods, "n1") == ["ztunnel-aaa-new", "ztunnel-zzz-old"], "but it still logs"


def test_an_old_ztunnel_that_is_gone_by_the_log_read_is_skipped(fx, healthy):
    cluster = healthy("l4-only")
    ztunnel_rolling(fx, cluster, lines_in="new", old_terminating=True)

    def gone() -> str:
        raise fx.ClusterError(f'`kubectl logs` failed: pods "{fx.ZTUNNEL_CLIENT}" not found')

    cluster.logs_by_pod[fx.ZTUNNEL_CLIENT] = gone
    ctx, _ = fx.make_context(cluster, "l4-only", timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed


# --- a waypoint with several connections to productpage --------------------------------------------------------------


def test_the_l7_server_line_is_the_first_candidate_without_an_error(fx, healthy):
    """Before, the first waypoint connection open during the probe stood for them all, even one that ended in an
    error while another, which carried the probe, closed cleanly."""
    cluster = healthy("l7")
    writer = cluster.logs_by_pod[fx.ZTUNNEL_SERVER]
    reset = fx.LINE_WAYPOINT_INBOUND.replace('duration="2093ms"', 'duration="2093ms" error="connection reset by peer"')

    def server_log() -> str:
        failed = [fx.stamped(reset, when + dt.timedelta(seconds=2.0))
                  for _, _, _, when in cluster.probes_from("default", "sleep")]
        return "\n".join([*failed, writer()])

    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = server_log
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert result.passed, result.observed
    assert result.evidence["server"]["entry"]["error"] is None


def test_the_l7_server_line_with_an_error_fails_when_it_is_the_only_one(fx, healthy):
    cluster = healthy("l7")
    reset = fx.LINE_WAYPOINT_INBOUND.replace('duration="2093ms"', 'duration="2093ms" error="connection reset by peer"')
    cluster.logs_by_pod[fx.ZTUNNEL_SERVER] = lambda: "\n".join(
        fx.stamped(reset, when + dt.timedelta(seconds=2.0)) for _, _, _, when in cluster.probes_from("default", "sleep"))
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = ztunnel_logs.check_ztunnel_logs(ctx)
    assert not result.passed and "inbound line has error 'connection reset by peer'" in result.observed


# --- Envoy's headers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kept", ["server: istio-envoy", "x-envoy-upstream-service-time: 41"])
def test_l7_path_requires_both_envoy_headers(fx, healthy, kept):
    """Before, one of the two headers passed l7, where the README promises both."""
    cluster = healthy("l7")
    page = fx.curl_page(envoy=True)
    dropped = "x-envoy-upstream-service-time: 41" if kept.startswith("server") else "server: istio-envoy"
    cluster.exec_answers[("default", "deploy/sleep", "GET")] = ExecResult(
        page.command, page.exit_code, page.stdout.replace(f"{dropped}\r\n", ""), page.stderr)
    ctx, _ = fx.make_context(cluster, "l7", timeout_s=4)
    result = l7_path.check_l7_path(ctx)
    assert not result.passed
    missing = dropped.split(":")[0]
    assert result.observed.startswith(f"Envoy headers in 3 of 3 responses ({kept}), but 3 of them without {missing}")
