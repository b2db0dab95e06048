"""Structured results of the checks, and their JSON and plain-text forms.

A check never answers with a bare boolean: it says what it ran, what it expected, what it saw and on which
evidence it decided, so a reader of the report (or of the stack outputs) needs no kubectl to follow it.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CheckResult", "Report", "render_table"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: short, stable name (e.g. ``traffic: notsleep GET /productpage``).
        command: the commands or API calls the check ran, each as one shell-readable string.
        expected: what a working mesh shows, in words.
        observed: what the cluster showed (on a timeout: the last thing seen).
        evidence: structured data behind the verdict (parsed log lines, certificate fields, pod and node names).
        passed: the verdict.
        duration_s: how long the check took, retries included.
        details: optional explanation, e.g. what a timed-out check waited for.
    """

    name: str
    command: list[str]
    expected: str
    observed: str
    evidence: dict[str, Any]
    passed: bool
    duration_s: float
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "name": self.name,
            "passed": self.passed,
            "expected": self.expected,
            "observed": self.observed,
            "command": list(self.command),
            "evidence": self.evidence,
            "duration_s": round(self.duration_s, 3),
            "details": self.details,
        }


@dataclass
class Report:
    """All check results of one verification run.

    Attributes:
        mode: the mesh mode verified, ``l4-only`` or ``l7``.
        namespace: the applications' namespace.
        started_at: when the run started (aware UTC datetime).
        results: one `CheckResult` per check, in run order.
    """

    mode: str
    namespace: str
    started_at: datetime
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        """The results that did not pass."""
        return [result for result in self.results if not result.passed]

    @property
    def passed(self) -> bool:
        """True when there is at least one result and every result passed."""
        return bool(self.results) and not self.failed

    @property
    def summary(self) -> str:
        """One line: how many checks passed, and which failed."""
        total, failed = len(self.results), self.failed
        line = f"{total - len(failed)} of {total} checks passed (mode {self.mode}, namespace {self.namespace})"
        if failed:
            line += "; failed: " + ", ".join(result.name for result in failed)
        return line

    def result(self, name: str) -> CheckResult | None:
        """The result of the check called `name`, or None."""
        return next((result for result in self.results if result.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "mode": self.mode,
            "namespace": self.namespace,
            "started_at": self.started_at.isoformat(),
            "passed": self.passed,
            "summary": self.summary,
            "results": [result.to_dict() for result in self.results],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text (datetimes and other non-JSON values as strings)."""
        return json.dumps(self.to_dict(), indent=indent, default=str)


def _cell(text: str, width: int) -> list[str]:
    return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False) or [""]


def render_table(report: Report, width: int = 120) -> str:
    """A plain-text table of the report: one row per check, then what failed and how to re-run it.

    Args:
        report: the report to render.
        width: the target line width; long texts wrap inside their column.

    Returns:
        The table, lines joined by newlines, ending with the summary line.
    """
    name_width = min(max((len(result.name) for result in report.results), default=5), 44)
    text_width = max(20, (width - name_width - 6 - 8 - 9) // 2)
    header = f"{'RESULT':6}  {'CHECK':{name_width}}  {'EXPECTED':{text_width}}  {'OBSERVED':{text_width}}  TIME"
    lines = [
        (f"Mesh verification: mode {report.mode}, namespace {report.namespace}, "
         f"started {report.started_at.isoformat(timespec='seconds')}"),
        "",
        header,
        "-" * len(header),
    ]
    for result in report.results:
        names = _cell(result.name, name_width)
        expected = _cell(result.expected, text_width)
        observed = _cell(result.observed, text_width)
        for row in range(max(len(names), len(expected), len(observed))):
            first = row == 0
            lines.append(
                f"{('PASS' if result.passed else 'FAIL') if first else '':6}  "
                f"{names[row] if row < len(names) else '':{name_width}}  "
                f"{expected[row] if row < len(expected) else '':{text_width}}  "
                f"{observed[row] if row < len(observed) else '':{text_width}}  "
                f"{f'{result.duration_s:.1f}s' if first else ''}".rstrip()
            )
    for result in report.failed:
        lines += ["", f"FAILED {result.name}"]
        if result.details:
            lines += textwrap.wrap(result.details, width, initial_indent="  ", subsequent_indent="  ")
        lines += [f"  $ {command}" for command in result.command]
    lines += ["", report.summary]
    return "\n".join(lines)
