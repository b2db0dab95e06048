"""parse_ztunnel_access_log against lines in ztunnel's documented layouts (values made up for the tests)."""

from __future__ import annotations

import json

import pytest

from verify import evidence
from verify.evidence import AccessLogEntry, parse_duration_ms, parse_ztunnel_access_log


def one(line: str) -> AccessLogEntry:
    entries = parse_ztunnel_access_log(line)
    assert len(entries) == 1, f"expected one entry from {line!r}, got {entries}"
    return entries[0]


def test_130_outbound_success_has_every_field(fx):
    entry = one(fx.LINE_130_OUTBOUND)
    assert entry.timestamp == "2026-10-02T09:14:03.120455Z"
    assert entry.time.isoformat() == "2026-10-02T09:14:03.120455+00:00"
    assert entry.level == "info"
    assert entry.src_addr == "10.244.1.7:40312"
    assert entry.src_workload == fx.SLEEP_POD
    assert entry.src_namespace == "default"
    assert entry.src_identity == fx.SLEEP_ID
    assert entry.dst_addr == "10.244.2.9:15008"
    assert entry.dst_hbone_addr == "10.244.2.9:9080"
    assert entry.dst_service == fx.PRODUCTPAGE_SVC
    assert entry.dst_workload == fx.PRODUCTPAGE_POD
    assert entry.dst_namespace == "default"
    assert entry.dst_identity == fx.PRODUCTPAGE_ID
    assert entry.direction == "outbound"
    assert (entry.bytes_sent, entry.bytes_recv, entry.duration_ms) == (90, 5002, 3.0)
    assert entry.error is None
    assert entry.src_cluster is None and entry.dst_cluster is None  # 1.30 has no cluster fields
    assert entry.mtls and not entry.failed


def test_131_inbound_carries_cluster_fields(fx):
    entry = one(fx.LINE_131_INBOUND)
    assert entry.direction == "inbound"
    assert entry.src_cluster == "Kubernetes" and entry.dst_cluster == "Kubernetes"
    assert (entry.bytes_sent, entry.bytes_recv) == (5002, 90)
    assert entry.duration_ms == 2.0


def test_130_and_131_lines_differ_only_in_cluster_fields(fx):
    old, new = one(fx.LINE_130_OUTBOUND).to_dict(), one(fx.LINE_131_OUTBOUND).to_dict()
    assert {key for key in old if old[key] != new[key]} == {"src_cluster", "dst_cluster"}


def test_space_separated_head_and_quoted_hbone_address(fx):
    entry = one(fx.LINE_QUOTED_HBONE_SPACES)
    assert entry.dst_hbone_addr == "10.244.2.9:9080"
    assert entry.to_dict() == one(fx.LINE_130_OUTBOUND).to_dict()


def test_quoted_and_bare_values_are_equivalent(fx):
    quoted = fx.LINE_130_OUTBOUND.replace("src.addr=10.244.1.7:40312", 'src.addr="10.244.1.7:40312"').replace(
        "bytes_sent=90", 'bytes_sent="90"')
    bare = fx.LINE_130_OUTBOUND.replace('direction="outbound"', "direction=outbound").replace(
        'duration="3ms"', "duration=3ms")
    assert one(quoted).to_dict() == one(bare).to_dict() == one(fx.LINE_130_OUTBOUND).to_dict()


def test_server_side_denial_none_allowed(fx):
    entry = one(fx.LINE_DENY_NONE_ALLOWED)
    assert entry.level == "error" and entry.direction == "inbound"
    assert entry.error == "connection closed due to policy rejection: allow policies exist, but none allowed"
    assert (entry.bytes_sent, entry.bytes_recv) == (0, 0)
    assert entry.src_identity == fx.NOTSLEEP_ID


def test_server_side_explicit_deny_names_the_policy(fx):
    entry = one(fx.LINE_DENY_EXPLICIT)
    assert entry.error == "connection closed due to policy rejection: explicitly denied by: default/deny-notsleep"


def test_client_side_denial_is_http_401(fx):
    entry = one(fx.LINE_CLIENT_401)
    assert entry.direction == "outbound" and entry.level == "error"
    assert entry.error == "http status: 401 Unauthorized"
    assert (entry.bytes_sent, entry.bytes_recv) == (0, 0)


def test_strict_refusal_has_no_identities_and_no_tunnel(fx):
    entry = one(fx.LINE_STRICT_REFUSAL)
    assert entry.error.endswith("explicitly denied by: istio-system/istio_converted_static_strict")
    assert entry.src_identity is None and entry.dst_identity is None and not entry.mtls
    assert entry.dst_hbone_addr is None
    assert entry.dst_addr == "10.244.2.9:9080"
    assert entry.src_namespace == "mesh-outside"


