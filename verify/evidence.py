"""Parse what ztunnel says about itself: its access log and the certificates in its `/config_dump`.

Pure functions on text and JSON: nothing here talks to a cluster, so every format can be tested on fixtures.

Formats (checked against istio/ztunnel, 1.30 and 1.31):

* Access log (`src/proxy/metrics.rs`, laid out by `src/telemetry.rs`): one line per closed connection,
  ``<RFC3339 time>\\t<level>\\taccess\\tconnection complete\\t<k=v k=v ...>``. Values of string fields are written
  with Rust's ``{:?}`` (double-quoted, backslash escapes); addresses and numbers are bare. Optional fields (the
  identities, which appear only on mTLS connections, `dst.hbone_addr`, the 1.31 `src.cluster`/`dst.cluster`, and
  `error` on failures) are simply absent. Successful connections log at `info`, failed ones at `error`.
  `duration` is always written as whole milliseconds (``"15ms"``); other units are accepted anyway.
  With ``LOG_FORMAT=json`` (the chart's `logAsJson`) the same fields arrive as one JSON object per line, with the
  keys `level`, `time`, `scope` and `message` added; those lines are parsed too.
* `/config_dump` (`src/admin.rs`): ``certificates: [{identity, state, certChain: [{pem, serialNumber, validFrom,
  expirationTime}], rootCerts: [...]}]``. `identity` is the SPIFFE URI as a string, `state` is ``Available``,
  ``Initializing`` or ``Unavailable: <error>``, `certChain` is the leaf then its intermediates, and `pem` is the
  base64 of the PEM text (raw PEM in ztunnel releases before early 2024; both are accepted).
"""

from __future__ import annotations

import base64
import binascii
import gc
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtensionOID

__all__ = [
    "AccessLogEntry",
    "EvidenceError",
    "WorkloadCertificate",
    "certificates_from_config_dump",
    "find_certificate",
    "parse_duration_ms",
    "parse_ztunnel_access_log",
]


class EvidenceError(ValueError):
    """Raised when ztunnel's output is not in a format this module understands."""


# --- Access log --------------------------------------------------------------------------------------------------

ACCESS_MESSAGE = "connection complete"

# Log field name -> AccessLogEntry attribute, in the order ztunnel writes them (src/proxy/metrics.rs).
_FIELD_NAMES = {
    "src.addr": "src_addr",
    "src.workload": "src_workload",
    "src.namespace": "src_namespace",
    "src.identity": "src_identity",
    "src.cluster": "src_cluster",  # 1.31+
    "dst.addr": "dst_addr",
    "dst.hbone_addr": "dst_hbone_addr",
    "dst.service": "dst_service",
    "dst.workload": "dst_workload",
    "dst.namespace": "dst_namespace",
    "dst.identity": "dst_identity",
    "dst.cluster": "dst_cluster",  # 1.31+
    "direction": "direction",
    "bytes_sent": "bytes_sent",
    "bytes_recv": "bytes_recv",
    "duration": "duration_ms",
    "error": "error",
}

