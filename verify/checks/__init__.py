"""The checks that prove the mesh works, per mesh mode, each returning a structured `CheckResult`.

One module per family of checks, each holding its decision functions (pure, tested on recorded outputs) and the
check that asks the cluster:

* `verify.checks.base`: what they share: the facts they rely on, `CheckContext`, `poll` and `check_result`, and
  pod and ztunnel lookups.
* `verify.checks.enrolment`: the app pods are in the ambient mesh, the outside client is not.
* `verify.checks.traffic`: the traffic matrix (curl from each client, classified), and the probes whose ztunnel
  lines the other checks find again.
* `verify.checks.strict_mtls`: plaintext from outside the mesh is refused, and ztunnel says STRICT refused it.
* `verify.checks.certificates`: the workload certificates held by the ztunnel on each workload's node.
* `verify.checks.ztunnel_logs`: the check's own request found in both ztunnels' access logs.
* `verify.checks.l7_path`: whether the waypoint's Envoy handled the request, and that it was the waypoint's.
* `verify.checks.addons`: Prometheus and Kiali (only with the observability addons).

This module says which check runs in which mode (`check_specs`), runs them side by side (`run_checks`) and builds
the stack outputs (`stack_outputs`). Which check runs in which mode, and what it expects there, is data (`TRAFFIC_CASES`,
`MODE_FACTS`, `check_specs`), not branches scattered through the code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from verify.checks.addons import check_kiali_graph, check_prometheus_mtls
from verify.checks.base import (
    ENROLMENT_CHECK,
    KIALI_CHECK,
    L7_PATH_CHECK,
    LOG_EVIDENCE_CHECK,
    MODE_FACTS,
    MODES,
    PROMETHEUS_CHECK,
    STRICT_CHECK,
    CheckContext,
    certificate_check_name,
)
from verify.checks.certificates import CERTIFICATE_WORKLOADS, check_certificate
from verify.checks.enrolment import check_enrolment
from verify.checks.images import IMAGES_CHECK, check_image_digests
from verify.checks.l7_path import check_l7_path
from verify.checks.strict_mtls import check_strict_mtls
from verify.checks.traffic import TRAFFIC_CASES, check_traffic
from verify.checks.ztunnel_logs import check_ztunnel_logs
from verify.report import CheckResult, Report

__all__ = [
    "LOG_EVIDENCE_CHECK",
    "MODES",
    "CheckContext",
    "CheckSpec",
    "certificate_check_name",
    "check_specs",
    "run_checks",
    "stack_outputs",
]


# --- Which checks run where, and running them -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckSpec:
    """A check, the modes it applies to, and whether it reads the observability addons (Prometheus, Kiali)."""

    name: str
    modes: frozenset[str]
    run: Callable[[CheckContext], CheckResult]
    needs_addons: bool = False
    needs_image_record: bool = False  # only with a trust-on-first-use record to hold the images to


def check_specs(addons: bool = False, image_record: bool = False) -> list[CheckSpec]:
    """Every check, in run order, with the modes it applies to; the addon checks only when `addons` is true, the
    image digest check only with an image record (`--image-record`)."""
    every_mode = frozenset(MODE_FACTS)
    specs = [CheckSpec(ENROLMENT_CHECK, every_mode, check_enrolment)]
    specs += [
        CheckSpec(case.name, frozenset(case.expect), functools.partial(check_traffic, case=case))
        for case in TRAFFIC_CASES
    ]
    specs.append(CheckSpec(STRICT_CHECK, every_mode, check_strict_mtls))
    specs += [
        CheckSpec(certificate_check_name(app), every_mode, functools.partial(check_certificate, app=app))
        for app in CERTIFICATE_WORKLOADS
    ]
    specs.append(CheckSpec(LOG_EVIDENCE_CHECK, every_mode, check_ztunnel_logs))
    specs.append(CheckSpec(L7_PATH_CHECK, every_mode, check_l7_path))
    specs.append(CheckSpec(IMAGES_CHECK, every_mode, check_image_digests, needs_image_record=True))
    specs.append(CheckSpec(PROMETHEUS_CHECK, every_mode, check_prometheus_mtls, needs_addons=True))
    specs.append(CheckSpec(KIALI_CHECK, every_mode, check_kiali_graph, needs_addons=True))
    return [spec for spec in specs if (addons or not spec.needs_addons)
            and (image_record or not spec.needs_image_record)]


def run_checks(ctx: CheckContext, progress: Callable[[str], None] | None = None) -> Report:
    """Run every check that applies to `ctx.mode` (the addon checks only when `ctx.addons`) into a report.

    The checks are independent (each finds its own pods, sends its own requests and polls with its own timeout), so
    up to `ctx.parallel` of them run at once: the run takes about as long as its slowest checks, not their sum. The
    report keeps `check_specs` order whatever order they finish in.

    Args:
        ctx: the cluster boundary, mode, namespace, addons, retry schedule and how many checks run at once.
        progress: called with one line as each check starts and finishes (the CLI prints them to stderr); the
            ``[i/n]`` prefix says which check a line is about, since lines of checks running together interleave.

    Returns:
        The report. A check that crashes is reported as failed with the error; the run goes on.
    """
    report = Report(mode=ctx.mode, namespace=ctx.namespace, started_at=ctx.now())
    specs = [spec for spec in check_specs(addons=ctx.addons, image_record=bool(ctx.image_record))
             if ctx.mode in spec.modes]
    said = threading.Lock()  # one line at a time, never two halves mixed

    def say(line: str) -> None:
        if progress:
            with said:
                progress(line)

    def run_one(index: int, spec: CheckSpec) -> CheckResult:
        say(f"[{index}/{len(specs)}] {spec.name} ...")
        started = ctx.clock()
        try:
            result = spec.run(ctx)
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others' results
            result = CheckResult(spec.name, [], "the check to complete",
                                 f"the check crashed: {type(error).__name__}: {error}", {}, False,
                                 ctx.clock() - started)
        say(f"[{index}/{len(specs)}] {'PASS' if result.passed else 'FAIL'} {spec.name} "
            f"({result.duration_s:.1f}s): {result.observed}")
        return result

    with ThreadPoolExecutor(max_workers=max(1, ctx.parallel), thread_name_prefix="check") as pool:
        running = [pool.submit(run_one, index, spec) for index, spec in enumerate(specs, start=1)]
        report.results.extend(future.result() for future in running)
    return report


def stack_outputs(report: Report | Mapping[str, Any]) -> dict[str, Any]:
    """The values the Pulumi stack exports: certificate SANs, the ztunnel evidence, and the whole report.

    Args:
        report: a `Report`, or its dict form (what ``python -m verify --json`` prints), so a program that runs the
            command line can build its outputs from the printed JSON.

    Returns:
        ``certificate_san`` (workload -> the leaf's URI SAN, None when unread), ``ztunnel_evidence`` (the probe the
        check sent, with its client port, and the client and server lines of that probe, parsed, with node and
        ztunnel pod) and ``verification`` (the report as a dict).
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
        "ztunnel_evidence": {"probe": evidence.get("probe"), "client": evidence.get("client"),
                             "server": evidence.get("server")},
        "verification": data,
    }
