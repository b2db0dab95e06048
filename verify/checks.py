"""The checks that prove the mesh works, per mesh mode, each returning a structured `CheckResult`.

Every check asks the cluster through a `Cluster` boundary (`verify.cluster`), decides with a pure function that the
tests exercise on recorded outputs, and retries on a bounded schedule until the answer is stable: policies,
waypoints and certificates take seconds to propagate after a `pulumi up`.

Which check runs in which mode, and what it expects there, is data (`TRAFFIC_CASES`, `MODE_FACTS`,
`check_specs`), not branches scattered through the code.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
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
    "check_specs",
    "classify_curl",
    "envoy_markers",
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


def certificate_check_name(app: str) -> str:
    return f"mtls certificate: {app}"


# Outcome kinds of one curl request.
OK, RESET, EMPTY_REPLY, FORBIDDEN, OTHER = "ok", "reset", "empty-reply", "forbidden", "other"


@dataclass(frozen=True)
class ModeFacts:
    """What differs between the two mesh modes, as far as the checks are concerned."""

    waypoint_in_path: bool  # sleep -> productpage goes through the waypoint's Envoy


MODE_FACTS: Mapping[str, ModeFacts] = {
    "l4-only": ModeFacts(waypoint_in_path=False),
    "l7": ModeFacts(waypoint_in_path=True),
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
    """

    cluster: Cluster
    mode: str
    namespace: str = catalog.DEFAULT_APPS_NAMESPACE
    timeout_s: float = 120.0
    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

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


def poll(ctx: CheckContext, probe: Callable[[], Observation], *, consecutive: int = 1) -> PollOutcome:
    """Run `probe` every `ctx.interval_s` until it succeeds `consecutive` times in a row or `ctx.timeout_s` passes.

    Cluster and format errors count as failed attempts (their message becomes the observation), so a transient
    kubectl failure is retried like any other unstable answer.
    """
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
        if seen.settled or ctx.clock() + ctx.interval_s > deadline:
            return PollOutcome(seen, attempts, False, ctx.clock() - started)
        ctx.sleep(ctx.interval_s)


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
        app_pods_json: ``kubectl get pods -o json`` in the applications' namespace. Pods of Istio-deployed
            gateways (label ``gateway.networking.k8s.io/gateway-name``: the waypoint, the ingress gateway) are Istio
            proxies, not apps, and are skipped.
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
    for pod in _items(app_pods_json):
        labels = pod.get("metadata", {}).get("labels") or {}
        if GATEWAY_NAME_LABEL in labels:
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

    @property
    def name(self) -> str:
        return f"traffic: {self.client} {self.method} /{catalog.PRODUCTPAGE}"

    def url(self, namespace: str) -> str:
        # Inside the namespace the short name resolves; from outside only the full service name does.
        host = catalog.PRODUCTPAGE if self.client_namespace in (None, namespace) else (
            f"{catalog.PRODUCTPAGE}.{namespace}.svc.cluster.local")
        return f"http://{host}:{catalog.BOOKINFO_PORT}/{catalog.PRODUCTPAGE}"


BOTH_MODES = tuple(MODE_FACTS)
TRAFFIC_CASES = (
    TrafficCase(catalog.SLEEP, "GET", dict.fromkeys(BOTH_MODES, ALLOWED_PAGE)),
    TrafficCase(catalog.NOTSLEEP, "GET", {"l4-only": RESET_BY_ZTUNNEL, "l7": DENIED_BY_WAYPOINT}),
    TrafficCase(catalog.SLEEP, "DELETE", {"l7": DENIED_BY_WAYPOINT}),
    TrafficCase(catalog.OUTSIDE_CLIENT, "GET", dict.fromkeys(BOTH_MODES, REFUSED_PLAINTEXT),
                client_namespace=catalog.OUTSIDE_NAMESPACE),
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


# --- Which checks run where, and running them -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSpec:
    """A check and the modes it applies to."""

    name: str
    modes: frozenset[str]
    run: Callable[[CheckContext], CheckResult]


def check_specs() -> list[CheckSpec]:
    """Every check, in run order, with the modes it applies to."""
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
    return specs


def run_checks(ctx: CheckContext, progress: Callable[[str], None] | None = None) -> Report:
    """Run every check that applies to `ctx.mode`, in order, and collect the report.

    Args:
        ctx: the cluster boundary, mode, namespace and retry schedule.
        progress: called with one line as each check starts and finishes (the CLI prints them to stderr).

    Returns:
        The report. A check that crashes is reported as failed with the error; the run goes on.
    """
    report = Report(mode=ctx.mode, namespace=ctx.namespace, started_at=ctx.now())
    specs = [spec for spec in check_specs() if ctx.mode in spec.modes]
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
