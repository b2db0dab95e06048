"""The verification: after every `pulumi up`, run the mesh checks (the verify package) and export the evidence."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_command as command

from components.cluster import PROJECT_ROOT, lab_python
from components.failures import fail_with_sentence
from lab.images import DIGESTS_FILE as IMAGE_RECORD
from components.kube import TYPE_PREFIX
from verify.checks import stack_outputs

# What the outputs say in a preview, where the checks never run: they test a cluster, not a plan.
PENDING = {"passed": None, "summary": "the checks run on pulumi up, after every resource they test is ready"}


@dataclass(frozen=True)
class VerificationArgs:
    mode: str
    namespace: str
    cluster_arguments: list[str]  # how verify reaches the cluster: --kind-cluster NAME, or --context (--kubeconfig)
    report_file: str
    fail_on_error: bool
    depends_on: list[pulumi.Resource]
    timeout_s: int  # how long each check may retry before it fails (istio-ambient-lab:verificationTimeout)
    addons: bool = False  # Prometheus and Kiali are installed: check that they saw the mesh traffic too
    kiali_login: bool = False  # Kiali asks for a token (not the lab's kind cluster): the check signs in


def cluster_arguments(target: str, cluster_name: str, context: str | None, kubeconfig_path: str | None) -> list[str]:
    """How verify reaches the lab's cluster: by kind cluster name, or by kubeconfig context (never the current one)."""
    if target == "kind":
        return ["--kind-cluster", cluster_name]
    return ["--context", context or "", *(["--kubeconfig", kubeconfig_path] if kubeconfig_path else [])]


def verify_command(args: VerificationArgs) -> str:
    """The verify CLI with the JSON report on stdout. Exit 1 (a check failed) still prints the report, which this
    component judges itself; exit 2 (usage, cluster unreachable) fails the invoke with verify's own sentence."""
    words = [
        "-m", "verify", "--mode", args.mode, "--namespace", args.namespace, *args.cluster_arguments,
        *(["--addons"] if args.addons else []), *(["--kiali-login"] if args.kiali_login else []),
        "--image-record", IMAGE_RECORD, "--timeout", str(args.timeout_s),
        "--json", "--report-file", args.report_file,
    ]
    return f"{lab_python()} {shlex.join(words)} || [ $? -eq 1 ]"


def judge(printed: str, fail_on_error: bool) -> dict[str, Any]:
    """The report printed by verify, or the update's failure with its summary when a check failed."""
    try:
        report = json.loads(printed)
        if not isinstance(report, dict):
            raise ValueError("not a report")
    except ValueError:
        raise pulumi.RunError(
            "The verification printed no report; run `./lab.sh verify` to see why, or set "
            "istio-ambient-lab:verify false to skip it."
        ) from None
    if fail_on_error and not report.get("passed"):
        raise pulumi.RunError(
            f"Verification failed: {report.get('summary')}; see the report in the stack outputs or the report file, "
            "or set istio-ambient-lab:failOnVerificationError false to keep the stack anyway."
        )
    return report


class Verification(pulumi.ComponentResource):
    """Runs the checks on every `up` (never in preview) as an invoke: it reads the cluster, it creates nothing, so
    a second `up` reports no resource changes."""

    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None):
        # The component also names what the checks wait for, so the state (and the critical-path benchmark) shows
        # the wait; it has no resources of its own, so this delays nothing.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=args.depends_on))
        super().__init__(f"{TYPE_PREFIX}:Verification", name, None, opts)
        if pulumi.runtime.is_dry_run():
            report: pulumi.Output[dict] = pulumi.Output.from_input(PENDING)
            derived = pulumi.Output.from_input({"certificate_san": None, "ztunnel_evidence": None, "verification": PENDING})
        else:
            result = command.local.run_output(
                command=verify_command(args),
                dir=PROJECT_ROOT,
                # verify prints its progress on stderr: shown as the checks go; the JSON on stdout is not logged.
                logging=command.local.Logging.STDERR,
                opts=pulumi.InvokeOutputOptions(depends_on=args.depends_on, parent=self),
            )
            printed = result.recover(fail_with_sentence("The verification")).stdout
            report = printed.apply(lambda text: judge(text, args.fail_on_error))
            derived = report.apply(stack_outputs)
        self.report = derived.apply(lambda d: d["verification"])
        self.certificate_san = derived.apply(lambda d: d["certificate_san"])
        self.ztunnel_evidence = derived.apply(lambda d: d["ztunnel_evidence"])
        self.register_outputs({"passed": report.apply(lambda r: r.get("passed"))})
