"""Re-run the mesh checks against a lab's cluster at any time.

    python -m verify --mode l7 --kind-cluster ambient-lab
    python -m verify --mode l4-only --context kind-ambient-lab --kubeconfig ~/.kube/config --json
    python -m verify --mode l7 --kind-cluster ambient-l7 --addons   # also prove Prometheus and Kiali saw the traffic

Progress goes to stderr as each check starts and finishes; the table (or, with --json, the JSON report) goes to
stdout. Exit status: 0 when every check passed, 1 when one failed, 2 for a usage error or an unreachable cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from lab import catalog, leaks, logged_lines, private
from verify.checks import MODES, CheckContext, run_checks
from verify.cluster import Cluster, ClusterError, Kubectl
from verify.report import render_table

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Options:
    """The command line, validated."""

    mode: str
    namespace: str
    kubeconfig: str | None
    context: str | None
    kind_cluster: str | None
    json: bool
    report_file: Path | None
    timeout_s: float
    addons: bool = False
    kiali_login: bool = False
    image_record: Path | None = None


class UsageError(Exception):
    """A command line that cannot run; the message says what to change."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verify",
        description="Prove that the lab's ambient mesh works: enrolment, traffic policy, mTLS certificates, "
        "ztunnel logs and the L7 path (and, with --addons, that Prometheus and Kiali saw it).",
        allow_abbrev=False,
    )
    parser.add_argument("--mode", required=True, choices=MODES, help="the mesh mode the stack built")
    parser.add_argument("--namespace", default=catalog.DEFAULT_APPS_NAMESPACE,
                        help="the applications' namespace (default: %(default)s)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use; required unless --kind-cluster is given")
    parser.add_argument("--kind-cluster", metavar="NAME",
                        help="use kind cluster NAME: its kubeconfig from `kind get kubeconfig`, context kind-NAME")
    parser.add_argument("--addons", action="store_true",
                        help="the observability addons are installed: also check that Prometheus counted mTLS "
                        "connections from sleep and that Kiali's graph shows sleep -> productpage")
    parser.add_argument("--kiali-login", action="store_true",
                        help="Kiali asks for a login (auth strategy token, as on an existing cluster): sign in with a "
                        "10-minute token of its own read-only service account, through a port-forward")
    parser.add_argument("--image-record", type=Path, metavar="FILE",
                        help="trust-on-first-use record of image digests (./lab.sh passes .lab/image-digests.json): "
                        "also check that istiod, istio-cni, ztunnel and proxyv2 run the digests first recorded there")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--report-file", type=Path, metavar="PATH", help="also write the JSON report to PATH")
    parser.add_argument("--timeout", type=float, default=float(catalog.VERIFICATION_TIMEOUT_S), metavar="SECONDS",
                        help="how long each check may retry before it fails (default: %(default)s)")
    return parser


def resolve_kubeconfig(given: str | None) -> str | None:
    """The kubeconfig file to pass to kubectl: `given` (with ~ expanded: kubectl does not), else $KUBECONFIG's one
    file, else ~/.kube/config; None when $KUBECONFIG lists several files, which kubectl then merges itself, as the
    Kubernetes provider does.
    """
    if given:
        return os.path.abspath(os.path.expanduser(given))
    from_env = os.environ.get("KUBECONFIG", "")
    if os.pathsep in from_env:
        return None
    return from_env or str(Path.home() / ".kube" / "config")


def parse_options(argv: Sequence[str] | None) -> Options:
    """Parse and validate the command line (argparse exits 2 with usage on malformed arguments).

    Raises:
        UsageError: a combination of options that cannot run.
    """
    args = _parser().parse_args(argv)
    if args.kind_cluster and (args.kubeconfig or args.context):
        raise UsageError("Pass either --kind-cluster or --kubeconfig/--context, not both.")
    if not args.kind_cluster and not args.context:
        raise UsageError(
            "Pass --kind-cluster NAME or --context CONTEXT, so the checks never run against your current kubectl "
            "context by accident."
        )
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds.")
    return Options(
        mode=args.mode,
        namespace=args.namespace,
        kubeconfig=None if args.kind_cluster else resolve_kubeconfig(args.kubeconfig),
        context=args.context,
        kind_cluster=args.kind_cluster,
        json=args.json,
        report_file=args.report_file,
        timeout_s=args.timeout,
        addons=args.addons,
        kiali_login=args.kiali_login,
        image_record=args.image_record,
    )


