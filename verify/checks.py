"""The checks that prove the mesh works, per mesh mode, each returning a structured `CheckResult`.

Every check asks the cluster through a `Cluster` boundary (`verify.cluster`), decides with a pure function that the
tests exercise on recorded outputs, and retries on a bounded schedule until the answer is stable: policies,
waypoints and certificates take seconds to propagate after a `pulumi up`.

Which check runs in which mode, and what it expects there, is data (`TRAFFIC_CASES`, `MODE_FACTS`,
`check_specs`), not branches scattered through the code. The Prometheus and Kiali checks need the observability
addons and run only when the context says they are installed (``CheckSpec.needs_addons``, ``CheckContext.addons``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lab import catalog
from verify.cluster import Cluster, ClusterError
from verify.evidence import (
    AccessLogEntry,
    EvidenceError,
    WorkloadCertificate,
    certificates_from_config_dump,
    find_certificate,
    parse_ztunnel_access_log,
)
from verify.report import CheckResult, Report

__all__ = [
    "MODES",
    "CheckContext",
    "CheckSpec",
    "CurlOutcome",
    "assess_certificate",
    "assess_enrolment",
    "assess_kiali_graph",
    "assess_prometheus_mtls",
    "check_specs",
    "classify_curl",
    "envoy_markers",
    "kiali_graph_path",
    "prometheus_mtls_query",
    "prometheus_query_path",
    "run_checks",
    "select_inbound",
    "select_outbound",
    "stack_outputs",
    "ztunnel_for_node",
]

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

# Check names: stable, so the stack outputs and readers of the JSON report can find a result by name.
ENROLMENT_CHECK = "enrolment"
LOG_EVIDENCE_CHECK = "ztunnel log evidence"
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
    """

    cluster: Cluster
    mode: str
    namespace: str = catalog.DEFAULT_APPS_NAMESPACE
    timeout_s: float = 120.0
    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    addons: bool = False

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


def poll(
    ctx: CheckContext, probe: Callable[[], Observation], *, consecutive: int = 1, interval_s: float | None = None
) -> PollOutcome:
    """Run `probe` every `ctx.interval_s` until it succeeds `consecutive` times in a row or `ctx.timeout_s` passes.

    Cluster and format errors count as failed attempts (their message becomes the observation), so a transient
    kubectl failure is retried like any other unstable answer. `interval_s` overrides the pause for checks whose
    source changes more slowly (Prometheus scrapes every 15 s).
    """
    interval = ctx.interval_s if interval_s is None else interval_s
    started = ctx.clock()
    deadline = started + ctx.timeout_s
    attempts = streak = 0
    while True:
        attempts += 1
        try:
            seen = probe()
        except (ClusterError, EvidenceError, NotFound) as error:
            seen = Observation(False, str(error))
        streak = streak + 1 if seen.ok else 0
        if streak >= consecutive:
            return PollOutcome(seen, attempts, True, ctx.clock() - started)
        if seen.settled or ctx.clock() + interval > deadline:
            return PollOutcome(seen, attempts, False, ctx.clock() - started)
        ctx.sleep(interval)