def test_waypoint_hop_on_both_sides(fx):
    outbound, inbound = parse_ztunnel_access_log(fx.LINE_WAYPOINT_OUTBOUND + "\n" + fx.LINE_WAYPOINT_INBOUND)
    assert outbound.dst_workload == fx.WAYPOINT_POD and outbound.dst_identity == fx.WAYPOINT_ID
    assert inbound.src_workload == fx.WAYPOINT_POD and inbound.src_identity == fx.WAYPOINT_ID
    assert inbound.dst_identity == fx.PRODUCTPAGE_ID
    assert inbound.duration_ms == 2093.0


def test_unrelated_lines_are_skipped_and_order_is_kept(fx):
    lines = []
    for access, noise in zip(fx.ALL_ACCESS_LINES, fx.UNRELATED_LINES * 2):
        lines += [noise, access]
    entries = parse_ztunnel_access_log("\n".join(lines) + "\n")
    assert [entry.timestamp for entry in entries] == [one(line).timestamp for line in fx.ALL_ACCESS_LINES]


def test_crlf_line_endings(fx):
    assert len(parse_ztunnel_access_log("\r\n".join(fx.ALL_ACCESS_LINES))) == len(fx.ALL_ACCESS_LINES)


def test_empty_log():
    assert parse_ztunnel_access_log("") == []


def test_kubectl_prefix_is_tolerated(fx):
    prefixed = f"[pod/{fx.ZTUNNEL_SERVER}/istio-proxy] {fx.LINE_131_INBOUND}"
    assert one(prefixed).to_dict() == one(fx.LINE_131_INBOUND).to_dict()


def test_escaped_quotes_and_unicode_in_error(fx):
    line = fx.LINE_CLIENT_401.replace(
        'error="http status: 401 Unauthorized"', r'error="io error: \"broken pipe\" at \u{1b}end\\"')
    assert one(line).error == 'io error: "broken pipe" at \x1bend\\'


def test_unknown_fields_are_kept_in_extra(fx):
    line = fx.LINE_131_INBOUND.replace('direction="inbound"', 'direction="inbound" dst.future="x y"')
    entry = one(line)
    assert entry.extra == {"dst.future": "x y"}
    assert entry.direction == "inbound" and entry.bytes_sent == 5002
    assert entry.to_dict()["extra"] == {"dst.future": "x y"}
    assert "extra" not in one(fx.LINE_131_INBOUND).to_dict()


def test_fields_in_another_order_parse_the_same(fx):
    head, fields = fx.LINE_131_INBOUND.split("connection complete\t")
    reordered = head + "connection complete\t" + " ".join(reversed(fields.split(" ")))
    assert one(reordered).to_dict() == one(fx.LINE_131_INBOUND).to_dict()


@pytest.mark.parametrize("index", range(10))
def test_fast_path_and_general_parser_agree(fx, index):
    line = fx.ALL_ACCESS_LINES[index]
    assert evidence._KNOWN_LINE.match(line), "every fixture line should take the fast path"
    general = evidence._parse_other_line(line)
    assert general is not None and general.to_dict() == one(line).to_dict()


def test_json_lines_are_parsed(fx):
    record = {"level": "error", "time": "2026-10-02T09:15:11.500120Z", "scope": "access",
              "message": "connection complete", "src.addr": "10.244.1.8:51544", "src.workload": fx.NOTSLEEP_POD,
              "src.identity": fx.NOTSLEEP_ID, "dst.addr": "10.244.2.9:15008", "dst.workload": fx.PRODUCTPAGE_POD,
              "direction": "inbound", "bytes_sent": 0, "bytes_recv": 0, "duration": "0ms",
              "error": "connection closed due to policy rejection: allow policies exist, but none allowed"}
    other = {**record, "message": "received response", "scope": "xds::client:xds"}
    entries = parse_ztunnel_access_log(json.dumps(other) + "\n" + json.dumps(record))
    assert len(entries) == 1
    entry = entries[0]
    assert entry.level == "error" and entry.timestamp == "2026-10-02T09:15:11.500120Z"
    assert entry.src_workload == fx.NOTSLEEP_POD and entry.bytes_sent == 0 and entry.duration_ms == 0.0
    assert entry.error.startswith("connection closed due to policy rejection")


def test_entries_are_frozen(fx):
    entry = one(fx.LINE_130_OUTBOUND)
    with pytest.raises(AttributeError):
        entry.direction = "inbound"  # type: ignore[misc]
    assert entry == one(fx.LINE_130_OUTBOUND)
    assert hash(entry) == hash(one(fx.LINE_130_OUTBOUND))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15ms", 15.0), ("0ms", 0.0), ("1.2s", 1200.0), ("350us", 0.35), ("350µs", 0.35), ("2m", 120000.0),
     ("500ns", 0.0005), ("7", 7.0), ("soon", None), ("", None)],
)
def test_durations(text, expected):
    assert parse_duration_ms(text) == (pytest.approx(expected) if expected is not None else None)


def test_unreadable_duration_is_none(fx):
    assert one(fx.LINE_130_OUTBOUND.replace('duration="3ms"', 'duration="later"')).duration_ms is None