# The head of a plain-text access line. The target may carry span names (``access:span``), although ztunnel writes
# access events without a parent span. Possessive quantifiers (`++`, `*+`, `?+`) never backtrack: this format
# needs no backtracking, and the parse runs a third faster without it.
_HEAD = r"(\d{4}-\d{2}-\d{2}T[^ \t]++)[ \t]++([A-Za-z]++)[ \t]++access(?::[^ \t]*+)?[ \t]++connection complete"
# The same head anywhere in a line, behind a prefix such as kubectl's --prefix or --timestamps.
_HEAD_ANYWHERE = re.compile(r"(?:^|[\s\]])" + _HEAD + r"(?:[ \t]+|$)")
# A double-quoted value with Rust's backslash escapes, quotes included.
_QUOTED = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
# The fast path: every known field in ztunnel's own order, each optional. Values of these fields never contain a
# blank or a quote, except `error`, which may hold both (escaped). A line this does not match in full (a field it
# does not know, another order, escapes) goes through the general k=v parser below, which gives the same result.
_KNOWN_LINE = re.compile(
    _HEAD
    + "".join(rf'(?:[ \t]++{re.escape(key)}="?+([^" \t]*+)"?+)?+' for key in list(_FIELD_NAMES)[:-1])
    + rf"(?:[ \t]++error=({_QUOTED}))?+[ \t]*+\r?$"
)
_KNOWN_ATTRIBUTES = ("timestamp", "level", *_FIELD_NAMES.values())
# One k=v pair: a double-quoted value with backslash escapes, or a bare value up to the next blank.
_FIELD = re.compile(rf"([A-Za-z_][\w.]*+)=({_QUOTED}|[^ \t]*+)")
# Rust's {:?} escapes for str: \" \\ \n \r \t \0 \' and \u{XXXX}.
_ESCAPE = re.compile(r"\\(u\{[0-9A-Fa-f]{1,6}\}|.)")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "0": "\0", "'": "'"}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(ns|us|µs|μs|ms|s|m|h)?\s*$")
_DURATION_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
# Keys the JSON layout adds around the event's own fields.
_JSON_META = ("level", "time", "scope", "message")


