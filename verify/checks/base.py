"""What every check shares: the facts they rely on, the context, bounded polling, results and pod lookups.

A check asks the cluster through a `Cluster` boundary (`verify.cluster`), decides with a pure function that the
tests exercise on recorded outputs, and retries through `poll` until the answer is stable: policies, waypoints and
certificates take seconds to propagate after a `pulumi up`. `check_result` turns the last attempt into the
`CheckResult` the report holds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab import catalog
from verify.cluster import Cluster, ClusterError
from verify.evidence import (
    EvidenceError,
)
from verify.report import CheckResult

# --- Facts the checks rely on (verification expectations, not lab configuration) -----------------------------

# The title of bookinfo's product page (istio samples/bookinfo/src/productpage/templates/productpage.html).
PRODUCTPAGE_TITLE = "Simple Bookstore App"
# The body Envoy's RBAC filter answers a denied request with.
RBAC_DENIED_BODY = "RBAC: access denied"
# Label Istio puts on the pods of a Gateway it deploys (waypoints, ingress gateways): Istio proxies, not apps.
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
# What a waypoint's Envoy adds to every response it proxies (see `check_l7_path`).
ENVOY_SERVER_NAME = "istio-envoy"
ENVOY_UPSTREAM_TIME_HEADER = "x-envoy-upstream-service-time"
# curl's exit codes for the ways a mesh refuses a connection.
CURL_EXIT_EMPTY_REPLY = 52
CURL_EXIT_RECV_FAILURE = 56  # "Recv failure: Connection reset by peer"
CURL_MAX_TIME_S = 10
# How far back to read ztunnel logs beyond the time since the probe request was sent.
LOG_WINDOW_MARGIN_S = 30
# The client ports a probe binds with `curl --local-port`: below Linux's default ephemeral range (32768-60999), so no
# connection whose port the kernel picks can hold one, and drawn anew per probe, so an earlier probe's ztunnel line
# (same client, same request) never carries this probe's port. ztunnel's client-side line logs it in `src.addr`.
# Each probe also pads its request with a header as long as its port's place in this range (`probe_padding`), so its
# byte count differs from every other probe's: the server side's line, which does not log the client's port, is
# found by the mirrored byte counts even while other checks send the same request at the same time.
PROBE_PORTS = range(20000, 24000)
PROBE_HEADER = "x-lab-probe"


class ProbePorts:
    """Draws probe ports without replacement for one run (thread-safe): two probes of a run never share a port, so
    never a padding length, and a probe never lands on the previous one's port still in TIME_WAIT."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left: list[int] = []

    def __call__(self) -> int:
        with self._lock:
            if not self._left:
                self._left = random.sample(PROBE_PORTS, len(PROBE_PORTS))
            return self._left.pop()


def probe_padding(local_port: int) -> str:
    """The padding header's value for the probe from `local_port`: 1 to 4000 characters, one length per port."""
    return "p" * (local_port - PROBE_PORTS.start + 1)
# How far apart two nodes' clocks may be (NTP keeps a cluster's nodes close): the l7 log check places the server
# side's line, stamped by the server node's ztunnel, against the client side's line, stamped by the client node's.
# No check compares a ztunnel's time with this machine's: a VM's or a remote cluster's clock may be minutes off it.
NODE_CLOCK_TOLERANCE_S = 1.0
# The authorization policy istiod derives from a STRICT PeerAuthentication and sends to ztunnel: a DENY of every
# connection without a peer identity, named in the mesh's root namespace (pilot/pkg/serviceregistry/ambient:
# staticStrictPolicyName). A namespace-scoped STRICT PeerAuthentication (no selector) converts to the same static
# policy, attached to that namespace's workloads (authorization.go: convertedSelectorPeerAuthentications), so the name
# is the same whether STRICT covers the mesh or only the lab's namespaces. ztunnel names the DENY policy that refused a
# connection in the access line's error.
STRICT_POLICY = f"{catalog.ISTIO_NAMESPACE}/istio_converted_static_strict"

# Check names: stable, so the stack outputs and readers of the JSON report can find a result by name.
ENROLMENT_CHECK = "enrolment"
LOG_EVIDENCE_CHECK = "ztunnel log evidence"
STRICT_CHECK = "strict mtls: plaintext to details refused by STRICT"
L7_PATH_CHECK = "l7 path: waypoint Envoy in the request path"
PROMETHEUS_CHECK = "prometheus: mTLS connections from sleep"
KIALI_CHECK = "kiali: graph edge sleep -> productpage"