def open_kubectl(options: Options) -> AbstractContextManager[Cluster]:
    """The real boundary: kubectl with an explicit kubeconfig and context (a private one for a kind cluster)."""
    if options.kind_cluster:
        return Kubectl.for_kind_cluster(options.kind_cluster)
    # parse_options guarantees a kubeconfig and a context whenever there is no kind cluster.
    # kubeconfig None: $KUBECONFIG lists several files, which kubectl merges itself.
    return nullcontext(Kubectl(options.kubeconfig, str(options.context)))


def main(
    argv: Sequence[str] | None = None,
    *,
    open_cluster: Callable[[Options], AbstractContextManager[Cluster]] = open_kubectl,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] | None = None,
    now: Callable[[], datetime] | None = None,
) -> int:
    """Run the checks from the command line.

    Args:
        argv: the arguments (default: sys.argv[1:]).
        open_cluster: makes the cluster boundary from the options; tests pass a fake.
        stdout, stderr: where the report and the progress go.
        sleep, clock, now: the retry pause, monotonic clock and wall clock (tests pass fakes so nothing waits).

    Returns:
        0 when every check passed, 1 when one failed, 2 for a usage error or an unreachable cluster.
    """
    out = stdout or sys.stdout
    # The progress is what the program's verification logs (pulumi-command), and it quotes what the checks saw:
    # short lines (lab.logged_lines). The report on `out` is data, never logged: left whole.
    err = logged_lines.FoldedLines(stderr or sys.stderr)
    try:
        # argparse prints usage and --help itself: send that to the streams this run was given.
        with redirect_stdout(out), redirect_stderr(err):
            options = parse_options(argv)
    except UsageError as error:
        print(f"python -m verify: {error}", file=err)
        return EXIT_USAGE
    except SystemExit as exit_:  # argparse has printed the usage and the error
        return EXIT_USAGE if exit_.code else EXIT_PASSED

    def progress(line: str) -> None:
        print(leaks.redact(line), file=err, flush=True)

    try:
        with open_cluster(options) as cluster:
            try:
                nodes = cluster.nodes()
            except ClusterError as error:
                raise ClusterError(
                    f"Cannot reach the cluster ({error}); start it, or pass the right --kubeconfig and --context "
                    "(or --kind-cluster)."
                ) from error
            progress(f"Verifying mode {options.mode} in namespace {options.namespace} "
                     f"on {len(nodes.get('items', []))} node(s)"
                     f"{', with the Prometheus and Kiali checks' if options.addons else ''}.")
            context = CheckContext(cluster=cluster, mode=options.mode, namespace=options.namespace,
                                   timeout_s=options.timeout_s, addons=options.addons,
                                   kiali_login=options.kiali_login,
                                   image_record=str(options.image_record) if options.image_record else None)
            context.sleep = sleep or context.sleep
            context.clock = clock or context.clock
            context.now = now or context.now
            report = run_checks(context, progress=progress)
    except ClusterError as error:
        print(f"python -m verify: {error}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("python -m verify: interrupted; no report was written.", file=err)
        return EXIT_USAGE

    # What the checks saw (a page, a log line, an error) may quote a credential: redacted wherever it is shown or
    # kept, in place, so the report still reads and parses.
    print(leaks.redact(report.to_json() if options.json else render_table(report)), file=out)
    if options.report_file:
        try:
            private.write_private(options.report_file, leaks.redact(report.to_json()) + "\n")
        except OSError as error:
            print(f"python -m verify: cannot write {options.report_file} ({error.strerror}); pass a writable "
                  "--report-file path.", file=err)
            return EXIT_USAGE
        progress(f"Report written to {options.report_file}.")
    return EXIT_PASSED if report.passed else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