def _result(
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
                f"(limit {ctx.timeout_s:g} s) "
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


def _items(pods_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = pods_json.get("items", [])
    return items if isinstance(items, list) else []


def _is_running(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and not pod.get("metadata", {}).get("deletionTimestamp")


def _name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", "?"))


def _node(pod: Mapping[str, Any]) -> str | None:
    return pod.get("spec", {}).get("nodeName")


def _service_account(pod: Mapping[str, Any]) -> str:
    return str(pod.get("spec", {}).get("serviceAccountName") or "default")


def running_pods(pods_json: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pods of a ``kubectl get pods -o json`` answer that run and are not being deleted, sorted by name."""
    return sorted((pod for pod in _items(pods_json) if _is_running(pod)), key=_name)


def ztunnel_for_node(pods_json: Mapping[str, Any], node: str) -> str | None:
    """The ztunnel pod that serves `node`: ztunnel is a DaemonSet, one pod per node, found by ``spec.nodeName``.

    Args:
        pods_json: ``kubectl get pods -n istio-system -l app=ztunnel -o json``.
        node: the node the workload runs on.

    Returns:
        The name of the running ztunnel pod on `node`, or None when there is none.
    """
    on_node = [pod for pod in running_pods(pods_json) if _node(pod) == node]
    return _name(on_node[0]) if on_node else None


@dataclass(frozen=True)
class PodInfo:
    name: str
    node: str | None
    service_account: str

    def to_dict(self) -> dict[str, Any]:
        return {"pod": self.name, "node": self.node, "service_account": self.service_account}


def _one_running_pod(cluster: Cluster, namespace: str, selector: str) -> PodInfo:
    pods = running_pods(cluster.pods(namespace, selector))
    if not pods:
        raise NotFound(f"no running pod labelled {selector} in namespace {namespace}")
    pod = pods[0]
    return PodInfo(_name(pod), _node(pod), _service_account(pod))


def _app_selector(app: str) -> str:
    return f"app={app}"


# --- a. Enrolment ------------------------------------------------------------------------------------------------

REQUIRED_APPS = (*catalog.BOOKINFO_SERVICES, catalog.SLEEP, catalog.NOTSLEEP)


def assess_enrolment(
    app_pods_json: Mapping[str, Any], outside_pods_json: Mapping[str, Any], required_apps: Iterable[str] = REQUIRED_APPS
) -> Observation:
    """Decide whether the app pods are in the ambient mesh and healthy, and the outside client is not.

    Args:
        app_pods_json: ``kubectl get pods -o json`` in the applications' namespace. Only pods whose ``app`` label
            is one of `required_apps` are judged: Istio-deployed gateways (the waypoint, the ingress gateway) are
            proxies, and the traffic CronJob's finished pods are not apps.
        outside_pods_json: the same for the namespace outside the mesh.
        required_apps: values of the ``app`` label that must each have at least one pod.

    Returns:
        ok when every app pod runs, carries ``ambient.istio.io/redirection: enabled`` and never restarted, every
        required app has a pod, and no outside pod is enrolled. A restart settles the verdict: retrying will not
        undo it.
    """
    problems: list[str] = []
    restarted = False
    pods = []
    wanted = set(required_apps)
    for pod in _items(app_pods_json):
        labels = pod.get("metadata", {}).get("labels") or {}
        # The lab's own apps only: the traffic CronJob leaves finished pods behind every minute, and on an existing
        # cluster the namespace may hold workloads that are none of the lab's business.
        if GATEWAY_NAME_LABEL in labels or labels.get("app") not in wanted:
            continue
        name = _name(pod)
        redirection = (pod.get("metadata", {}).get("annotations") or {}).get(catalog.REDIRECTION_ANNOTATION)
        restarts = {
            status.get("name", "?"): int(status.get("restartCount", 0))
            for status in pod.get("status", {}).get("containerStatuses") or []
        }
        phase = pod.get("status", {}).get("phase", "Unknown")
        pods.append({"pod": name, "app": labels.get("app"), "phase": phase, "redirection": redirection,
                     "restarts": restarts})
        if phase != "Running":
            problems.append(f"{name} is {phase}")
        if redirection != "enabled":
            problems.append(f"{name} is not enrolled ({catalog.REDIRECTION_ANNOTATION}={redirection})")
        for container, count in restarts.items():
            if count:
                restarted = True
                problems.append(f"{name} container {container} restarted {count} time(s)")
    present = {pod["app"] for pod in pods}
    missing = [app for app in required_apps if app not in present]
    if missing:
        problems.append("no pod for app " + ", ".join(missing))
    outside = []
    for pod in _items(outside_pods_json):
        redirection = (pod.get("metadata", {}).get("annotations") or {}).get(catalog.REDIRECTION_ANNOTATION)
        outside.append({"pod": _name(pod), "redirection": redirection})
        if redirection == "enabled":
            problems.append(f"outside pod {_name(pod)} is enrolled in the mesh, so it cannot test STRICT mTLS")
    evidence = {"app_pods": pods, "outside_pods": outside}
    if problems:
        # A restart is history: no retry will bring the count back to 0.
        return Observation(False, "; ".join(problems), evidence, settled=restarted)
    return Observation(
        True,
        f"{len(pods)} app pods enrolled and never restarted; {len(outside)} outside pod(s) not enrolled",
        evidence,
    )


def check_enrolment(ctx: CheckContext) -> CheckResult:
    """Every app pod is in ambient (redirection annotation) and did not restart; the outside client is not."""
    started = ctx.clock()
    commands = [
        ctx.cluster.command(["get", "pods", "-n", ctx.namespace, "-o", "json"]),
        ctx.cluster.command(["get", "pods", "-n", catalog.OUTSIDE_NAMESPACE, "-o", "json"]),
    ]

    def probe() -> Observation:
        seen = assess_enrolment(ctx.cluster.pods(ctx.namespace), ctx.cluster.pods(catalog.OUTSIDE_NAMESPACE))
        seen.commands = commands
        return seen

    expected = (
        f"every app pod in {ctx.namespace} Running with {catalog.REDIRECTION_ANNOTATION}: enabled and 0 restarts; "
        f"pods in {catalog.OUTSIDE_NAMESPACE} not enrolled"
    )
    return _result(ctx, ENROLMENT_CHECK, expected, poll(ctx, probe), "every app pod to be enrolled and running",
                   started)


# --- b. Traffic matrix -------------------------------------------------------------------------------------------

_HTTP_CODE_MARKER = "verify-http-code:"
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TERMINATED = re.compile(r"command terminated with exit code (\d+)")
_CURL_ERROR = re.compile(r"curl: \((\d+)\)[^\n]*")


@dataclass(frozen=True)
class CurlOutcome:
    """One curl request, classified.

    Attributes:
        kind: ``ok`` (2xx), ``forbidden`` (403 with Envoy's RBAC body), ``reset`` (curl exit 56), ``empty-reply``
            (curl exit 52) or ``other`` (anything else, including a kubectl exec that never ran curl).
        curl_exit: curl's exit code, None when curl did not run.
        http_code: the status code, None when no response came back.
        headers: the final response's headers, names in lower case.
        title: the HTML page's ``<title>``, if any.
        detail: the outcome in words, for reports.
    """

    kind: str
    curl_exit: int | None
    http_code: int | None
    headers: dict[str, str]
    title: str | None
    detail: str
    body_excerpt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "curl_exit": self.curl_exit, "http_code": self.http_code, "title": self.title,
                "headers": self.headers, "detail": self.detail, "body_excerpt": self.body_excerpt}


def curl_argv(method: str, url: str) -> list[str]:
    """A curl command that opens a new connection, prints the response head and body, then the status code.

    ``Connection: close`` makes the server end the connection after the response, so ztunnel logs it at once and no
    connection is reused by a later request (each ``kubectl exec`` is a new curl process anyway).
    """
    argv = ["curl", "-sS", "-i", "--max-time", str(CURL_MAX_TIME_S), "-H", "Connection: close"]
    if method != "GET":
        argv += ["-X", method]
    return [*argv, "-w", f"\\n{_HTTP_CODE_MARKER}%{{http_code}}\\n", url]


def _split_response(text: str) -> tuple[dict[str, str], str]:
    """Headers of the final response (after any 1xx) and the body, from curl -i output."""
    headers: dict[str, str] = {}
    rest = text
    while rest.startswith("HTTP/"):
        head, separator, body = rest.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        status = lines[0].split()
        rest = body if separator else ""
        if not (len(status) > 1 and status[1].startswith("1") and rest.startswith("HTTP/")):
            break
    return headers, rest


def classify_curl(exit_code: int, stdout: str, stderr: str) -> CurlOutcome:
    """Classify what ``kubectl exec ... curl`` (built by `curl_argv`) returned.

    Args:
        exit_code: kubectl's exit code (the remote command's when it ran).
        stdout: curl's output: response head and body, then ``verify-http-code:NNN``.
        stderr: kubectl's and curl's error output.

    Returns:
        The outcome: ok, forbidden, reset, empty-reply or other.
    """
    marker = stdout.rfind(_HTTP_CODE_MARKER)
    terminated = _TERMINATED.search(stderr)
    curl_error = _CURL_ERROR.search(stderr)
    if marker == -1:
        # curl never printed its status line: kubectl could not run it (no pod, no container, no curl).
        message = curl_error.group(0) if curl_error else (stderr.strip().splitlines() or ["no output"])[0]
        return CurlOutcome(OTHER, None, None, {}, None, f"curl did not run (kubectl exit {exit_code}): {message}")
    curl_exit = int(terminated.group(1)) if terminated else exit_code
    code_text = stdout[marker + len(_HTTP_CODE_MARKER):].strip()[:3]
    http_code = int(code_text) if code_text.isdigit() and code_text != "000" else None
    headers, body = _split_response(stdout[:marker].rstrip("\n"))
    title_match = _TITLE.search(body)
    title = " ".join(title_match.group(1).split()) if title_match else None
    excerpt = " ".join(body.split())[:120]
    if curl_exit == 0 and http_code is not None and 200 <= http_code < 300:
        return CurlOutcome(OK, curl_exit, http_code, headers, title, f"HTTP {http_code}, title {title!r}", excerpt)
    if curl_exit == 0 and http_code == 403 and RBAC_DENIED_BODY in body:
        return CurlOutcome(FORBIDDEN, curl_exit, http_code, headers, title, f"HTTP 403 {RBAC_DENIED_BODY!r}", excerpt)
    if curl_exit == CURL_EXIT_RECV_FAILURE:
        return CurlOutcome(RESET, curl_exit, http_code, headers, title,
                           f"connection reset (curl exit 56, http_code {code_text or '000'})", excerpt)
    if curl_exit == CURL_EXIT_EMPTY_REPLY:
        return CurlOutcome(EMPTY_REPLY, curl_exit, http_code, headers, title,
                           "empty reply from server (curl exit 52)", excerpt)
    if curl_exit == 0:
        return CurlOutcome(OTHER, curl_exit, http_code, headers, title, f"HTTP {code_text} {excerpt[:60]!r}", excerpt)
    message = curl_error.group(0) if curl_error else f"curl exit {curl_exit}"
    return CurlOutcome(OTHER, curl_exit, http_code, headers, title, message, excerpt)


@dataclass(frozen=True)
class Expect:
    """An acceptable curl outcome: one of `kinds`, and the page title when `title` is set."""

    kinds: frozenset[str]
    text: str
    title: str | None = None

    def met_by(self, outcome: CurlOutcome) -> bool:
        return outcome.kind in self.kinds and (self.title is None or outcome.title == self.title)


ALLOWED_PAGE = Expect(frozenset({OK}), f"HTTP 200 with title {PRODUCTPAGE_TITLE!r}", title=PRODUCTPAGE_TITLE)
RESET_BY_ZTUNNEL = Expect(frozenset({RESET}), "connection reset by ztunnel's L4 policy (curl exit 56, http_code 000)")
DENIED_BY_WAYPOINT = Expect(frozenset({FORBIDDEN}), f"HTTP 403 {RBAC_DENIED_BODY!r} from the waypoint's L7 policy")
REFUSED_PLAINTEXT = Expect(
    frozenset({RESET, EMPTY_REPLY}), "refused under STRICT mTLS: reset or empty reply (curl exit 56 or 52)"
)


@dataclass(frozen=True)
class TrafficCase:
    """One cell of the traffic matrix: a client, a request, and what each mode must answer.

    Attributes:
        client: the client's Deployment, which is also its container's name.
        method: the HTTP method.
        expect: per mode, the acceptable outcome; a mode without an entry does not run the case.
        client_namespace: the client's namespace; None means the applications' namespace.
    """

    client: str
    method: str
    expect: Mapping[str, Expect]
    client_namespace: str | None = None
    service: str = catalog.PRODUCTPAGE
    path: str = f"/{catalog.PRODUCTPAGE}"

    @property
    def name(self) -> str:
        return f"traffic: {self.client} {self.method} {self.path}"

    def url(self, namespace: str) -> str:
        # Inside the namespace the short name resolves; from outside only the full service name does.
        host = self.service if self.client_namespace in (None, namespace) else (
            f"{self.service}.{namespace}.svc.cluster.local")
        return f"http://{host}:{catalog.BOOKINFO_PORT}{self.path}"


BOTH_MODES = tuple(MODE_FACTS)
TRAFFIC_CASES = (
    TrafficCase(catalog.SLEEP, "GET", dict.fromkeys(BOTH_MODES, ALLOWED_PAGE)),
    TrafficCase(catalog.NOTSLEEP, "GET", {"l4-only": RESET_BY_ZTUNNEL, "l7": DENIED_BY_WAYPOINT}),
    TrafficCase(catalog.SLEEP, "DELETE", {"l7": DENIED_BY_WAYPOINT}),
    # To details, which no ALLOW policy covers: refused there only because STRICT mTLS refuses plaintext. Against
    # productpage the L4 policy alone would reset it, and the check would prove nothing about STRICT.
    TrafficCase(catalog.OUTSIDE_CLIENT, "GET", dict.fromkeys(BOTH_MODES, REFUSED_PLAINTEXT),
                client_namespace=catalog.OUTSIDE_NAMESPACE, service=catalog.STRICT_PROBE_SERVICE,
                path=catalog.STRICT_PROBE_PATH),
)
# A policy change shows up within seconds but not atomically on every node: ask for two agreeing answers in a row.
TRAFFIC_CONSECUTIVE = 2


def _curl(ctx: CheckContext, client: str, namespace: str, method: str, url: str) -> tuple[CurlOutcome, str]:
    result = ctx.cluster.exec(namespace, f"deploy/{client}", client, curl_argv(method, url),
                              timeout_s=CURL_MAX_TIME_S + 20)
    return classify_curl(result.exit_code, result.stdout, result.stderr), result.command


def check_traffic(ctx: CheckContext, case: TrafficCase) -> CheckResult:
    """Send the case's request from its client with a new connection each time and compare the outcome."""
    started = ctx.clock()
    expect = case.expect[ctx.mode]
    namespace = case.client_namespace or ctx.namespace
    url = case.url(ctx.namespace)

    def probe() -> Observation:
        outcome, command = _curl(ctx, case.client, namespace, case.method, url)
        evidence = {"client": f"{namespace}/deploy/{case.client}", "method": case.method, "url": url,
                    **outcome.to_dict()}
        return Observation(expect.met_by(outcome), outcome.detail, evidence, [command])

    outcome = poll(ctx, probe, consecutive=TRAFFIC_CONSECUTIVE)
    return _result(ctx, case.name, expect.text, outcome, f"{TRAFFIC_CONSECUTIVE} answers in a row of: {expect.text}",
                   started)


# --- c. mTLS certificate -----------------------------------------------------------------------------------------

CERTIFICATE_WORKLOADS = (catalog.SLEEP, catalog.PRODUCTPAGE)


def assess_certificate(certificate: WorkloadCertificate, expected_identity: str, now: datetime) -> list[str]:
    """Why `certificate` does not prove `expected_identity`; empty when it does.

    It does when ztunnel reports it Available, the leaf's only URI SAN is the expected SPIFFE ID, the chain verifies
    up to a root ztunnel holds, and `now` is inside the leaf's validity window.
    """
    problems = []
    if not certificate.available:
        problems.append(f"state is {certificate.state!r}")
    if list(certificate.san_uris) != [expected_identity]:
        problems.append(f"URI SANs are {list(certificate.san_uris)}, not [{expected_identity!r}]")
    if certificate.chain_length and not certificate.chains_to_root:
        problems.append(f"chain does not verify to a root: {certificate.chain_problem}")
    if certificate.chain_length and not certificate.valid_at(now):
        problems.append(f"not valid now ({certificate.not_before} to {certificate.not_after})")
    return problems


def check_certificate(ctx: CheckContext, app: str) -> CheckResult:
    """Read the workload's certificate from the ztunnel on its node and check it proves the workload's identity."""
    started = ctx.clock()

    def probe() -> Observation:
        commands = [ctx.cluster.command(["get", "pods", "-n", ctx.namespace, "-l", _app_selector(app), "-o", "json"])]
        workload = _one_running_pod(ctx.cluster, ctx.namespace, _app_selector(app))
        expected = catalog.spiffe_id(ctx.namespace, workload.service_account)
        evidence: dict[str, Any] = {"workload": workload.to_dict(), "expected_identity": expected}
        commands.append(ctx.cluster.command(
            ["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", catalog.ZTUNNEL_POD_LABEL, "-o", "json"]))
        ztunnel = ztunnel_for_node(ctx.cluster.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL),
                                   workload.node or "")
        if ztunnel is None:
            return Observation(False, f"no running ztunnel pod on node {workload.node}", evidence, commands)
        evidence["ztunnel_pod"] = ztunnel
        response = ctx.cluster.http_get(catalog.ISTIO_NAMESPACE, ztunnel, catalog.ZTUNNEL_ADMIN_PORT, "/config_dump")
        commands.extend(response.commands)
        if response.status != 200:
            return Observation(False, f"ztunnel {ztunnel} answered /config_dump with HTTP {response.status}",
                               evidence, commands)
        try:
            dump = json.loads(response.body)
        except ValueError as error:
            raise EvidenceError(f"ztunnel {ztunnel}'s /config_dump is not JSON ({error}).") from error
        certificates = certificates_from_config_dump(dump)
        certificate = find_certificate(certificates, expected)
        if certificate is None:
            held = ", ".join(item.identity for item in certificates) or "none"
            return Observation(False, f"ztunnel {ztunnel} on {workload.node} holds no certificate for {expected} "
                                      f"(it holds: {held})", evidence, commands)
        evidence["certificate"] = certificate.to_dict()
        problems = assess_certificate(certificate, expected, ctx.now())
        if problems:
            return Observation(False, "; ".join(problems), evidence, commands)
        return Observation(
            True,
            f"SAN {certificate.san_uris[0]}, issuer {certificate.issuer}, serial {certificate.serial}, valid "
            f"{certificate.not_before:%Y-%m-%d %H:%M} to {certificate.not_after:%Y-%m-%d %H:%M} UTC, chains to root "
            f"(from {ztunnel} on {workload.node})",
            evidence,
            commands,
        )

    expected_text = (
        f"the {app} ServiceAccount's SPIFFE ID as the leaf's URI SAN, state Available, valid now, chaining to the "
        "root held by the ztunnel on the same node"
    )
    return _result(ctx, certificate_check_name(app), expected_text, poll(ctx, probe),
                   f"an Available certificate for {app} in its node's ztunnel", started)


# --- d. ztunnel log evidence -------------------------------------------------------------------------------------


def select_outbound(
    entries: Iterable[AccessLogEntry], client_pod: str, destination_pods: Collection[str]
) -> AccessLogEntry | None:
    """The latest ``outbound`` line from `client_pod` to one of `destination_pods` (a server or its waypoint)."""
    found = None
    for entry in entries:
        if entry.direction == "outbound" and entry.src_workload == client_pod and (
                entry.dst_workload in destination_pods):
            found = entry
    return found


def select_inbound(
    entries: Iterable[AccessLogEntry], server_pod: str, source_pods: Collection[str]
) -> AccessLogEntry | None:
    """The latest ``inbound`` line to `server_pod` from one of `source_pods` (the client, or the waypoint)."""
    found = None
    for entry in entries:
        if entry.direction == "inbound" and entry.dst_workload == server_pod and entry.src_workload in source_pods:
            found = entry
    return found


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
    if outbound is None:
        problems.append("no outbound line on the client's ztunnel")
    else:
        if outbound.error:
            problems.append(f"outbound line has error {outbound.error!r}")
        if outbound.src_identity != client_identity:
            problems.append(f"outbound src.identity is {outbound.src_identity}, not {client_identity}")
        if outbound.dst_identity != hop_identity:
            problems.append(f"outbound dst.identity is {outbound.dst_identity}, not {hop_identity}")
    if inbound is None:
        problems.append("no inbound line on the server's ztunnel")
    else:
        if inbound.error:
            problems.append(f"inbound line has error {inbound.error!r}")
        if inbound.src_identity != source_identity:
            problems.append(f"inbound src.identity is {inbound.src_identity}, not {source_identity}")
        if inbound.dst_identity != server_identity:
            problems.append(f"inbound dst.identity is {inbound.dst_identity}, not {server_identity}")
    return problems


def check_ztunnel_logs(ctx: CheckContext) -> CheckResult:
    """Send sleep -> productpage and find the request in both ztunnels' access logs, each on its own node."""
    started = ctx.clock()
    first_request_at: list[float] = []
    waypoint_selector = f"{GATEWAY_NAME_LABEL}={catalog.WAYPOINT_NAME}"
    client_name, server_name = catalog.SLEEP, catalog.PRODUCTPAGE

    def probe() -> Observation:
        kube = ctx.cluster
        client = _one_running_pod(kube, ctx.namespace, _app_selector(client_name))
        server = _one_running_pod(kube, ctx.namespace, _app_selector(server_name))
        commands = [kube.command(["get", "pods", "-n", ctx.namespace, "-l", _app_selector(name), "-o", "json"])
                    for name in (client_name, server_name)]
        waypoint_pods: list[str] = []
        waypoint_identity = None
        if ctx.facts.waypoint_in_path:
            commands.append(kube.command(["get", "pods", "-n", ctx.namespace, "-l", waypoint_selector, "-o", "json"]))
            waypoints = running_pods(kube.pods(ctx.namespace, waypoint_selector))
            if not waypoints:
                raise NotFound(f"no running waypoint pod labelled {waypoint_selector} in {ctx.namespace}")
            waypoint_pods = [_name(pod) for pod in waypoints]
            waypoint_identity = catalog.spiffe_id(ctx.namespace, _service_account(waypoints[0]))
        ztunnels = kube.pods(catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL)
        commands.append(kube.command(
            ["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", catalog.ZTUNNEL_POD_LABEL, "-o", "json"]))
        client_ztunnel = ztunnel_for_node(ztunnels, client.node or "")
        server_ztunnel = ztunnel_for_node(ztunnels, server.node or "")
        if client_ztunnel is None or server_ztunnel is None:
            missing = client.node if client_ztunnel is None else server.node
            raise NotFound(f"no running ztunnel pod on node {missing}")

        if not first_request_at:
            first_request_at.append(ctx.clock())
        request, request_command = _curl(ctx, client_name, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace))
        commands.append(request_command)
        since_s = math.ceil(ctx.clock() - first_request_at[0]) + LOG_WINDOW_MARGIN_S
        client_log = kube.logs(catalog.ISTIO_NAMESPACE, client_ztunnel, since_s=since_s)
        server_log = client_log if server_ztunnel == client_ztunnel else kube.logs(
            catalog.ISTIO_NAMESPACE, server_ztunnel, since_s=since_s)
        commands += [kube.command(["logs", "-n", catalog.ISTIO_NAMESPACE, pod, f"--since={since_s}s"])
                     for pod in dict.fromkeys((client_ztunnel, server_ztunnel))]

        outbound = select_outbound(parse_ztunnel_access_log(client_log), client.name, waypoint_pods or [server.name])
        inbound = select_inbound(parse_ztunnel_access_log(server_log), server.name, waypoint_pods or [client.name])
        evidence = {
            "request": request.to_dict(),
            "waypoint_pods": waypoint_pods,
            "client": {**client.to_dict(), "ztunnel_pod": client_ztunnel,
                       "entry": outbound.to_dict() if outbound else None},
            "server": {**server.to_dict(), "ztunnel_pod": server_ztunnel,
                       "entry": inbound.to_dict() if inbound else None},
        }
        problems = assess_log_pair(
            outbound, inbound,
            client_identity=catalog.spiffe_id(ctx.namespace, client.service_account),
            server_identity=catalog.spiffe_id(ctx.namespace, server.service_account),
            waypoint_identity=waypoint_identity,
        )
        if problems or outbound is None or inbound is None:
            return Observation(False, "; ".join(problems), evidence, commands)
        return Observation(
            True,
            f"outbound on {client_ztunnel} ({client.node}): {outbound.src_identity} -> {outbound.dst_identity} "
            f"[{outbound.dst_workload}]; inbound on {server_ztunnel} ({server.node}): {inbound.src_identity} -> "
            f"{inbound.dst_identity}",
            evidence,
            commands,
        )

    if ctx.facts.waypoint_in_path:
        waypoint = f"waypoint {catalog.WAYPOINT_NAME}"
        hops = f"{client_name} -> {waypoint}", f"{waypoint} -> {server_name}"
    else:
        hops = f"{client_name} -> {server_name}", f"{client_name} -> {server_name}"
    expected = (
        f"outbound line {hops[0]} on the ztunnel of {client_name}'s node and inbound line {hops[1]} on the ztunnel "
        f"of {server_name}'s node, both with the SPIFFE identities of those ServiceAccounts and no error"
    )
    return _result(ctx, LOG_EVIDENCE_CHECK, expected, poll(ctx, probe),
                   "both access-log lines of a sleep -> productpage request", started)


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
        outcome, command = _curl(ctx, catalog.SLEEP, ctx.namespace, "GET", url)
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
    return _result(ctx, L7_PATH_CHECK, expected, poll(ctx, probe),
                   "the waypoint to be in the path" if in_path else "the waypoint to be out of the path", started)


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
# Prometheus scrapes every 15 s: asking every 5 s is often enough.
ADDON_POLL_INTERVAL_S = 5.0
# The labels of a Prometheus series that the evidence keeps.
PROMETHEUS_EVIDENCE_LABELS = ("reporter", "source_workload", "destination_workload", "destination_principal")


def _service_proxy(service: str, port: int) -> str:
    """The API server's proxy prefix for a Service in istio-system: reachable with ``kubectl get --raw``."""
    return f"/api/v1/namespaces/{catalog.ISTIO_NAMESPACE}/services/{service}:{port}/proxy"


def prometheus_mtls_query(source_principal: str) -> str:
    """The instant query for mTLS connections opened by `source_principal` (a SPIFFE ID)."""
    return (f'{TCP_CONNECTIONS_METRIC}{{source_principal="{source_principal}",'
            f'connection_security_policy="{MUTUAL_TLS}"}}')


def prometheus_query_path(query: str) -> str:
    """Prometheus' instant-query API for `query`, through the API server's service proxy."""
    return (f"{_service_proxy(catalog.PROMETHEUS_SERVICE, catalog.PROMETHEUS_PORT)}/api/v1/query?"
            f"query={urllib.parse.quote(query, safe='')}")


def kiali_graph_path(namespace: str, duration: str = KIALI_GRAPH_DURATION) -> str:
    """Kiali's workload graph API for `namespace`, through the API server's service proxy."""
    query = urllib.parse.urlencode({"namespaces": namespace, "graphType": "workload", "duration": duration})
    web_root = f"{_service_proxy(catalog.KIALI_SERVICE, catalog.KIALI_PORT)}{catalog.KIALI_WEB_ROOT}"
    return f"{web_root}/api/namespaces/graph?{query}"


def _number(text: Any) -> float:
    """A number Prometheus or Kiali wrote as a string ("12", "100", "NaN"); NaN when it is not one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def assess_prometheus_mtls(query_json: Any, source_principal: str) -> tuple[bool, str, dict[str, Any]]:
    """Decide whether a Prometheus instant-query answer shows mTLS connections opened by `source_principal`.

    Args:
        query_json: the decoded answer of ``/api/v1/query`` for `prometheus_mtls_query`: ``{status: "success",
            data: {resultType: "vector", result: [{metric: {labels}, value: [<unix time>, "<number>"]}]}}``, or
            ``{status: "error", errorType, error}``.
        source_principal: the client's SPIFFE ID.

    Returns:
        ``(ok, observed, evidence)``: ok when at least one series with that ``source_principal`` and
        ``connection_security_policy="mutual_tls"`` has a value above 0; the evidence lists each such series'
        reporter, workloads, destination principal and value.
    """
    if not isinstance(query_json, Mapping):
        return False, "Prometheus answered with JSON that is not an object", {}
    if query_json.get("status") == "error":
        error_type, error = query_json.get("errorType", "error"), query_json.get("error", "no message")
        return (False, f"Prometheus refused the query ({error_type}: {error})",
                {"errorType": error_type, "error": error})
    data = query_json.get("data")
    if not isinstance(data, Mapping):
        data = {}
    if query_json.get("status") != "success" or data.get("resultType") != "vector":
        observed = (f"Prometheus answered status {query_json.get('status')!r} with result type "
                    f"{data.get('resultType')!r}, not a success with a vector")
        return False, observed, {}
    series = []
    for sample in data.get("result") or []:
        if not isinstance(sample, Mapping):
            continue
        labels, value = sample.get("metric") or {}, sample.get("value")
        if labels.get("source_principal", source_principal) != source_principal or labels.get(
                "connection_security_policy", MUTUAL_TLS) != MUTUAL_TLS:
            continue  # the query selects on both; anything else is not evidence for them
        raw = value[1] if isinstance(value, (list, tuple)) and len(value) == 2 else None
        series.append({**{name: labels.get(name) for name in PROMETHEUS_EVIDENCE_LABELS}, "value": raw})
    evidence: dict[str, Any] = {"series": series}
    if not series:
        observed = (f"Prometheus has no {TCP_CONNECTIONS_METRIC} series with source_principal {source_principal} "
                    f"and connection_security_policy {MUTUAL_TLS} yet: it scrapes ztunnel every 15 s, so this fills "
                    "in shortly after traffic; if it stays empty, check that Prometheus scrapes the ztunnel pods "
                    "(Status > Targets in its UI)")
        return False, observed, evidence
    positive = [item for item in series if _number(item["value"]) > 0]
    if not positive:
        observed = (f"{len(series)} {TCP_CONNECTIONS_METRIC} series from {source_principal} with mutual_tls, but "
                    "every value is 0")
        return False, observed, evidence
    shown = "; ".join(
        f"{item['reporter']} reporter: {item['source_workload']} -> {item['destination_workload']} "
        f"({item['destination_principal']}) = {item['value']}" for item in positive)
    return True, f"{len(positive)} series of mTLS connections from {source_principal}: {shown}", evidence


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
            outcome, command = _curl(ctx, catalog.SLEEP, ctx.namespace, "GET", TRAFFIC_CASES[0].url(ctx.namespace))
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


def _get_addon_json(ctx: CheckContext, service: str, path: str) -> tuple[Any, str | None]:
    """The decoded answer of `service` at `path`, or None and why not (in one sentence)."""
    try:
        body = ctx.cluster.get_raw(path)
    except ClusterError as error:
        return None, _proxy_failure(service, error)
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"The {service} Service answered with something that is not JSON: {' '.join(body.split())[:80]!r}"


def check_prometheus_mtls(ctx: CheckContext) -> CheckResult:
    """Prometheus holds ztunnel's count of mTLS connections opened by sleep (after a few requests from sleep)."""
    started = ctx.clock()
    principal = catalog.spiffe_id(ctx.namespace, catalog.SLEEP)
    query = prometheus_mtls_query(principal)
    path = prometheus_query_path(query)
    sent: dict[str, int] = {}
    commands = [*_send_traffic(ctx, ADDON_TRAFFIC_REQUESTS, sent), ctx.cluster.command(["get", "--raw", path])]

    def probe() -> Observation:
        answer, failure = _get_addon_json(ctx, "prometheus", path)
        evidence: dict[str, Any] = {"query": query, "requests_sent": dict(sent)}
        if failure:
            return Observation(False, failure, evidence, commands)
        ok, observed, found = assess_prometheus_mtls(answer, principal)
        return Observation(ok, observed, {**evidence, **found}, commands)

    expected = (f"at least one {TCP_CONNECTIONS_METRIC} series with source_principal {principal} and "
                f"connection_security_policy {MUTUAL_TLS} above 0")
    return _result(ctx, PROMETHEUS_CHECK, expected, poll(ctx, probe, interval_s=ADDON_POLL_INTERVAL_S),
                   "Prometheus to scrape ztunnel's mTLS connection count", started)


def check_kiali_graph(ctx: CheckContext) -> CheckResult:
    """Kiali's graph shows sleep -> productpage-v1 with mTLS: tcp direct in ``l4-only``, http via the waypoint in
    ``l7``. Requests from sleep go first and again before every look, so the rate Kiali draws edges from is fresh."""
    started = ctx.clock()
    path = kiali_graph_path(ctx.namespace)
    sent: dict[str, int] = {}
    commands = [*_send_traffic(ctx, ADDON_TRAFFIC_REQUESTS - 1, sent)]

    def probe() -> Observation:
        for command in _send_traffic(ctx, 1, sent):
            if command not in commands:
                commands.append(command)
        graph, failure = _get_addon_json(ctx, "kiali", path)
        evidence: dict[str, Any] = {"requests_sent": dict(sent)}
        shown = [*commands, ctx.cluster.command(["get", "--raw", path])]
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
    return _result(ctx, KIALI_CHECK, expected, poll(ctx, probe, interval_s=ADDON_POLL_INTERVAL_S),
                   f"Kiali's graph to show {catalog.SLEEP} -> {PRODUCTPAGE_WORKLOAD}", started)


# --- Which checks run where, and running them -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSpec:
    """A check, the modes it applies to, and whether it reads the observability addons (Prometheus, Kiali)."""

    name: str
    modes: frozenset[str]
    run: Callable[[CheckContext], CheckResult]
    needs_addons: bool = False


def check_specs(addons: bool = False) -> list[CheckSpec]:
    """Every check, in run order, with the modes it applies to; the addon checks only when `addons` is true."""
    every_mode = frozenset(MODE_FACTS)
    specs = [CheckSpec(ENROLMENT_CHECK, every_mode, check_enrolment)]
    specs += [
        CheckSpec(case.name, frozenset(case.expect), functools.partial(check_traffic, case=case))
        for case in TRAFFIC_CASES
    ]
    specs += [
        CheckSpec(certificate_check_name(app), every_mode, functools.partial(check_certificate, app=app))
        for app in CERTIFICATE_WORKLOADS
    ]
    specs.append(CheckSpec(LOG_EVIDENCE_CHECK, every_mode, check_ztunnel_logs))
    specs.append(CheckSpec(L7_PATH_CHECK, every_mode, check_l7_path))
    specs.append(CheckSpec(PROMETHEUS_CHECK, every_mode, check_prometheus_mtls, needs_addons=True))
    specs.append(CheckSpec(KIALI_CHECK, every_mode, check_kiali_graph, needs_addons=True))
    return [spec for spec in specs if addons or not spec.needs_addons]


def run_checks(ctx: CheckContext, progress: Callable[[str], None] | None = None) -> Report:
    """Run every check that applies to `ctx.mode` (the addon checks only when `ctx.addons`), in order, into a report.

    Args:
        ctx: the cluster boundary, mode, namespace, addons and retry schedule.
        progress: called with one line as each check starts and finishes (the CLI prints them to stderr).

    Returns:
        The report. A check that crashes is reported as failed with the error; the run goes on.
    """
    report = Report(mode=ctx.mode, namespace=ctx.namespace, started_at=ctx.now())
    specs = [spec for spec in check_specs(addons=ctx.addons) if ctx.mode in spec.modes]
    for index, spec in enumerate(specs, start=1):
        if progress:
            progress(f"[{index}/{len(specs)}] {spec.name} ...")
        started = ctx.clock()
        try:
            result = spec.run(ctx)
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others' results
            result = CheckResult(spec.name, [], "the check to complete",
                                 f"the check crashed: {type(error).__name__}: {error}", {}, False,
                                 ctx.clock() - started)
        report.results.append(result)
        if progress:
            progress(f"[{index}/{len(specs)}] {'PASS' if result.passed else 'FAIL'} {spec.name} "
                     f"({result.duration_s:.1f}s): {result.observed}")
    return report


def stack_outputs(report: Report | Mapping[str, Any]) -> dict[str, Any]:
    """The values the Pulumi stack exports: certificate SANs, the ztunnel evidence, and the whole report.

    Args:
        report: a `Report`, or its dict form (what ``python -m verify --json`` prints), so a program that runs the
            command line can build its outputs from the printed JSON.

    Returns:
        ``certificate_san`` (workload -> the leaf's URI SAN, None when unread), ``ztunnel_evidence`` (client and
        server lines, parsed, with node and ztunnel pod) and ``verification`` (the report as a dict).
    """
    data = report.to_dict() if isinstance(report, Report) else dict(report)
    by_name = {result["name"]: result for result in data.get("results", [])}
    sans = {}
    for app in CERTIFICATE_WORKLOADS:
        certificate = by_name.get(certificate_check_name(app), {}).get("evidence", {}).get("certificate") or {}
        sans[app] = certificate["san_uris"][0] if certificate.get("san_uris") else None
    evidence = by_name.get(LOG_EVIDENCE_CHECK, {}).get("evidence", {})
    return {
        "certificate_san": sans,
        "ztunnel_evidence": {"client": evidence.get("client"), "server": evidence.get("server")},
        "verification": data,
    }