def certificate_check_name(app: str) -> str:
    return f"mtls certificate: {app}"


# Outcome kinds of one curl request.
OK, RESET, EMPTY_REPLY, FORBIDDEN, OTHER = "ok", "reset", "empty-reply", "forbidden", "other"


@dataclass(frozen=True)
class ModeFacts:
    """What differs between the two mesh modes, as far as the checks are concerned."""

    waypoint_in_path: bool  # sleep -> productpage goes through the waypoint's Envoy
    # The protocol of sleep's edge towards productpage in Kiali's graph: ztunnel sees only bytes (tcp); a waypoint
    # parses HTTP and reports requests (http).
    graph_protocol: str


MODE_FACTS: Mapping[str, ModeFacts] = {
    "l4-only": ModeFacts(waypoint_in_path=False, graph_protocol="tcp"),
    "l7": ModeFacts(waypoint_in_path=True, graph_protocol="http"),
}
MODES = tuple(MODE_FACTS)


@dataclass
class CheckContext:
    """Everything a check needs: the cluster boundary, the mode, and the retry schedule.

    Attributes:
        cluster: the boundary to the cluster (`verify.cluster.Kubectl`, or a fake).
        mode: ``l4-only`` or ``l7``.
        namespace: the applications' namespace.
        timeout_s: how long one check may keep retrying before it reports the last thing it saw.
        interval_s: the pause between two attempts.
        clock: monotonic seconds (injectable so tests never wait).
        sleep: pauses between attempts (injectable likewise).
        now: the wall-clock time, for certificate validity.
        addons: Prometheus and Kiali are installed, so the checks that read them run too.
        kiali_login: Kiali asks for a login (auth strategy ``token``, as on an existing cluster): the Kiali check
            signs in with a short-lived token of Kiali's own read-only service account.
        local_port: draws the client port of a probe whose ztunnel lines a check looks for (see `PROBE_PORTS`).
        parallel: how many checks run at once (`verify.checks.run_checks`); each still keeps its own retries and
            timeout. Bounded because every cluster call is a kubectl process: a check makes one call at a time, so
            this is also the most kubectl processes at once (enough for every check of a run without the addons).
    """

    cluster: Cluster
    mode: str
    namespace: str = catalog.DEFAULT_APPS_NAMESPACE
    timeout_s: float = float(catalog.VERIFICATION_TIMEOUT_S)
    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    addons: bool = False
    kiali_login: bool = False
    image_record: str | None = None  # the trust-on-first-use image digest record (lab.images); None: no image check
    local_port: Callable[[], int] = field(default_factory=lambda: ProbePorts())
    parallel: int = 8

    def __post_init__(self) -> None:
        if self.mode not in MODE_FACTS:
            raise ValueError(f"Mode {self.mode!r} is unknown; use one of: {', '.join(MODES)}.")

    @property
    def facts(self) -> ModeFacts:
        return MODE_FACTS[self.mode]


# --- Bounded retries ---------------------------------------------------------------------------------------------


@dataclass
class Observation:
    """What one attempt of a check saw.

    Attributes:
        ok: the attempt saw what the check expects.
        observed: the sighting in words.
        evidence: structured data behind it.
        commands: the commands the attempt ran.
        settled: retrying cannot change the verdict (e.g. a container already restarted), so stop now.
    """

    ok: bool
    observed: str
    evidence: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    settled: bool = False


class NotFound(Exception):
    """An object the check needs is not there (yet): a pod, a ztunnel on a node, a waypoint."""


@dataclass(frozen=True)
class PollOutcome:
    last: Observation
    attempts: int
    passed: bool
    waited_s: float
    limit_s: float | None = None  # the timeout this poll had; None: the context's


def poll(
    ctx: CheckContext, probe: Callable[[], Observation], *, consecutive: int = 1, interval_s: float | None = None,
    timeout_s: float | None = None,
) -> PollOutcome:
    """Run `probe` every `ctx.interval_s` until it succeeds `consecutive` times in a row or `ctx.timeout_s` passes.

    Cluster and format errors count as failed attempts (their message becomes the observation), so a transient
    kubectl failure is retried like any other unstable answer. `interval_s` overrides the pause for checks whose
    source changes more slowly (Prometheus scrapes every 15 s); `timeout_s` shortens the wait where the source
    itself says when waiting longer cannot help (never beyond `ctx.timeout_s`).
    """
    interval = ctx.interval_s if interval_s is None else interval_s
    limit = ctx.timeout_s if timeout_s is None else min(timeout_s, ctx.timeout_s)
    started = ctx.clock()
    deadline = started + limit
    attempts = streak = 0
    while True:
        attempts += 1
        try:
            seen = probe()
        except (ClusterError, EvidenceError, NotFound) as error:
            seen = Observation(False, str(error))
        streak = streak + 1 if seen.ok else 0
        if streak >= consecutive:
            return PollOutcome(seen, attempts, True, ctx.clock() - started, limit)
        if seen.settled or ctx.clock() + interval > deadline:
            return PollOutcome(seen, attempts, False, ctx.clock() - started, limit)
        ctx.sleep(interval)


