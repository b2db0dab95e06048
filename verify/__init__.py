"""Verification and evidence for the ambient lab: prove the mesh works, with structured results.

A plain Python package (no Pulumi import): the Pulumi program runs it after `pulumi up`, and `python -m verify`
re-runs it at any time. Public API:

* `verify.evidence`: `parse_ztunnel_access_log`, `certificates_from_config_dump` and their result types.
* `verify.cluster`: `Kubectl`, the one boundary that talks to the cluster.
* `verify.checks`: `run_checks`, `CheckContext`, `stack_outputs`; one module per family of checks beneath it
  (`enrolment`, `traffic`, `certificates`, `ztunnel_logs`, `l7_path`, `addons`), each with its pure decision
  functions, and `verify.checks.base` for the polling and result types they share.
* `verify.report`: `CheckResult`, `Report`, `render_table`.
"""

from verify.checks import MODES, CheckContext, run_checks, stack_outputs
from verify.cluster import Cluster, ClusterError, Kubectl
from verify.evidence import (
    AccessLogEntry,
    EvidenceError,
    WorkloadCertificate,
    certificates_from_config_dump,
    parse_ztunnel_access_log,
)
from verify.report import CheckResult, Report, render_table

__all__ = [
    "MODES",
    "AccessLogEntry",
    "CheckContext",
    "CheckResult",
    "Cluster",
    "ClusterError",
    "EvidenceError",
    "Kubectl",
    "Report",
    "WorkloadCertificate",
    "certificates_from_config_dump",
    "parse_ztunnel_access_log",
    "render_table",
    "run_checks",
    "stack_outputs",
]
