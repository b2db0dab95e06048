"""The traffic matrix: curl from each client, classified (200, 403 from the waypoint, reset, empty reply), compared
with what each mesh mode must answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lab import catalog
from verify.checks.base import (
    CURL_EXIT_EMPTY_REPLY,
    CURL_EXIT_RECV_FAILURE,
    CURL_MAX_TIME_S,
    EMPTY_REPLY,
    FORBIDDEN,
    MODE_FACTS,
    OK,
    OTHER,
    PROBE_HEADER,
    PRODUCTPAGE_TITLE,
    RBAC_DENIED_BODY,
    RESET,
    CheckContext,
    Observation,
    check_result,
    poll,
    probe_padding,
)
from verify.report import CheckResult

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


def curl_argv(method: str, url: str, local_port: int | None = None) -> list[str]:
    """A curl command that opens a new connection, prints the response head and body, then the status code.

    ``Connection: close`` makes the server end the connection after the response, so ztunnel logs it at once and no
    connection is reused by a later request (each ``kubectl exec`` is a new curl process anyway). `local_port` binds
    the client end to that port, which ztunnel's client-side access line logs in `src.addr` (see `send_probe`).
    """
    argv = ["curl", "-sS", "-i", "--max-time", str(CURL_MAX_TIME_S), "-H", "Connection: close"]
    if local_port is not None:
        argv += ["--local-port", str(local_port), "-H", f"{PROBE_HEADER}: {probe_padding(local_port)}"]
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
# ztunnel closes a denied connection; curl reads that as a reset (exit 56) or, when the close comes first, as an
# empty reply (exit 52). Istio's own ambient deny check accepts both; the observation says which one came.
RESET_BY_ZTUNNEL = Expect(
    frozenset({RESET, EMPTY_REPLY}),
    "connection closed by ztunnel's L4 policy: reset (curl exit 56) or empty reply (curl exit 52), no HTTP response",
)
DENIED_BY_WAYPOINT = Expect(frozenset({FORBIDDEN}), f"HTTP 403 {RBAC_DENIED_BODY!r} from the waypoint's L7 policy")


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
)
# The outside client's plaintext request is not a cell of this matrix: a refusal alone does not show STRICT mTLS
# caused it. `verify.checks.strict_mtls` checks it with a positive control and ztunnel's own account of the refusal.
# A policy change shows up within seconds but not atomically on every node: ask for two agreeing answers in a row.
TRAFFIC_CONSECUTIVE = 2


def send_curl(ctx: CheckContext, client: str, namespace: str, method: str, url: str,
              local_port: int | None = None, pod: str | None = None) -> tuple[CurlOutcome, str]:
    """Run the request in `client`'s container: in the pod named `pod`, else in a pod of ``deploy/<client>``."""
    result = ctx.cluster.exec(namespace, pod or f"deploy/{client}", client, curl_argv(method, url, local_port),
                              timeout_s=CURL_MAX_TIME_S + 20)
    return classify_curl(result.exit_code, result.stdout, result.stderr), result.command


@dataclass(frozen=True)
class Probe:
    """One request a check sent, with what finds its ztunnel lines again: its client port and when it ran.

    Attributes:
        outcome: the classified answer.
        command: the kubectl exec that sent it.
        local_port: the client port curl bound (``--local-port``).
        sent_at, done_at: this machine's time just before the request and just after curl returned, for the report
            (never compared with ztunnel's times, which come from the nodes' clocks).
    """

    outcome: CurlOutcome
    command: str
    local_port: int
    sent_at: datetime
    done_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"local_port": self.local_port, "sent_at": self.sent_at.isoformat(),
                "done_at": self.done_at.isoformat(), "request": self.outcome.to_dict()}


def send_probe(ctx: CheckContext, client: str, namespace: str, method: str, url: str, *,
               pod: str | None = None) -> Probe:
    """Send one request from a port drawn for it alone, so ztunnel's line for this very request can be found.

    A check that reads the client side's line passes the `pod` whose node's ztunnel it reads: ``deploy/<client>``
    picks a pod of its own, which during a rollout may be another one, on another node.
    """
    port = ctx.local_port()
    sent_at = ctx.now()
    outcome, command = send_curl(ctx, client, namespace, method, url, local_port=port, pod=pod)
    return Probe(outcome, command, port, sent_at, ctx.now())


def check_traffic(ctx: CheckContext, case: TrafficCase) -> CheckResult:
    """Send the case's request from its client with a new connection each time and compare the outcome."""
    started = ctx.clock()
    expect = case.expect[ctx.mode]
    namespace = case.client_namespace or ctx.namespace
    url = case.url(ctx.namespace)

    def probe() -> Observation:
        outcome, command = send_curl(ctx, case.client, namespace, case.method, url)
        evidence = {"client": f"{namespace}/deploy/{case.client}", "method": case.method, "url": url,
                    **outcome.to_dict()}
        return Observation(expect.met_by(outcome), outcome.detail, evidence, [command])

    outcome = poll(ctx, probe, consecutive=TRAFFIC_CONSECUTIVE)
    return check_result(ctx, case.name, expect.text, outcome, f"{TRAFFIC_CONSECUTIVE} answers in a row of: {expect.text}",
                   started)