def check_result(
    ctx: CheckContext, name: str, expected: str, outcome: PollOutcome, waited_for: str, started: float
) -> CheckResult:
    last = outcome.last
    evidence = {**last.evidence, "attempts": outcome.attempts}
    details = None
    if not outcome.passed:
        if last.settled:
            details = (f"Stopped after {outcome.attempts} attempt(s): retrying cannot change this; "
                       f"last seen: {last.observed}")
        else:
            details = (
                f"Timed out after {outcome.attempts} attempt(s) in {outcome.waited_s:.0f} s "
                f"(limit {outcome.limit_s or ctx.timeout_s:g} s) "
                f"waiting for {waited_for}; last seen: {last.observed}"
            )
    return CheckResult(
        name=name,
        command=list(last.commands),
        expected=expected,
        observed=last.observed,
        evidence=evidence,
        passed=outcome.passed,
        duration_s=ctx.clock() - started,
        details=details,
    )


# --- Pods, nodes, ztunnels (pure) ------------------------------------------------------------------------------


def pod_items(pods_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = pods_json.get("items", [])
    return items if isinstance(items, list) else []


def is_running(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and not pod.get("metadata", {}).get("deletionTimestamp")


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", "?"))


def pod_node(pod: Mapping[str, Any]) -> str | None:
    return pod.get("spec", {}).get("nodeName")


def pod_service_account(pod: Mapping[str, Any]) -> str:
    return str(pod.get("spec", {}).get("serviceAccountName") or "default")


def running_pods(pods_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pods of a ``kubectl get pods -o json`` answer that run and are not being deleted, sorted by name."""
    return sorted((pod for pod in pod_items(pods_json) if is_running(pod)), key=pod_name)


def _newest_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # RFC 3339 times in UTC with whole seconds (the API server's format) sort as text; the name breaks ties.
    return sorted(pods, key=lambda pod: (str(pod.get("metadata", {}).get("creationTimestamp") or ""), pod_name(pod)),
                  reverse=True)


def ztunnel_for_node(pods_json: Mapping[str, Any], node: str) -> str | None:
    """The ztunnel pod that serves `node`: ztunnel is a DaemonSet, one pod per node, found by ``spec.nodeName``.

    During a rollout the chart's ``maxSurge: 1`` starts the new pod beside the old one on the same node; the newest
    running pod is the one that stays.

    Args:
        pods_json: ``kubectl get pods -n istio-system -l app=ztunnel -o json``.
        node: the node the workload runs on.

    Returns:
        The name of the newest running ztunnel pod on `node`, or None when there is none.
    """
    on_node = [pod for pod in running_pods(pods_json) if pod_node(pod) == node]
    return pod_name(_newest_first(on_node)[0]) if on_node else None


def ztunnels_logging_on_node(pods_json: Mapping[str, Any], node: str) -> list[str]:
    """Every ztunnel pod on `node` whose log may hold a connection of the last moments, newest first.

    The ztunnel chart rolls its DaemonSet with ``maxSurge: 1, maxUnavailable: 0``: while it rolls, the new pod runs
    beside the old one on the node, and the old one, even once it is being deleted, still serves and logs the
    connections it holds while it drains. A connection's line is in one of their logs, so read them all.
    """
    on_node = [pod for pod in pod_items(pods_json) if pod.get("status", {}).get("phase") == "Running"
               and pod_node(pod) == node]
    return [pod_name(pod) for pod in _newest_first(on_node)]


@dataclass(frozen=True)
class PodInfo:
    name: str
    node: str | None
    service_account: str

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.name, "node": self.node, "service_account": self.service_account}


def one_running_pod(cluster: Cluster, namespace: str, selector: str) -> PodInfo:
    pods = running_pods(cluster.pods(namespace, selector))
    if not pods:
        raise NotFound(f"no running pod labelled {selector} in namespace {namespace}")
    pod = pods[0]
    return PodInfo(pod_name(pod), pod_node(pod), pod_service_account(pod))


def app_selector(app: str) -> str:
    return f"app={app}"
