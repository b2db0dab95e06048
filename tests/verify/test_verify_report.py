"""Report: summary, JSON shape and the plain-text table."""

from __future__ import annotations

import datetime as dt
import json

from verify.report import CheckResult, Report, render_table

STARTED = dt.datetime(2026, 10, 2, 9, 30, tzinfo=dt.UTC)


def result(name: str, passed: bool, observed: str = "fine", details: str | None = None) -> CheckResult:
    return CheckResult(name=name, command=[f"kubectl exec deploy/sleep -- curl {name}"], expected="HTTP 200",
                       observed=observed, evidence={"when": STARTED}, passed=passed, duration_s=1.234,
                       details=details)


def test_summary_and_failed():
    report = Report("l7", "default", STARTED, [result("a", True), result("b", False), result("c", False)])
    assert [item.name for item in report.failed] == ["b", "c"]
    assert not report.passed
    assert report.summary == "1 of 3 checks passed (mode l7, namespace default); failed: b, c"
    assert report.result("b").name == "b" and report.result("zz") is None


def test_an_empty_report_has_not_passed():
    assert not Report("l7", "default", STARTED).passed


def test_json_round_trip_keeps_everything():
    report = Report("l4-only", "shop", STARTED, [result("a", True)])
    data = json.loads(report.to_json())
    assert data["started_at"] == "2026-10-02T09:30:00+00:00"
    assert data["results"][0]["duration_s"] == 1.234
    assert data["results"][0]["evidence"] == {"when": "2026-10-02 09:30:00+00:00"}  # non-JSON values as text


def test_table_wraps_long_text_and_lists_failures_with_their_commands():
    long = "connection reset (curl exit 56, http_code 000) " * 4
    report = Report("l4-only", "default", STARTED,
                    [result("enrolment", True), result("traffic: notsleep GET /productpage", False, long,
                                                       details="Timed out after 3 attempt(s)")])
    table = render_table(report, width=100)
    lines = table.splitlines()
    assert lines[0] == "Mesh verification: mode l4-only, namespace default, started 2026-10-02T09:30:00+00:00"
    assert lines[2].split() == ["RESULT", "CHECK", "EXPECTED", "OBSERVED", "TIME"]
    assert lines[4].startswith("PASS    enrolment") and lines[4].endswith("1.2s")
    assert lines[5].startswith("FAIL    traffic: notsleep GET /productpage")
    assert max(len(line) for line in lines[:8]) <= 100
    assert "FAILED traffic: notsleep GET /productpage" in lines
    assert "  Timed out after 3 attempt(s)" in lines
    assert "  $ kubectl exec deploy/sleep -- curl traffic: notsleep GET /productpage" in lines
    assert lines[-1] == report.summary
