"""Open a running lab's Kiali (and Prometheus) on 127.0.0.1, as ``istioctl dashboard kiali`` does, without istioctl.

    ./lab.sh dashboard l7 --prometheus --kiali-port 20002 --open
    venv/bin/python -m lab.dashboard --stack l7 --prometheus      (the same, without the lab.sh wrapper)

It reads the stack's configuration (target, cluster, context, whether the addons are on), reaches the cluster through
the `verify.cluster` boundary (a private temporary kubeconfig for a kind cluster), port-forwards ``svc/kiali`` (and
``svc/prometheus``) in istio-system on 127.0.0.1 only, prints the URLs and waits. Ctrl-C stops the port-forwards,
removes the temporary kubeconfig and exits 0. Every other ending is one sentence on stderr and exit 1 (2 for a usage
error).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol, TextIO

from lab import catalog
from lab import config as lab_config
from lab.bootstrap import LabError
from lab.cli import DEFAULT_STACK, Paths, stack_config, tool_env
from lab.preflight import LAB_SCRIPT
from verify.__main__ import UsageError, resolve_kubeconfig
from verify.cluster import ClusterError, KindClusterMissing, Kubectl, RawGetError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parent.parent
OBSERVABILITY_KEY = f"{lab_config.PROJECT}:observability"
# Kiali and Prometheus answer within seconds of a ready pod; kubectl needs a moment to pick the pod behind the Service.
READY_TIMEOUT_S = 30.0
# How often to look whether a port-forward is still alive.
WATCH_INTERVAL_S = 0.5
DIRECT_COMMAND = "./lab.sh dashboard"


class DashboardError(Exception):
    """The dashboard cannot open or stopped; the message is one sentence saying what to do."""


@dataclass(frozen=True)
class Addon:
    """One addon to open: its Service in istio-system, the local port, and the URL path to print."""

    title: str
    service: str
    remote_port: int
    local_port: int
    port_flag: str
    path: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}{self.path}"


@dataclass(frozen=True)
class Options:
    stack: str
    prometheus: bool
    kiali_port: int
    prometheus_port: int
    open_browser: bool

    @property
    def addons(self) -> list[Addon]:
        chosen = [Addon("Kiali", catalog.KIALI_SERVICE, catalog.KIALI_PORT, self.kiali_port, "--kiali-port",
                        catalog.KIALI_WEB_ROOT)]
        if self.prometheus:
            chosen.append(Addon("Prometheus", catalog.PROMETHEUS_SERVICE, catalog.PROMETHEUS_PORT,
                                self.prometheus_port, "--prometheus-port"))
        return chosen


class Forward(Protocol):
    """A running port-forward (`verify.cluster.PortForward`, or a fake in the tests)."""

    command: str

    @property
    def running(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    def last_error_line(self) -> str: ...

    def terminate(self) -> None: ...

    def stop(self, timeout_s: float = ...) -> None: ...


class DashboardCluster(Protocol):
    """What the dashboard needs from the cluster boundary: `verify.cluster.Kubectl` provides it."""

    def nodes(self) -> dict[str, Any]: ...

    def command(self, args: Sequence[str]) -> str: ...

    def get_raw(self, path: str, timeout_s: float = ...) -> str: ...

    def open_port_forward(self, namespace: str, target: str, remote_port: int, *, local_port: int | None = ...,
                          ready_timeout_s: float = ..., new_session: bool = ...) -> Forward: ...


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port from 1 to 65535")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.dashboard",
        description="Open a running lab's Kiali (and Prometheus) on 127.0.0.1 through kubectl port-forward; "
        "Ctrl-C stops it.",
        allow_abbrev=False,
    )
    parser.add_argument("--stack", default=DEFAULT_STACK, help="the lab's stack (default: %(default)s)")
    parser.add_argument("--prometheus", action="store_true", help="also open Prometheus")
    parser.add_argument("--kiali-port", type=_port, default=catalog.KIALI_PORT, metavar="PORT",
                        help="local port for Kiali on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--prometheus-port", type=_port, default=catalog.PROMETHEUS_PORT, metavar="PORT",
                        help="local port for Prometheus on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--open", action="store_true", dest="open_browser", help="open Kiali in the web browser")
    return parser


def parse_options(argv: Sequence[str] | None) -> Options:
    args = _parser().parse_args(argv)
    if args.prometheus and args.kiali_port == args.prometheus_port:
        raise UsageError(f"--kiali-port and --prometheus-port are both {args.kiali_port}: give them different ports.")
    return Options(args.stack, args.prometheus, args.kiali_port, args.prometheus_port, args.open_browser)


def port_is_free(port: int) -> bool:
    """Whether a listener could bind `port` on 127.0.0.1 now (as kubectl's does: with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def open_cluster(config: lab_config.LabConfig) -> AbstractContextManager[DashboardCluster]:
    """The real boundary: kubectl with the stack's kubeconfig and context (a private temporary one for kind)."""
    if config.target == "kind":
        if shutil.which("kind") is None:
            raise ClusterError("kind is not installed")
        return Kubectl.for_kind_cluster(config.cluster_name)
    return nullcontext(Kubectl(resolve_kubeconfig(config.kubeconfig_path), str(config.kube_context)))


def _service_path(service: str) -> str:
    return f"/api/v1/namespaces/{catalog.ISTIO_NAMESPACE}/services/{service}"


def _not_up(stack: str, reason: str) -> DashboardError:
    return DashboardError(f"The lab of stack {stack} is not up ({reason.rstrip('.')}): run `{LAB_SCRIPT} up {stack}` "
                          "first.")


def _check_installed(kube: DashboardCluster, addon: Addon, stack: str) -> None:
    try:
        kube.get_raw(_service_path(addon.service))
    except ClusterError as error:
        reason = error.reason or str(error)
        if isinstance(error, RawGetError) and "(NotFound)" in reason:
            raise DashboardError(
                f"{addon.title} is not installed in the cluster of stack {stack} (no Service {addon.service} in "
                f"{catalog.ISTIO_NAMESPACE}): run `{LAB_SCRIPT} up {stack}` to install it.") from None
        raise _not_up(stack, f"asking for Service {addon.service} failed: {reason}") from None


def kiali_login_hint(kube: DashboardCluster) -> str:
    """How to sign in to a Kiali that asks for a token (off the lab's kind cluster): the command that mints one.

    The lab never mints, prints or keeps this token itself: the user runs the command, with the lab's kubeconfig and
    context, and pastes what it prints into Kiali's login page. It is a token of Kiali's own service account, which
    the chart binds to its read-only viewer role (view_only_mode), and it expires (kubectl's default: one hour).
    """
    command = kube.command(["create", "token", catalog.KIALI_SERVICE_ACCOUNT, "-n", catalog.ISTIO_NAMESPACE])
    return f"  (Kiali asks for a token: paste the one `{command}` prints; it expires, run it again for a new one)"


def _stop_all(forwards: Sequence[Forward]) -> None:
    """Stop every forward: signal them all first, then wait for each, so a quick exit stops them all."""
    for forward in forwards:
        forward.terminate()
    for forward in forwards:
        forward.stop()


@contextmanager
def _forwarding(kube: DashboardCluster, addons: Sequence[Addon], stack: str) -> Iterator[list[tuple[Addon, Forward]]]:
    opened: list[tuple[Addon, Forward]] = []
    try:
        for addon in addons:
            try:
                forward = kube.open_port_forward(catalog.ISTIO_NAMESPACE, f"svc/{addon.service}", addon.remote_port,
                                                 local_port=addon.local_port, ready_timeout_s=READY_TIMEOUT_S,
                                                 new_session=True)
            except ClusterError as error:
                raise DashboardError(
                    f"Could not open {addon.title} on 127.0.0.1:{addon.local_port} ({str(error).rstrip('.')}): check "
                    f"that its pod in {catalog.ISTIO_NAMESPACE} is Ready, then run `{LAB_SCRIPT} dashboard {stack}` "
                    "again.") from None
            opened.append((addon, forward))
        yield opened
    finally:
        _stop_all([forward for _, forward in opened])


def run(
    options: Options,
    config: lab_config.LabConfig,
    *,
    open_cluster: Callable[[lab_config.LabConfig], AbstractContextManager[DashboardCluster]] = open_cluster,
    port_is_free: Callable[[int], bool] = port_is_free,
    open_browser: Callable[[str], bool] = webbrowser.open,
    sleep: Callable[[float], None] = time.sleep,
    out: TextIO,
) -> NoReturn:
    """Open the addons and wait until Ctrl-C or until a port-forward dies; it never returns.

    Raises:
        DashboardError: the addons are off, the lab is not up, a port is busy, or a port-forward failed or stopped.
        KeyboardInterrupt: Ctrl-C; by then every port-forward is stopped and the kubeconfig removed.
    """
    stack = options.stack
    if not config.observability:
        raise DashboardError(
            f"Kiali is not installed in stack {stack}: its config has {OBSERVABILITY_KEY} false; turn it on with "
            f"`{LAB_SCRIPT} pulumi config set {OBSERVABILITY_KEY} true --stack {stack}`, then run `{LAB_SCRIPT} up "
            f"{stack}`.")
    try:
        with open_cluster(config) as kube:
            try:
                kube.nodes()
            except ClusterError as error:
                raise _not_up(stack, f"its cluster does not answer: {error.reason or error}") from None
            for addon in options.addons:
                _check_installed(kube, addon, stack)
            for addon in options.addons:
                if not port_is_free(addon.local_port):
                    raise DashboardError(
                        f"Port {addon.local_port} on 127.0.0.1 is already in use, so {addon.title} cannot be forwarded "
                        f"there: stop what holds it (another dashboard?) or pick another port with `{DIRECT_COMMAND} "
                        f"{stack} {addon.port_flag} PORT`.")
            with _forwarding(kube, options.addons, stack) as forwards:
                for addon, _ in forwards:
                    print(f"{addon.title}: {addon.url}", file=out, flush=True)
                for addon, forward in forwards:
                    print(f"  ({addon.title} through: {forward.command})", file=out, flush=True)
                if config.target != "kind":  # Kiali is anonymous on the lab's own kind cluster only
                    print(kiali_login_hint(kube), file=out, flush=True)
                if options.open_browser and not open_browser(options.addons[0].url):
                    print(f"  (no web browser to open: open {options.addons[0].url} yourself)", file=out, flush=True)
                print("Press Ctrl-C to stop.", file=out, flush=True)
                while True:
                    for addon, forward in forwards:
                        if not forward.running:
                            raise DashboardError(
                                f"The {addon.title} port-forward stopped (kubectl exited with {forward.exit_code}: "
                                f"{forward.last_error_line()}): run `{LAB_SCRIPT} dashboard {stack}` again.")
                    sleep(WATCH_INTERVAL_S)
    # What opening the cluster raised: the body turns its own errors into sentences.
    except KindClusterMissing:
        raise _not_up(stack, f"kind has no cluster named {config.cluster_name}") from None
    except ClusterError as error:  # kind is missing or does not answer
        raise _not_up(stack, str(error)) from None


def main(
    argv: Sequence[str] | None = None,
    *,
    root: Path | None = None,
    open_cluster: Callable[[lab_config.LabConfig], AbstractContextManager[DashboardCluster]] = open_cluster,
    port_is_free: Callable[[int], bool] = port_is_free,
    open_browser: Callable[[str], bool] = webbrowser.open,
    sleep: Callable[[float], None] = time.sleep,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the dashboard from the command line.

    Args:
        argv: the arguments (default: sys.argv[1:]).
        root: the project, whose ``stacks/`` hold the configuration (default: this checkout; its ``.lab/tools`` then
            go first on PATH, as for ``./lab.sh``).
        open_cluster, port_is_free, open_browser, sleep: the boundaries; tests replace them.
        stdout, stderr: where the URLs and the errors go.

    Returns:
        0 after Ctrl-C, 1 when the dashboard could not open or stopped, 2 for a usage error.
    """
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        with redirect_stdout(out), redirect_stderr(err):
            options = parse_options(argv)
    except UsageError as error:
        print(f"python -m lab.dashboard: {error}", file=err)
        return EXIT_USAGE
    except SystemExit as exit_:  # argparse has printed the usage and the error, or the help
        return EXIT_USAGE if exit_.code else EXIT_OK
    if root is None:
        root = PROJECT_ROOT
        # kind and kubectl may live only in the project's tools folder (./lab.sh installs them there).
        os.environ["PATH"] = tool_env(Paths(root), os.environ)["PATH"]
    try:
        config = stack_config(root, options.stack)
        run(options, config, open_cluster=open_cluster, port_is_free=port_is_free, open_browser=open_browser,
            sleep=sleep, out=out)
    except (DashboardError, LabError) as error:
        print(error, file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("Dashboard stopped.", file=out)
        return EXIT_OK


def _stop_on_sigterm() -> None:
    """`kill` (SIGTERM) cleans up like Ctrl-C: port-forwards stopped, temporary kubeconfig removed."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


if __name__ == "__main__":
    _stop_on_sigterm()
    sys.exit(main())
