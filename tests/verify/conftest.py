"""Shared fixtures for the verify tests: recorded-format log lines, minted certificates, and a fake cluster.

Everything here is offline. The log lines follow ztunnel's access-log layout (istio/ztunnel src/proxy/metrics.rs,
src/telemetry.rs) with values made up for these tests; the certificates are minted here with `cryptography`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import catalog
from verify.checks.base import PROBE_HEADER, CheckContext, probe_padding
from verify.cluster import ClusterError, ExecResult, HttpResponse, RawGetError  # noqa: F401 (tests reach it as fx.ClusterError)

# --- ztunnel access-log lines ----------------------------------------------------------------------------------

NS = catalog.DEFAULT_APPS_NAMESPACE
SLEEP_POD = "sleep-6d68c9b6c4-x2k8q"
NOTSLEEP_POD = "notsleep-84f5d7c9bd-m9wqz"
PRODUCTPAGE_POD = "productpage-v1-7c9f8b5d4-qx2lp"
WAYPOINT_POD = f"{catalog.WAYPOINT_NAME}-5f7d9c8b6-7lq4w"
OUTSIDE_POD = "outside-client-7b8c9d6f5-zzt4r"
SLEEP_ID = catalog.spiffe_id(NS, "sleep")
NOTSLEEP_ID = catalog.spiffe_id(NS, "notsleep")
PRODUCTPAGE_ID = catalog.spiffe_id(NS, "bookinfo-productpage")
WAYPOINT_ID = catalog.spiffe_id(NS, catalog.WAYPOINT_NAME)
PRODUCTPAGE_SVC = f"productpage.{NS}.svc.cluster.local"
ZTUNNEL_CLIENT, ZTUNNEL_SERVER = "ztunnel-4hx7p", "ztunnel-9kq2m"

# Layout: <time>\t<level>\taccess\tconnection complete\t<fields>. 1.30: no cluster fields.
LINE_130_OUTBOUND = (
    "2026-10-02T09:14:03.120455Z\tinfo\taccess\tconnection complete\t"
    f'src.addr=10.244.1.7:40312 src.workload="{SLEEP_POD}" src.namespace="default" src.identity="{SLEEP_ID}" '
    f'dst.addr=10.244.2.9:15008 dst.hbone_addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{PRODUCTPAGE_POD}" dst.namespace="default" dst.identity="{PRODUCTPAGE_ID}" '
    'direction="outbound" bytes_sent=90 bytes_recv=5002 duration="3ms"'
)
# 1.31 adds src.cluster / dst.cluster.
LINE_131_INBOUND = (
    "2026-10-02T09:14:03.122871Z\tinfo\taccess\tconnection complete\t"
    f'src.addr=10.244.1.7:40312 src.workload="{SLEEP_POD}" src.namespace="default" src.identity="{SLEEP_ID}" '
    'src.cluster="Kubernetes" '
    f'dst.addr=10.244.2.9:15008 dst.hbone_addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{PRODUCTPAGE_POD}" dst.namespace="default" dst.identity="{PRODUCTPAGE_ID}" '
    'dst.cluster="Kubernetes" direction="inbound" bytes_sent=5002 bytes_recv=90 duration="2ms"'
)
LINE_131_OUTBOUND = LINE_130_OUTBOUND.replace(
    f'src.identity="{SLEEP_ID}" ', f'src.identity="{SLEEP_ID}" src.cluster="Kubernetes" '
).replace('dst.identity="' + PRODUCTPAGE_ID + '" ', f'dst.identity="{PRODUCTPAGE_ID}" dst.cluster="Kubernetes" ')
# Older ztunnels quoted dst.hbone_addr; heads may be separated by spaces rather than tabs.
LINE_QUOTED_HBONE_SPACES = LINE_130_OUTBOUND.replace("\t", " ").replace(
    "dst.hbone_addr=10.244.2.9:9080", 'dst.hbone_addr="10.244.2.9:9080"'
)
# Server side: an L4 ALLOW policy that does not name notsleep.
LINE_DENY_NONE_ALLOWED = (
    "2026-10-02T09:15:11.500120Z\terror\taccess\tconnection complete\t"
    f'src.addr=10.244.1.8:51544 src.workload="{NOTSLEEP_POD}" src.namespace="default" src.identity="{NOTSLEEP_ID}" '
    'src.cluster="Kubernetes" '
    f'dst.addr=10.244.2.9:15008 dst.hbone_addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{PRODUCTPAGE_POD}" dst.namespace="default" dst.identity="{PRODUCTPAGE_ID}" '
    'dst.cluster="Kubernetes" direction="inbound" bytes_sent=0 bytes_recv=0 duration="0ms" '
    'error="connection closed due to policy rejection: allow policies exist, but none allowed"'
)
# Server side: a DENY policy.
LINE_DENY_EXPLICIT = LINE_DENY_NONE_ALLOWED.replace(
    "allow policies exist, but none allowed", "explicitly denied by: default/deny-notsleep"
)
# Client side of the same denial: the HBONE CONNECT came back 401.
LINE_CLIENT_401 = (
    "2026-10-02T09:15:11.501003Z\terror\taccess\tconnection complete\t"
    f'src.addr=10.244.1.8:51544 src.workload="{NOTSLEEP_POD}" src.namespace="default" src.identity="{NOTSLEEP_ID}" '
    f'dst.addr=10.244.2.9:15008 dst.hbone_addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{PRODUCTPAGE_POD}" dst.namespace="default" dst.identity="{PRODUCTPAGE_ID}" '
    'direction="outbound" bytes_sent=0 bytes_recv=0 duration="1ms" error="http status: 401 Unauthorized"'
)
# STRICT mTLS: plaintext from a pod outside the mesh, refused by the server's ztunnel. No identities, no tunnel.
LINE_STRICT_REFUSAL = (
    "2026-10-02T09:16:40.004211Z\terror\taccess\tconnection complete\t"
    f'src.addr=10.244.1.12:38870 src.workload="{OUTSIDE_POD}" src.namespace="{catalog.OUTSIDE_NAMESPACE}" '
    f'dst.addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" dst.workload="{PRODUCTPAGE_POD}" '
    'dst.namespace="default" direction="inbound" bytes_sent=0 bytes_recv=0 duration="0ms" '
    'error="connection closed due to policy rejection: explicitly denied by: '
    'istio-system/istio_converted_static_strict"'
)
# The same refusal at details, the outside client's real target: no ALLOW policy covers details, so STRICT refuses it.
DETAILS_POD = "details-v1-6f8f8b7d9c-2xkzn"
DETAILS_SVC = f"details.{NS}.svc.cluster.local"
LINE_STRICT_REFUSAL_DETAILS = LINE_STRICT_REFUSAL.replace("10.244.2.9:9080", "10.244.1.11:9080").replace(
    PRODUCTPAGE_SVC, DETAILS_SVC).replace(PRODUCTPAGE_POD, DETAILS_POD)
# l7: the client's ztunnel tunnels to the waypoint...
LINE_WAYPOINT_OUTBOUND = (
    "2026-10-02T09:17:02.310009Z\tinfo\taccess\tconnection complete\t"
    f'src.addr=10.244.1.7:44120 src.workload="{SLEEP_POD}" src.namespace="default" src.identity="{SLEEP_ID}" '
    'src.cluster="Kubernetes" '
    f'dst.addr=10.244.1.15:15008 dst.hbone_addr=10.96.120.7:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{WAYPOINT_POD}" dst.namespace="default" dst.identity="{WAYPOINT_ID}" '
    'dst.cluster="Kubernetes" direction="outbound" bytes_sent=90 bytes_recv=5120 duration="14ms"'
)
# ...and the server's ztunnel sees the waypoint as the source.
LINE_WAYPOINT_INBOUND = (
    "2026-10-02T09:17:04.402115Z\tinfo\taccess\tconnection complete\t"
    f'src.addr=10.244.1.15:39552 src.workload="{WAYPOINT_POD}" src.namespace="default" src.identity="{WAYPOINT_ID}" '
    'src.cluster="Kubernetes" '
    f'dst.addr=10.244.2.9:15008 dst.hbone_addr=10.244.2.9:9080 dst.service="{PRODUCTPAGE_SVC}" '
    f'dst.workload="{PRODUCTPAGE_POD}" dst.namespace="default" dst.identity="{PRODUCTPAGE_ID}" '
    'dst.cluster="Kubernetes" direction="inbound" bytes_sent=5120 bytes_recv=1310 duration="2093ms"'
)
# Lines a ztunnel log also holds, which the parser must skip.
UNRELATED_LINES = [
    "2026-10-02T09:10:00.000120Z\tinfo\tztunnel\tversion: version.BuildInfo{Version:\"1.31.1\"}",
    "2026-10-02T09:10:00.101201Z\tinfo\txds::client:xds{id=1}\tStream established",
    "2026-10-02T09:10:00.205410Z\tinfo\tproxy::inbound\tlistener established address=[::]:15008",
    ("2026-10-02T09:15:30.000001Z\twarn\taccess\tconnection failed\tsrc.addr=10.244.1.9:1234 "
     'dst.addr=10.244.2.9:9080 direction="inbound" error="unknown source"'),
    "",
    "   ",
    "connection complete but not an access line",
]



def stamped(line: str, when: dt.datetime) -> str:
    """`line` as ztunnel would have written it at `when` (its head's RFC 3339 time replaced)."""
    _, tab, rest = line.partition("\t")
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + tab + rest


def from_port(line: str, port: int) -> str:
    """`line` with the port of its `src.addr` replaced: the client socket a probe bound with --local-port."""
    start = line.index("src.addr=") + len("src.addr=")
    end = line.index(" ", start)
    address = line[start:end]
    return line[:start] + address.rpartition(":")[0] + f":{port}" + line[end:]


ALL_ACCESS_LINES = [
    LINE_130_OUTBOUND, LINE_131_INBOUND, LINE_131_OUTBOUND, LINE_QUOTED_HBONE_SPACES, LINE_DENY_NONE_ALLOWED,
    LINE_DENY_EXPLICIT, LINE_CLIENT_401, LINE_STRICT_REFUSAL, LINE_WAYPOINT_OUTBOUND, LINE_WAYPOINT_INBOUND,
]


# --- Certificates ----------------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 10, 2, 9, 30, tzinfo=dt.UTC)


@dataclass
class Issuer:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(organization: str, common_name: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def mint_ca(organization: str = "cluster.local", common_name: str | None = None,
            signer: Issuer | None = None) -> Issuer:
    """A CA certificate: self-signed root, or an intermediate signed by `signer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(organization, common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.certificate.subject if signer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return Issuer(builder.sign(signer.key if signer else key, hashes.SHA256()), key)


def mint_leaf(issuer: Issuer, uris: Sequence[str], *, serial: int = 0x5A3F00C1D2,
              not_before: dt.datetime = NOW - dt.timedelta(hours=1),
              not_after: dt.datetime = NOW + dt.timedelta(hours=23)) -> x509.Certificate:
    """A workload certificate like Istio's CA issues: no subject, URI SANs only."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]), critical=True
        )
    return builder.sign(issuer.key, hashes.SHA256())


def pem_text(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_dump(certificate: x509.Certificate, *, raw_pem: bool = False) -> dict[str, str]:
    """One certChain/rootCerts object as ztunnel's /config_dump writes it."""
    text = pem_text(certificate)
    return {
        "pem": text if raw_pem else base64.b64encode(text.encode("ascii")).decode("ascii"),
        "serialNumber": str(certificate.serial_number),
        "validFrom": certificate.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expirationTime": certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def certificate_entry(identity: str, chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], *,
                      state: str = "Available", raw_pem: bool = False) -> dict[str, Any]:
    return {
        "identity": identity,
        "state": state,
        "certChain": [cert_dump(item, raw_pem=raw_pem) for item in chain],
        "rootCerts": [cert_dump(item, raw_pem=raw_pem) for item in roots],
    }


@pytest.fixture(scope="session")
def root_ca() -> Issuer:
    return mint_ca()


@pytest.fixture(scope="session")
def workload_certs(root_ca: Issuer) -> dict[str, x509.Certificate]:
    """Leaves for sleep and productpage, signed by the root."""
    return {SLEEP_ID: mint_leaf(root_ca, [SLEEP_ID]), PRODUCTPAGE_ID: mint_leaf(root_ca, [PRODUCTPAGE_ID])}


# --- Recorded curl outputs (as `kubectl exec ... curl -sS -i ... -w '\nverify-http-code:%{http_code}\n'`) -----

PAGE = (
    "<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n"
    "    <title>Simple Bookstore App</title>\n  </head>\n  <body>\n    <h3>The Comedy of Errors</h3>\n"
    "  </body>\n</html>"
)


def curl_page(envoy: bool = False, status: str = "200 OK", body: str = PAGE) -> ExecResult:
    if envoy:
        head = (f"HTTP/1.1 {status}\r\nserver: istio-envoy\r\ncontent-type: text/html; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nx-envoy-upstream-service-time: 41\r\nconnection: close\r\n\r\n")
    else:
        head = (f"HTTP/1.1 {status}\r\nServer: gunicorn\r\nDate: Fri, 02 Oct 2026 09:14:03 GMT\r\n"
                f"Connection: close\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n")
    return ExecResult("kubectl exec ...", 0, f"{head}{body}\nverify-http-code:{status[:3]}\n", "")


def curl_details() -> ExecResult:
    """details' answer for book 0 (WEBrick, JSON)."""
    body = ('{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,'
            '"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}')
    head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: WEBrick/1.3.1 (Ruby/2.7.1/2020-03-31)\r\n"
            f"Date: Fri, 02 Oct 2026 09:14:03 GMT\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return ExecResult("kubectl exec ...", 0, f"{head}{body}\nverify-http-code:200\n", "")


def curl_forbidden() -> ExecResult:
    return ExecResult(
        "kubectl exec ...", 0,
        "HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\ncontent-type: text/plain\r\n"
        "date: Fri, 02 Oct 2026 09:14:03 GMT\r\nserver: istio-envoy\r\nconnection: close\r\n\r\n"
        "RBAC: access denied\nverify-http-code:403\n",
        "",
    )


def curl_reset() -> ExecResult:
    return ExecResult("kubectl exec ...", 56, "\nverify-http-code:000\n",
                      "curl: (56) Recv failure: Connection reset by peer\ncommand terminated with exit code 56\n")


def curl_empty_reply() -> ExecResult:
    return ExecResult("kubectl exec ...", 52, "\nverify-http-code:000\n",
                      "curl: (52) Empty reply from server\ncommand terminated with exit code 52\n")


def exec_failure() -> ExecResult:
    return ExecResult("kubectl exec ...", 1, "",
                      'error: unable to upgrade connection: container not found ("sleep")\n')


# --- Prometheus instant queries and Kiali graphs, in their APIs' formats -------------------------------------------

PROMETHEUS_PROXY = "/api/v1/namespaces/istio-system/services/prometheus:9090/proxy"
KIALI_PROXY = "/api/v1/namespaces/istio-system/services/kiali:20001/proxy/kiali"
SCRAPE_TIME = 1790933640.123


def prometheus_series(reporter: str, destination_workload: str, destination_principal: str, value: str,
                      source_principal: str = SLEEP_ID) -> dict[str, Any]:
    """One vector sample of istio_tcp_connections_opened_total with the labels ztunnel reports."""
    return {
        "metric": {
            "__name__": "istio_tcp_connections_opened_total",
            "app": "ztunnel",
            "connection_security_policy": "mutual_tls",
            "destination_app": destination_workload.rsplit("-", 1)[0],
            "destination_canonical_revision": "v1",
            "destination_canonical_service": destination_workload.rsplit("-", 1)[0],
            "destination_cluster": "Kubernetes",
            "destination_principal": destination_principal,
            "destination_service": PRODUCTPAGE_SVC,
            "destination_service_name": "productpage",
            "destination_service_namespace": NS,
            "destination_version": "v1",
            "destination_workload": destination_workload,
            "destination_workload_namespace": NS,
            "instance": "10.244.1.3:15020",
            "job": "kubernetes-pods",
            "namespace": "istio-system",
            "pod": ZTUNNEL_CLIENT if reporter == "source" else ZTUNNEL_SERVER,
            "reporter": reporter,
            "request_protocol": "tcp",
            "response_flags": "-",
            "source_app": "sleep",
            "source_canonical_revision": "latest",
            "source_canonical_service": "sleep",
            "source_cluster": "Kubernetes",
            "source_principal": source_principal,
            "source_version": "unknown",
            "source_workload": "sleep",
            "source_workload_namespace": NS,
        },
        "value": [SCRAPE_TIME, value],
    }


def prometheus_vector(*series: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": list(series)}}


def prometheus_counted(answer: dict[str, Any], more: int) -> dict[str, Any]:
    """`answer` with every series' value raised by `more`."""
    grown = json.loads(json.dumps(answer))
    for sample in grown["data"]["result"]:
        sample["value"][1] = str(int(sample["value"][1]) + more)
    return grown


@dataclass
class CountingPrometheus:
    """A Prometheus whose answers count sleep's connections to productpage on top of `answer`'s values (what earlier
    traffic left), as of its last scrape of ztunnel.

    Without a `clock` it scrapes between two queries: each answer counts up to the query before it. With one
    (seconds), it scrapes every `interval_s` from the clock's 0 on, and an answer counts up to the last query before
    the latest scrape (never more than Prometheus could have seen).
    """

    cluster: Any
    answer: dict[str, Any]
    clock: Callable[[], float] | None = None
    interval_s: float = catalog.PROMETHEUS_SCRAPE_INTERVAL_S
    scraped: int = 0
    _last_query: tuple[float, int] | None = None

    def _sent(self) -> int:
        return sum(catalog.PRODUCTPAGE in url
                   for _, url, _, _ in self.cluster.probes_from(NS, catalog.SLEEP, every_request=True))

    def __call__(self) -> dict[str, Any]:
        if self.clock is None:
            shown = prometheus_counted(self.answer, self.scraped)
            self.scraped = self._sent()
            return shown
        now = self.clock()
        if self._last_query is not None and now // self.interval_s > self._last_query[0] // self.interval_s:
            self.scraped = self._last_query[1]
        self._last_query = (now, self._sent())
        return prometheus_counted(self.answer, self.scraped)


PROMETHEUS_L4 = prometheus_vector(
    prometheus_series("source", "productpage-v1", PRODUCTPAGE_ID, "7"),
    prometheus_series("destination", "productpage-v1", PRODUCTPAGE_ID, "7"),
)
PROMETHEUS_L7 = prometheus_vector(prometheus_series("source", catalog.WAYPOINT_NAME, WAYPOINT_ID, "4"))
PROMETHEUS_EMPTY = prometheus_vector()
PROMETHEUS_BAD_QUERY = {
    "status": "error",
    "errorType": "bad_data",
    "error": 'invalid parameter "query": 1:36: parse error: unexpected "=" in label matching',
}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def kiali_node(workload: str, *, app: str | None = None, version: str | None = None, namespace: str = NS,
               **flags: Any) -> dict[str, Any]:
    """A workload node as Kiali's graph API writes it (ids are sha256 hex of the node key)."""
    data: dict[str, Any] = {
        "id": _hash(f"Kubernetes_{namespace}_{workload}"),
        "nodeType": "workload",
        "cluster": "Kubernetes",
        "namespace": namespace,
        "workload": workload,
        "app": app if app is not None else workload.rsplit("-", 1)[0],
        "healthData": None,
        "isAmbient": True,
        **flags,
    }
    if version:
        data["version"] = version
    return {"data": data}


def kiali_edge(source: dict[str, Any], target: dict[str, Any], protocol: str, *, mtls: str | None = "100",
               waypoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """An edge as Kiali writes it: rates and percentages are decimal strings; isMTLS is absent without mTLS."""
    if protocol == "http":
        traffic = {"protocol": "http", "rates": {"http": "0.27", "httpPercentReq": "100.0"},
                   "responses": {"200": {"flags": {"-": "100.0"}, "hosts": {PRODUCTPAGE_SVC: "100.0"}}}}
    else:
        traffic = {"protocol": "tcp", "rates": {"tcp": "412.05"},
                   "responses": {"-": {"flags": {"-": "100.0"}, "hosts": {PRODUCTPAGE_SVC: "100.0"}}}}
    data: dict[str, Any] = {
        "id": _hash(source["data"]["id"] + target["data"]["id"] + protocol),
        "source": source["data"]["id"],
        "target": target["data"]["id"],
        "traffic": traffic,
    }
    if mtls is not None:
        data["isMTLS"] = mtls
        data["sourcePrincipal"] = SLEEP_ID
        data["destPrincipal"] = PRODUCTPAGE_ID
    if waypoint is not None:
        data["waypoint"] = waypoint
    return {"data": data}


def kiali_graph(nodes: Sequence[dict[str, Any]], edges: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"timestamp": 1790933641, "duration": 120, "graphType": "workload",
            "elements": {"nodes": list(nodes), "edges": list(edges)}}


class Graph:
    """The graphs Kiali draws of the lab's namespace, per shape."""

    box: ClassVar[dict[str, Any]] = {"data": {"id": _hash("box-default"), "nodeType": "box",
                                              "cluster": "Kubernetes", "namespace": NS, "isBox": "namespace"}}
    sleep: ClassVar[dict[str, Any]] = kiali_node("sleep", app="sleep")
    productpage: ClassVar[dict[str, Any]] = kiali_node("productpage-v1", version="v1")
    details: ClassVar[dict[str, Any]] = kiali_node("details-v1", version="v1")
    gateway: ClassVar[dict[str, Any]] = kiali_node(catalog.INGRESS_GATEWAY_WORKLOAD,
                                                   app=catalog.INGRESS_GATEWAY_WORKLOAD,
                                                   isGateway={"ingressInfo": {"hostnames": ["*"]}})
    waypoint: ClassVar[dict[str, Any]] = kiali_node(catalog.WAYPOINT_NAME, app="", isWaypoint=True)

    @classmethod
    def l4(cls, *, mtls: str | None = "100") -> dict[str, Any]:
        """No waypoint: ztunnel's TCP edges only."""
        return kiali_graph(
            [cls.box, cls.gateway, cls.sleep, cls.productpage, cls.details],
            [kiali_edge(cls.gateway, cls.productpage, "tcp"),
             kiali_edge(cls.sleep, cls.productpage, "tcp", mtls=mtls),
             kiali_edge(cls.productpage, cls.details, "tcp")],
        )

    @classmethod
    def l7_collapsed(cls) -> dict[str, Any]:
        """The waypoint folded into one HTTP edge that carries a waypoint field."""
        return kiali_graph(
            [cls.box, cls.sleep, cls.productpage, cls.details],
            [kiali_edge(cls.sleep, cls.productpage, "http", waypoint={"direction": "to"}),
             kiali_edge(cls.productpage, cls.details, "tcp")],
        )

    @classmethod
    def l7_waypoint_node(cls, *, waypoint: dict[str, Any] | None = None, protocol: str = "http",
                         mtls: str | None = "100") -> dict[str, Any]:
        """The waypoint as a node of its own: sleep -> waypoint -> productpage-v1."""
        node = waypoint or cls.waypoint
        back = kiali_edge(node, cls.sleep, protocol)["data"]
        return kiali_graph(
            [cls.box, cls.sleep, node, cls.productpage, cls.details],
            [kiali_edge(cls.sleep, node, protocol, mtls=mtls, waypoint={"direction": "to", "fromEdge": back}),
             kiali_edge(node, cls.productpage, protocol, mtls=mtls, waypoint={"direction": "from"}),
             kiali_edge(cls.productpage, cls.details, "tcp")],
        )

    @classmethod
    def l7_default(cls) -> dict[str, Any]:
        """What Kiali 2.x shows by default: the waypoint's HTTP edge sleep -> productpage-v1, and ztunnel's TCP
        edges to and from the waypoint node."""
        return kiali_graph(
            [cls.box, cls.sleep, cls.waypoint, cls.productpage],
            [kiali_edge(cls.sleep, cls.productpage, "http"),
             kiali_edge(cls.sleep, cls.waypoint, "tcp", waypoint={"direction": "to"}),
             kiali_edge(cls.waypoint, cls.productpage, "tcp", waypoint={"direction": "from"})],
        )

    @classmethod
    def l7_tcp_only(cls) -> dict[str, Any]:
        """A waypoint-less path seen in l7: only ztunnel's TCP edge."""
        return cls.l4()

    @staticmethod
    def empty() -> dict[str, Any]:
        return kiali_graph([], [])


def raw_error(status: str, message: str) -> RawGetError:
    reason = f"Error from server ({status}): {message}"
    return RawGetError(f"`kubectl --context fake get --raw ...` failed: {reason}", reason)


KIALI_UNAVAILABLE = 'no endpoints available for service "kiali"'
# What the API server's service proxy says when it cannot dial the pod (k8s.io/apimachinery proxy transport).
PROXY_DIAL_TIMEOUT = "error trying to reach service: dial tcp 10.8.0.12:{port}: i/o timeout"
# A service-account token as `kubectl create token` prints it: a secret no report may hold.
FAKE_TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImxhYiJ9."
              "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aXN0aW8tc3lzdGVtOmtpYWxpIn0.c2ln")
KIALI_SESSION = ("kiali-token-Kubernetes=c2VhbGVkLXNlc3Npb24", "kiali-token-chunks-Kubernetes=1")


def kiali_login_answer(form: dict[str, str] | None, cookies: tuple[str, ...]) -> HttpResponse:
    """Kiali's /api/authenticate with strategy token: a token of ours opens a session (its cookies), any other not."""
    if form and form.get("token", "").startswith(FAKE_TOKEN):
        return HttpResponse((), 200, json.dumps({"username": "kiali", "expiresOn": "Fri, 02 Oct 2026 10:14:03 Z"}),
                            KIALI_SESSION)
    return HttpResponse((), 401, json.dumps({"error": "token is not valid or is expired"}))


def kiali_graph_answer(graph: dict[str, Any]) -> Callable[[dict[str, str] | None, tuple[str, ...]], HttpResponse]:
    """Kiali's graph API with strategy token: `graph` for a request carrying the session cookies, else 401."""
    def answer(form: dict[str, str] | None, cookies: tuple[str, ...]) -> HttpResponse:
        if cookies == KIALI_SESSION:
            return HttpResponse((), 200, json.dumps(graph))
        return HttpResponse((), 401, json.dumps({"error": "Unauthorized"}))
    return answer


# --- Pods ------------------------------------------------------------------------------------------------------


def pod(name: str, *, app: str | None = None, node: str = "lab-worker", service_account: str = "default",
        enrolled: bool = True, restarts: int = 0, phase: str = "Running", labels: dict[str, str] | None = None,
        containers: Sequence[str] | None = None) -> dict[str, Any]:
    all_labels = dict(labels or {})
    if app:
        all_labels["app"] = app
    annotations = {catalog.REDIRECTION_ANNOTATION: "enabled"} if enrolled else {}
    return {
        "metadata": {"name": name, "labels": all_labels, "annotations": annotations},
        "spec": {"nodeName": node, "serviceAccountName": service_account},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": container, "restartCount": restarts}
                                  for container in (containers or [app or name])],
        },
    }


def pod_list(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": list(pods)}


def _matches(pod_json: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = pod_json["metadata"].get("labels", {})
    return all(labels.get(key) == value for key, _, value in (part.partition("=") for part in selector.split(",")))


def probe_port(argv: Sequence[str]) -> int | None:
    """The client port a probe's curl bound (--local-port), None for a request that did not pick one."""
    return int(argv[argv.index("--local-port") + 1]) if "--local-port" in argv else None


ExecAnswer = ExecResult | Callable[[], ExecResult] | list[ExecResult]
DETAILS_URL = f"http://details:{catalog.BOOKINFO_PORT}{catalog.STRICT_PROBE_PATH}"
# A get --raw answer: a body (text, or JSON as a dict), an error to raise, or a list of those (one per call).
RawAnswer = str | dict[str, Any] | Exception | list[Any]


@dataclass
class FakeCluster:
    """A `Cluster` that answers from recorded outputs and records every call.

    `exec_answers` is keyed by (namespace, deploy target, HTTP method), or by those and the URL; a list answers one
    item per call and then
    repeats its last item, which models a policy that takes a few attempts to propagate.
    """

    pods_by_namespace: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    exec_answers: dict[tuple[str, ...], ExecAnswer] = field(default_factory=dict)
    # A log: text, a list (one per call, then its last item again), or a function of the calls made so far.
    logs_by_pod: dict[str, str | list[str] | Callable[[], str]] = field(default_factory=dict)
    config_dumps: dict[str, Any] = field(default_factory=dict)
    raw_answers: dict[str, RawAnswer] = field(default_factory=dict)  # keyed by path prefix
    # What a port-forward to a Service answers, keyed by path prefix: an HttpResponse, an error to raise, a function
    # of (form, cookies), or a list of those (one per call, then its last item again).
    forward_answers: dict[str, Any] = field(default_factory=dict)
    token_error: Exception | None = None
    tokens_issued: int = 0
    nodes_error: Exception | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    # The checks' wall clock (make_context shares it), so the fake ztunnel stamps a probe's lines when it was sent.
    now: Callable[[], dt.datetime] = lambda: NOW
    exec_times: list[dt.datetime] = field(default_factory=list)
    # How far the nodes' clocks are ahead of this machine's (negative: behind); ztunnel stamps its lines with them.
    node_clock_offset: dt.timedelta = dt.timedelta(0)
    # Which pod `kubectl exec deploy/NAME` runs in, when not the first one (a rollout's new pod, say).
    deploy_lands_on: dict[str, str] = field(default_factory=dict)

    def command(self, args: Sequence[str]) -> str:
        return "kubectl --context fake " + " ".join(args)

    def pods(self, namespace: str, selector: str | None = None) -> dict[str, Any]:
        self.calls.append(("pods", namespace, selector))
        return pod_list(*(item for item in self.pods_by_namespace.get(namespace, []) if _matches(item, selector)))

    def nodes(self) -> dict[str, Any]:
        if self.nodes_error:
            raise self.nodes_error
        return {"items": [{"metadata": {"name": "lab-worker"}}, {"metadata": {"name": "lab-worker2"}}]}

    def lands_on(self, namespace: str, target: str) -> dict[str, Any] | None:
        """The pod an exec into `target` runs in: the pod of that name, or for ``deploy/NAME`` the one
        `deploy_lands_on` names, else the first running pod labelled app=NAME (as kubectl picks one of its pods)."""
        pods = self.pods_by_namespace.get(namespace, [])
        if not target.startswith("deploy/"):
            return next((item for item in pods if item["metadata"]["name"] == target), None)
        if target in self.deploy_lands_on:
            return next(item for item in pods if item["metadata"]["name"] == self.deploy_lands_on[target])
        app = target.partition("/")[2]
        running = sorted((item for item in pods if item["metadata"].get("labels", {}).get("app") == app
                          and item["status"]["phase"] == "Running"), key=lambda item: item["metadata"]["name"])
        return running[0] if running else None

    def exec(self, namespace: str, target: str, container: str, argv: Sequence[str],
             timeout_s: float = 30.0) -> ExecResult:
        method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
        self.calls.append(("exec", namespace, target, container, tuple(argv)))
        self.exec_times.append(self.now())
        command = self.command(["exec", "-n", namespace, target, "-c", container, "--", *argv])
        answering = target
        if "/" not in target:  # a pod by name: kubectl refuses one that is not there
            landed = self.lands_on(namespace, target)
            if landed is None:
                return ExecResult(command, 1, "", f'Error from server (NotFound): pods "{target}" not found\n')
            # The answers are recorded per Deployment: a pod answers as its app's Deployment does.
            answering = f"deploy/{landed['metadata'].get('labels', {}).get('app')}"
        # An answer for this very URL, if there is one, else the client's answer for the method.
        answer = self.exec_answers.get((namespace, answering, method, argv[-1]))
        if answer is None:
            answer = self.exec_answers[(namespace, answering, method)]
        if isinstance(answer, list):
            result = answer.pop(0) if len(answer) > 1 else answer[0]
        elif callable(answer):
            result = answer()
        else:
            result = answer
        return ExecResult(command, result.exit_code, result.stdout, result.stderr)

    def logs(self, namespace: str, pod: str, *, since_s: int | None = None, tail: int | None = None) -> str:
        self.calls.append(("logs", namespace, pod, since_s, tail))
        answer = self.logs_by_pod.get(pod, "")
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer() if callable(answer) else answer

    def probes(self) -> list[tuple[str, str, int, dt.datetime]]:
        """The probes sent so far, in order: (exec target, URL, client port, when by the nodes' clocks)."""
        execs = [call for call in self.calls if call[0] == "exec"]
        return [(call[2], call[4][-1], probe_port(call[4]), when + self.node_clock_offset)
                for call, when in zip(execs, self.exec_times, strict=True) if probe_port(call[4]) is not None]

    def probes_from(self, namespace: str, app: str, *,
                    every_request: bool = False) -> list[tuple[dict[str, Any], str, int | None, dt.datetime]]:
        """The probes (with `every_request`, all requests) that ran in a pod of `app`: (that pod, URL, client port,
        when by the nodes' clocks)."""
        found = []
        execs = [call for call in self.calls if call[0] == "exec"]
        sent = [(call[2], call[4][-1], probe_port(call[4]), when + self.node_clock_offset)
                for call, when in zip(execs, self.exec_times, strict=True)] if every_request else self.probes()
        for target, url, port, when in sent:
            landed = self.lands_on(namespace, target)
            if landed is not None and landed["metadata"].get("labels", {}).get("app") == app:
                found.append((landed, url, port, when))
        return found

    def http_get(self, namespace: str, pod: str, port: int, path: str, timeout_s: float = 30.0, *,
                 form: dict[str, str] | None = None, cookies: Sequence[str] = ()) -> HttpResponse:
        if pod.startswith("svc/"):
            return self._forward_answer(namespace, pod, port, path, form, tuple(cookies))
        self.calls.append(("http_get", namespace, pod, port, path))
        dump = self.config_dumps.get(pod)
        if isinstance(dump, list):
            dump = dump.pop(0) if len(dump) > 1 else dump[0]
        if dump is None:
            return HttpResponse((f"kubectl port-forward pod/{pod} :{port}", f"GET {path}"), 404, "not found")
        body = dump if isinstance(dump, str) else json.dumps(dump)
        return HttpResponse((f"kubectl port-forward pod/{pod} :{port}", f"GET {path}"), 200, body)

    def _forward_answer(self, namespace: str, target: str, port: int, path: str, form: dict[str, str] | None,
                        cookies: tuple[str, ...]) -> HttpResponse:
        self.calls.append(("forward", namespace, target, port, path, form, cookies))
        answer = next((value for prefix, value in self.forward_answers.items() if path.startswith(prefix)), None)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if callable(answer):
            answer = answer(form, cookies)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            answer = HttpResponse((), 404, "404 page not found")
        method = "POST" if form is not None else "GET"
        commands = (f"kubectl --context fake port-forward -n {namespace} {target} 40000:{port}",
                    f"{method} http://127.0.0.1:40000{path}")
        return HttpResponse(commands, answer.status, answer.body, answer.cookies)

    def create_token(self, namespace: str, service_account: str, duration_s: int = 600) -> str:
        self.calls.append(("create_token", namespace, service_account, duration_s))
        if self.token_error:
            raise self.token_error
        self.tokens_issued += 1
        return f"{FAKE_TOKEN}-{self.tokens_issued}"

    def get_raw(self, path: str, timeout_s: float = 30.0) -> str:
        self.calls.append(("get_raw", path))
        answer = next((value for prefix, value in self.raw_answers.items() if path.startswith(prefix)), None)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if callable(answer):
            answer = answer()
        if answer is None:
            raise raw_error("NotFound", "the server could not find the requested resource")
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, str) else json.dumps(answer)


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps (plus a small step per reading).

    Each thread has its own time: `run_checks` runs checks side by side, each with its own timeout, and one check
    sleeping through its retries must not use up another's deadline (real sleeps overlap; these add up).
    """

    def __init__(self) -> None:
        self._thread = threading.local()
        self.sleeps: list[float] = []

    @property
    def now(self) -> float:
        return getattr(self._thread, "now", 1000.0)

    @now.setter
    def now(self, value: float) -> None:
        self._thread.now = value

    def __call__(self) -> float:
        self.now += 0.01
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_context(cluster: FakeCluster, mode: str, *, timeout_s: float = 20.0,
                 addons: bool = False) -> tuple[CheckContext, FakeClock]:
    clock = FakeClock()
    started = clock.now

    def now() -> dt.datetime:  # wall-clock time moves with the fake clock, from NOW on
        return NOW + dt.timedelta(seconds=clock.now - started)

    cluster.now = now
    ctx = CheckContext(cluster=cluster, mode=mode, timeout_s=timeout_s, interval_s=2.0, clock=clock,
                       sleep=clock.sleep, now=now, addons=addons)
    return ctx, clock


# --- A healthy lab, per mode -----------------------------------------------------------------------------------

CLIENT_NODE, SERVER_NODE = "lab-worker", "lab-worker2"


def healthy_cluster(mode: str, root: Issuer, leaves: dict[str, x509.Certificate]) -> FakeCluster:
    """A fake cluster in which every check of `mode` passes: sleep on one node, productpage on the other."""
    waypoint = mode == "l7"
    apps = [
        pod(DETAILS_POD, app="details", service_account="bookinfo-details"),
        pod("ratings-v1-5d9c8b7f6-b7vrd", app="ratings", service_account="bookinfo-ratings"),
        pod("reviews-v1-7c6d9f8b5-lw2xh", app="reviews", service_account="bookinfo-reviews"),
        pod("reviews-v2-5b8f7c9d6-qz8mt", app="reviews", service_account="bookinfo-reviews"),
        pod("reviews-v3-6c9d8b7f5-v5r2p", app="reviews", service_account="bookinfo-reviews"),
        pod(PRODUCTPAGE_POD, app="productpage", node=SERVER_NODE, service_account="bookinfo-productpage"),
        pod(SLEEP_POD, app="sleep", node=CLIENT_NODE, service_account="sleep"),
        pod(NOTSLEEP_POD, app="notsleep", node=SERVER_NODE, service_account="notsleep"),
        # Istio proxies deployed by istiod for Gateways: not enrolled, not apps.
        pod("bookinfo-gateway-istio-7d9c8b6f5-hk2lw", enrolled=False, service_account="bookinfo-gateway-istio",
            labels={GATEWAY_LABEL: catalog.INGRESS_GATEWAY_NAME}),
    ]
    if waypoint:
        apps.append(pod(WAYPOINT_POD, node=CLIENT_NODE, enrolled=False, service_account=catalog.WAYPOINT_NAME,
                        labels={GATEWAY_LABEL: catalog.WAYPOINT_NAME}))
    ztunnels = [
        pod(ZTUNNEL_CLIENT, app="ztunnel", node=CLIENT_NODE, enrolled=False, service_account="ztunnel"),
        pod(ZTUNNEL_SERVER, app="ztunnel", node=SERVER_NODE, enrolled=False, service_account="ztunnel"),
    ]
    outside = [pod(OUTSIDE_POD, app=catalog.OUTSIDE_CLIENT, enrolled=False)]
    ns_out = catalog.OUTSIDE_NAMESPACE
    exec_answers: dict[tuple[str, ...], ExecAnswer] = {
        (NS, "deploy/sleep", "GET"): lambda: curl_page(envoy=waypoint),
        (NS, "deploy/notsleep", "GET"): lambda: curl_forbidden() if waypoint else curl_reset(),
        (NS, "deploy/sleep", "DELETE"): lambda: curl_forbidden(),
        (ns_out, f"deploy/{catalog.OUTSIDE_CLIENT}", "GET"): lambda: curl_reset(),
        (NS, "deploy/sleep", "GET", DETAILS_URL): lambda: curl_details(),
    }
    # Lines of earlier requests, logged before the checks ran: they look like the probes' but are not theirs.
    if waypoint:
        client_log = [LINE_WAYPOINT_OUTBOUND]
        server_log = [LINE_WAYPOINT_INBOUND, LINE_DENY_NONE_ALLOWED]
    else:
        client_log = [LINE_131_OUTBOUND]
        server_log = [LINE_131_INBOUND, LINE_DENY_NONE_ALLOWED, LINE_STRICT_REFUSAL]
    dumps = {
        ZTUNNEL_CLIENT: {"workloads": {}, "certificates": [
            certificate_entry(SLEEP_ID, [leaves[SLEEP_ID]], [root.certificate])]},
        ZTUNNEL_SERVER: {"workloads": {}, "certificates": [
            certificate_entry(NOTSLEEP_ID, [], [], state="Initializing"),
            certificate_entry(PRODUCTPAGE_ID, [leaves[PRODUCTPAGE_ID]], [root.certificate])]},
    }
    cluster = FakeCluster(
        pods_by_namespace={NS: apps, catalog.ISTIO_NAMESPACE: ztunnels, ns_out: outside},
        exec_answers=exec_answers,
        config_dumps=dumps,
        raw_answers={KIALI_PROXY: Graph.l7_waypoint_node() if waypoint else Graph.l4()},
    )
    cluster.raw_answers[PROMETHEUS_PROXY] = CountingPrometheus(cluster, PROMETHEUS_L7 if waypoint else PROMETHEUS_L4)
    cluster.logs_by_pod = {
        ZTUNNEL_CLIENT: lambda: "\n".join(UNRELATED_LINES[:3] + client_log + probe_lines(cluster, mode)[CLIENT_NODE]),
        ZTUNNEL_SERVER: lambda: "\n".join(UNRELATED_LINES + server_log + probe_lines(cluster, mode)[SERVER_NODE]),
    }
    return cluster


def probe_lines(cluster: FakeCluster, mode: str) -> dict[str, list[str]]:
    """What each node's ztunnel logs for the probes sent so far, stamped by the nodes' clocks, per node.

    details and outside-client run on CLIENT_NODE, productpage on SERVER_NODE, sleep's probes on the node of the pod
    they ran in (SLEEP_POD unless a test adds another). The client side logs the probe's port; the server side logs
    the pooled HBONE connection's (the fixture's own), with the byte counts mirrored.
    """
    lines: dict[str, list[str]] = {CLIENT_NODE: [], SERVER_NODE: []}
    for target, _, port, when in cluster.probes():
        if target == f"deploy/{catalog.OUTSIDE_CLIENT}":
            lines[CLIENT_NODE].append(stamped(from_port(LINE_STRICT_REFUSAL_DETAILS, port), when))
    for sleep, url, port, when in cluster.probes_from(NS, catalog.SLEEP):
        if "productpage" not in url:
            continue
        name, node = sleep["metadata"]["name"], sleep["spec"]["nodeName"]
        if mode == "l7":
            lines[node].append(stamped(from_port(LINE_WAYPOINT_OUTBOUND, port), when).replace(SLEEP_POD, name))
            # The waypoint's connection to productpage closes after productpage's keep-alive.
            lines[SERVER_NODE].append(stamped(LINE_WAYPOINT_INBOUND, when + dt.timedelta(seconds=2.1)))
        else:
            # The request carries the probe's padding header: both sides count those bytes too.
            extra = len(f"{PROBE_HEADER}: {probe_padding(port)}\r\n")
            lines[node].append(stamped(from_port(LINE_131_OUTBOUND, port), when).replace(
                "bytes_sent=90 ", f"bytes_sent={90 + extra} ").replace(SLEEP_POD, name))
            lines[SERVER_NODE].append(stamped(LINE_131_INBOUND, when).replace(
                "bytes_recv=90 ", f"bytes_recv={90 + extra} ").replace(SLEEP_POD, name))
    return lines


GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"


@pytest.fixture
def healthy(root_ca: Issuer, workload_certs: dict[str, x509.Certificate]) -> Callable[[str], FakeCluster]:
    """Build a fake cluster in which every check of a mode passes."""
    return lambda mode: healthy_cluster(mode, root_ca, workload_certs)


@pytest.fixture
def fx() -> Any:
    """This module, so tests can reach the builders without importing conftest by name."""
    import sys

    return sys.modules[__name__]