@dataclass(frozen=True)
class AccessLogEntry:
    """One ztunnel ``connection complete`` access-log line, parsed.

    Attributes:
        timestamp: the line's time exactly as ztunnel printed it (RFC 3339, UTC, e.g.
            ``2026-10-02T09:14:03.120455Z``); `time` gives it as a datetime.
        level: ``info`` for a successful connection, ``error`` for a failed one (lower case as printed).
        src_addr, dst_addr: ``ip:port``; `dst_addr` is the HBONE port (15008) when the connection was tunnelled.
        src_workload, dst_workload: pod names (or canonical service names when ztunnel knows no pod).
        src_namespace, dst_namespace, dst_service: as ztunnel resolved them; `dst_service` is the Service's FQDN.
        src_identity, dst_identity: SPIFFE URIs, present only on mTLS (HBONE) connections, else None.
        src_cluster, dst_cluster: cluster IDs, logged from Istio 1.31 on (usually ``Kubernetes``), else None.
        dst_hbone_addr: the address inside the tunnel (the workload's real port), None for plaintext.
        direction: ``outbound`` on the client's node, ``inbound`` on the server's.
        bytes_sent, bytes_recv: byte counts as seen by the reporting side (0 when absent).
        duration_ms: connection lifetime in milliseconds (a float), None when absent or unreadable.
        error: the failure message, None on success.
        extra: any other k=v fields of the line, unparsed, so a newer ztunnel loses nothing (None when none).
    """

    timestamp: str
    level: str
    src_addr: str | None = None
    src_workload: str | None = None
    src_namespace: str | None = None
    src_identity: str | None = None
    src_cluster: str | None = None
    dst_addr: str | None = None
    dst_hbone_addr: str | None = None
    dst_service: str | None = None
    dst_workload: str | None = None
    dst_namespace: str | None = None
    dst_identity: str | None = None
    dst_cluster: str | None = None
    direction: str | None = None
    bytes_sent: int = 0
    bytes_recv: int = 0
    duration_ms: float | None = None
    error: str | None = None
    extra: dict[str, str] | None = field(default=None, compare=False)

    @property
    def time(self) -> datetime:
        """The timestamp as an aware UTC datetime."""
        return datetime.fromisoformat(self.timestamp)  # Python 3.11 reads the trailing Z as UTC

    @property
    def failed(self) -> bool:
        """True when ztunnel reported an error for this connection."""
        return self.error is not None

    @property
    def mtls(self) -> bool:
        """True when the connection carried identities, which ztunnel logs only for mutual TLS."""
        return self.src_identity is not None or self.dst_identity is not None

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (every attribute; `extra` only when there is some)."""
        data = {name: getattr(self, name) for name in _ENTRY_FIELDS}
        if not data["extra"]:
            del data["extra"]
        return data


_ENTRY_FIELDS = tuple(item.name for item in fields(AccessLogEntry))


def parse_duration_ms(text: str) -> float | None:
    """Convert a duration such as ``15ms``, ``1.2s`` or ``350us`` to milliseconds.

    Args:
        text: the duration as logged; a bare number is taken as milliseconds.

    Returns:
        The duration in milliseconds, or None when the text is not a duration.
    """
    if text.endswith("ms") and text[:-2].isdigit():  # what ztunnel always writes: whole milliseconds
        return float(text[:-2])
    match = _DURATION.match(text)
    if not match:
        return None
    return float(match.group(1)) * _DURATION_UNIT_MS[match.group(2) or "ms"]


def _unescape(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        return _SIMPLE_ESCAPES.get(code, code)

    return _ESCAPE.sub(replace, value)


def _count(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


_new_object = object.__new__
_set_attribute = object.__setattr__


def _known_entry(values: tuple[str | None, ...]) -> AccessLogEntry:
    """Build an entry from the fast path's groups, which follow _KNOWN_ATTRIBUTES.

    The dataclass's generated __init__ writes its 20 frozen attributes one `object.__setattr__` at a time, which was
    a third of the parse time on a large log; handing the instance its finished attribute dict once gives the same
    object (same fields, equality and immutability) at a fraction of the cost.
    """
    data: dict[str, Any] = dict(zip(_KNOWN_ATTRIBUTES, values, strict=True))
    level = data["level"]
    if not level.islower():
        data["level"] = level.lower()
    sent, recv, duration = data["bytes_sent"], data["bytes_recv"], data["duration_ms"]
    data["bytes_sent"] = int(sent) if sent and sent.isdigit() else 0
    data["bytes_recv"] = int(recv) if recv and recv.isdigit() else 0
    data["duration_ms"] = parse_duration_ms(duration) if duration is not None else None
    error = data["error"]
    if error is not None:
        error = error[1:-1]
        data["error"] = _unescape(error) if "\\" in error else error
    data["extra"] = None
    entry = _new_object(AccessLogEntry)
    _set_attribute(entry, "__dict__", data)
    return entry


def _entry(timestamp: str, level: str, values: dict[str, str]) -> AccessLogEntry:
    """Build an entry from log field names and values, in any order, unknown fields kept in `extra`."""
    named: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in values.items():
        attribute = _FIELD_NAMES.get(key)
        if attribute is None:
            extra[key] = value
        else:
            named[attribute] = value
    named["bytes_sent"] = _count(named.get("bytes_sent"))
    named["bytes_recv"] = _count(named.get("bytes_recv"))
    duration = named.get("duration_ms")
    named["duration_ms"] = parse_duration_ms(duration) if duration is not None else None
    return AccessLogEntry(timestamp=timestamp, level=level.lower(), extra=extra or None, **named)


def _plain_fields(rest: str) -> dict[str, str]:
    values = {}
    for key, raw in _FIELD.findall(rest):
        if raw.startswith('"'):
            raw = raw[1:-1]
            if "\\" in raw:
                raw = _unescape(raw)
        values[key] = raw
    return values


def _json_entry(line: str) -> AccessLogEntry | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("message") != ACCESS_MESSAGE:
        return None
    if str(record.get("scope", "")).split(":")[0] != "access":
        return None
    values = {key: str(value) for key, value in record.items() if key not in _JSON_META and value is not None}
    return _entry(str(record.get("time", "")), str(record.get("level", "")), values)


def _parse_other_line(line: str) -> AccessLogEntry | None:
    """Parse an access line the fast path did not match: other field order or fields, a prefix, or JSON."""
    head = _HEAD_ANYWHERE.search(line)
    if head is not None:
        return _entry(head.group(1), head.group(2), _plain_fields(line[head.end() :]))
    brace = line.find("{")
    return _json_entry(line[brace:]) if brace != -1 else None


def parse_ztunnel_access_log(text: str) -> list[AccessLogEntry]:
    """Parse every ``connection complete`` line of a ztunnel log; other lines are ignored.

    Accepts tab- or space-separated heads, quoted and bare values, the 1.30 and 1.31 field sets, `info` and `error`
    lines, JSON lines (``logAsJson``), and lines prefixed by ``kubectl logs --prefix``/``--timestamps``. ztunnel's
    early-deny ``connection failed`` warnings are not access entries and are skipped.

    Args:
        text: a whole log, any number of lines.

    Returns:
        The entries in log order.

    Example:
        >>> line = ('2026-10-02T09:14:03.120455Z\\tinfo\\taccess\\tconnection complete\\t'
        ...         'src.addr=10.244.1.7:40312 direction="outbound" bytes_sent=90 bytes_recv=5002 duration="3ms"')
        >>> parse_ztunnel_access_log(line)[0].duration_ms
        3.0
    """
    entries: list[AccessLogEntry] = []
    append = entries.append
    match_known = _KNOWN_LINE.match
    # Building 100,000 entries trips the cyclic garbage collector over and over although they form no cycles;
    # pausing it for the loop saves about a tenth of the time on a large log.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for line in text.splitlines():
            # A substring test rejects the bulk of a busy log before any regex runs.
            if ACCESS_MESSAGE not in line:
                continue
            known = match_known(line)
            entry = _known_entry(known.groups()) if known is not None else _parse_other_line(line)
            if entry is not None:
                append(entry)
    finally:
        if collecting:
            gc.enable()
    return entries


# --- Certificates --------------------------------------------------------------------------------------------------

STATE_AVAILABLE = "Available"


@dataclass(frozen=True)
class WorkloadCertificate:
    """A workload certificate that a ztunnel holds, read from the X.509 leaf itself.

    Attributes:
        identity: the SPIFFE ID ztunnel keys the certificate by (``spiffe://<td>/ns/<ns>/sa/<sa>``).
        state: ``Available``, ``Initializing`` or ``Unavailable: <error>``, as ztunnel reports it.
        san_uris: the leaf's URI subject alternative names (the SPIFFE ID lives there).
        subject, issuer: RFC 4514 strings (Istio's default CA issues with ``O=cluster.local``).
        serial: the leaf's serial number as lower-case hex bytes joined by colons, as ``openssl x509 -text`` prints
            it (e.g. ``5a:3f:00:c1``); None without a chain.
        not_before, not_after: the leaf's validity window, aware UTC datetimes; None without a chain.
        chains_to_root: the leaf, through each intermediate in `certChain` order, is signed by one of `rootCerts`
            (issuer names match subjects and every signature verifies); False without a chain.
        chain_length: certificates in `certChain` (leaf included).
        root_count: certificates in `rootCerts`.
        chain_problem: why `chains_to_root` is False, None when it is True.
    """

    identity: str
    state: str
    san_uris: tuple[str, ...] = ()
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    chains_to_root: bool = False
    chain_length: int = 0
    root_count: int = 0
    chain_problem: str | None = None

    @property
    def available(self) -> bool:
        """True when ztunnel reports the certificate ready to use."""
        return self.state == STATE_AVAILABLE

    def valid_at(self, when: datetime) -> bool:
        """True when `when` (an aware datetime) falls inside the leaf's validity window."""
        if self.not_before is None or self.not_after is None:
            return False
        return self.not_before <= when <= self.not_after

    def to_dict(self) -> dict[str, Any]:
        """The certificate as a JSON-ready dict (datetimes in ISO 8601)."""
        data = asdict(self)
        data["san_uris"] = list(self.san_uris)
        for key in ("not_before", "not_after"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


def _load_certificate(entry: Any, where: str) -> x509.Certificate:
    """Decode one `{pem, ...}` object of the dump; `pem` is base64 of PEM text, or raw PEM in older ztunnels."""
    if not isinstance(entry, dict) or not isinstance(entry.get("pem"), str):
        raise EvidenceError(f"The config dump's {where} has no 'pem' string.")
    text = entry["pem"].strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=True).decode("ascii")
        except (binascii.Error, ValueError) as error:
            raise EvidenceError(
                f"The config dump's {where} 'pem' is neither PEM text nor base64 of it ({error})."
            ) from error
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    except ValueError as error:
        raise EvidenceError(f"The config dump's {where} does not hold a valid PEM certificate ({error}).") from error


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """True when `parent`'s subject is `child`'s issuer and `parent`'s key verifies `child`'s signature."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _chain_problem(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> str | None:
    """Explain why `chain` (leaf first) does not verify up to one of `roots`; None when it does."""
    if not roots:
        return "ztunnel holds no root certificate for it"
    for position, (child, parent) in enumerate(itertools.pairwise(chain)):
        if not _issued_by(child, parent):
            return f"certChain[{position}] is not signed by certChain[{position + 1}]"
    top = chain[-1]
    if any(top == root or _issued_by(top, root) for root in roots):
        return None
    return f"certChain[{len(chain) - 1}] (issuer {top.issuer.rfc4514_string()}) is not signed by any root certificate"


def _uri_sans(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return ()
    return tuple(extension.value.get_values_for_type(x509.UniformResourceIdentifier))


def _serial_hex(serial: int) -> str:
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join(f"{byte:02x}" for byte in raw)


def _certificate(item: Any, index: int) -> WorkloadCertificate:
    if not isinstance(item, dict):
        raise EvidenceError(f"The config dump's certificates[{index}] is not an object.")
    identity = item.get("identity")
    if not isinstance(identity, str) or not identity:
        raise EvidenceError(f"The config dump's certificates[{index}] has no 'identity' string.")
    state = str(item.get("state", ""))
    chain_json = item.get("certChain") or []
    roots_json = item.get("rootCerts") or []
    if not isinstance(chain_json, list) or not isinstance(roots_json, list):
        raise EvidenceError(f"The config dump's certChain and rootCerts for {identity} must be lists.")
    if not chain_json:
        # Initializing or Unavailable: ztunnel has no certificate yet; keep the state, report nothing else.
        return WorkloadCertificate(identity=identity, state=state, root_count=len(roots_json),
                                   chain_problem="ztunnel holds no certificate chain for it")
    chain = [_load_certificate(entry, f"certChain[{n}] for {identity}") for n, entry in enumerate(chain_json)]
    roots = [_load_certificate(entry, f"rootCerts[{n}] for {identity}") for n, entry in enumerate(roots_json)]
    leaf = chain[0]
    problem = _chain_problem(chain, roots)
    return WorkloadCertificate(
        identity=identity,
        state=state,
        san_uris=_uri_sans(leaf),
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        serial=_serial_hex(leaf.serial_number),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        chains_to_root=problem is None,
        chain_length=len(chain),
        root_count=len(roots),
        chain_problem=problem,
    )


def certificates_from_config_dump(dump: dict[str, Any]) -> list[WorkloadCertificate]:
    """Read the workload certificates out of a ztunnel ``/config_dump`` document.

    Args:
        dump: the decoded JSON of ``GET /config_dump`` on ztunnel's admin port (15000).

    Returns:
        One entry per certificate ztunnel holds, in dump order. Entries that are not yet ``Available`` or have an
        empty chain are kept with their state and empty fields.

    Raises:
        EvidenceError: the dump is not an object, has no ``certificates`` list, or a certificate cannot be decoded;
            the message names the identity concerned.
    """
    if not isinstance(dump, dict):
        raise EvidenceError(f"The ztunnel config dump must be a JSON object, not {type(dump).__name__}.")
    items = dump.get("certificates")
    if not isinstance(items, list):
        raise EvidenceError("The ztunnel config dump has no 'certificates' list; is this ztunnel's /config_dump?")
    return [_certificate(item, index) for index, item in enumerate(items)]


def find_certificate(certificates: Iterable[WorkloadCertificate], identity: str) -> WorkloadCertificate | None:
    """The certificate ztunnel keys by `identity`, or None."""
    return next((certificate for certificate in certificates if certificate.identity == identity), None)

