"""Benchmark: the whole verification against the fake cluster boundary, with a fixed latency per cluster call.

The checks and their polling are the real ones; the cluster is the healthy fake of conftest, and every call costs a
fixed, documented time (LATENCY_S). Time runs scaled (one modelled second is SCALE real seconds) so the benchmark
takes about a second. Serial time is the sum of the calls' latencies: what the run would take one call after another
without any pause; wall time includes the checks' own pauses between attempts. A model, not a measurement: the
latencies are typical figures for kubectl against a local kind cluster, not measured on this machine (no Docker).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from verify.checks import CheckContext, run_checks

# Seconds per call, modelled. kubectl is a Go binary: start, read the kubeconfig, TLS to the API server (~0.15 s).
LATENCY_S = {
    "pods": 0.3,  # `kubectl get pods -o json`: one API list on top of the start
    "exec": 0.8,  # `kubectl exec ... curl`: upgrade through the API server to the kubelet, run curl (one request)
    "logs": 0.4,  # `kubectl logs --since`: one streamed read from the kubelet
    "port_forward": 1.0,  # `kubectl port-forward` until its local port accepts (verify.cluster polls for that)
    "http": 0.05,  # one GET through an open forward on 127.0.0.1
    "get_raw": 0.4,  # `kubectl get --raw` through the API server's service proxy
}
# Outside run_checks, once per run: the interpreter and imports, `kind get kubeconfig`, `kubectl get nodes`.
PROCESS_OVERHEAD_S = 1.5
SCALE = 0.05
WALL_BUDGET_RATIO = 0.40
NO_CHANGE_BUDGET_S = 20.0


class SlowCluster:
    """The fake cluster, each call delayed by its latency (scaled), with the serial time summed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.serial_s = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def _cost(self, seconds: float) -> None:
        with self._lock:
            self.serial_s += seconds
            self.calls += 1
        time.sleep(seconds * SCALE)

    def command(self, args):
        return self.inner.command(args)

    def pods(self, namespace, selector=None):
        self._cost(LATENCY_S["pods"])
        return self.inner.pods(namespace, selector)

    def nodes(self):
        self._cost(LATENCY_S["pods"])
        return self.inner.nodes()

    def exec(self, namespace, target, container, argv, timeout_s=30.0):
        self._cost(LATENCY_S["exec"])
        return self.inner.exec(namespace, target, container, argv, timeout_s)

    def logs(self, namespace, pod, *, since_s=None, tail=None):
        self._cost(LATENCY_S["logs"])
        return self.inner.logs(namespace, pod, since_s=since_s, tail=tail)

    def http_get(self, namespace, pod, port, path, timeout_s=30.0):
        self._cost(LATENCY_S["port_forward"] + LATENCY_S["http"])
        return self.inner.http_get(namespace, pod, port, path, timeout_s)

    def get_raw(self, path, timeout_s=30.0):
        self._cost(LATENCY_S["get_raw"])
        return self.inner.get_raw(path, timeout_s)


def verify_once(fx, cluster, mode: str, addons: bool, parallel: int) -> tuple[float, SlowCluster, Any]:
    slow = SlowCluster(cluster)
    started = time.monotonic()
    ctx = CheckContext(cluster=slow, mode=mode, timeout_s=120.0, interval_s=2.0,
                       clock=lambda: (time.monotonic() - started) / SCALE, sleep=lambda s: time.sleep(s * SCALE),
                       now=lambda: fx.NOW, addons=addons, parallel=parallel)
    prometheus = cluster.raw_answers.get(fx.PROMETHEUS_PROXY)
    if isinstance(prometheus, fx.CountingPrometheus):
        # It scrapes every 15 modelled seconds, the first time just before the checks start: the Prometheus check's
        # baseline comes right after a scrape, and its requests show only at the next one (the slowest case).
        prometheus.clock = ctx.clock
    report = run_checks(ctx)
    return (time.monotonic() - started) / SCALE, slow, report


@pytest.mark.benchmark
@pytest.mark.parametrize("mode", ["l4-only", "l7"])
def test_verification_wall_time_against_serial_and_the_no_change_budget(fx, healthy, mode, capsys):
    wall_s, slow, report = verify_once(fx, healthy(mode), mode, addons=False, parallel=CheckContext.parallel)
    assert report.passed, report.summary
    one_by_one_s, _, _ = verify_once(fx, healthy(mode), mode, addons=False, parallel=1)
    with_addons_s, _, addon_report = verify_once(fx, healthy(mode), mode, addons=True, parallel=CheckContext.parallel)
    assert addon_report.passed, addon_report.summary
    predicted_s = wall_s + PROCESS_OVERHEAD_S
    ratio = wall_s / slow.serial_s
    with capsys.disabled():
        print(f"\n[benchmark] verification {mode}: {len(report.results)} checks, {slow.calls} cluster calls; "
              f"serial {slow.serial_s:.1f} s, wall {wall_s:.1f} s (ratio {ratio:.2f}, budget {WALL_BUDGET_RATIO}); "
              f"checks one at a time {one_by_one_s:.1f} s; predicted no-change verification {predicted_s:.1f} s "
              f"(budget {NO_CHANGE_BUDGET_S:g} s), with the addon checks {with_addons_s + PROCESS_OVERHEAD_S:.1f} s")
    assert ratio <= WALL_BUDGET_RATIO
    assert predicted_s <= NO_CHANGE_BUDGET_S
