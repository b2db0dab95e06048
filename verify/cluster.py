"""The one boundary that talks to the cluster: the `kubectl` command line, run as a subprocess.

Every call names its kubeconfig and context explicitly, so the checks never run against whatever context the user
happens to have selected. Checks receive a `Cluster` (this module's `Kubectl`, or a fake in the tests) and never
start processes themselves.
"""

from __future__ import annotations

import atexit
import http.client
import http.cookies
import json
import os
import shlex
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any, Protocol

__all__ = [
    "Cluster",
    "ClusterError",
    "ExecResult",
    "HttpResponse",
    "KindClusterMissing",
    "Kubectl",
    "PortForward",
    "RawGetError",
    "kind_kubeconfig",
    "proxy_cannot_reach",
]

DEFAULT_CALL_TIMEOUT_S = 30.0
PORT_FORWARD_READY_TIMEOUT_S = 15.0
# A port-forward can drop in the middle of a response (kubectl loses its stream to the pod): try again with a new
# forward this many times in all before giving up with a sentence.
HTTP_GET_ATTEMPTS = 3
# The shortest life the TokenRequest API grants a service-account token (10 minutes): enough for one verification.
TOKEN_DURATION_S = 600


class ClusterError(RuntimeError):
    """A cluster call could not be made or did not answer; the message says what to do.

    Attributes:
        reason: when kubectl or kind ran and failed, their own first error line (without the command line), for
            callers that phrase their own sentence around it; None otherwise.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class RawGetError(ClusterError):
    """``kubectl get --raw`` failed: the API server, or the service behind its proxy, answered with an error.

    ``reason`` is kubectl's line, e.g. ``Error from server (ServiceUnavailable): no endpoints available for service
    "kiali"``.
    """

    reason: str

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, reason)


class KindClusterMissing(ClusterError):
    """kind has no cluster of the name asked for (``kind get kubeconfig`` failed)."""


@dataclass(frozen=True)
class ExecResult:
    """What a command run with ``kubectl exec`` returned.

    Attributes:
        command: the kubectl command line, as the user could type it.
        exit_code: kubectl's exit code, which is the remote command's when it ran (kubectl then also prints
            ``command terminated with exit code N`` on stderr).
        stdout, stderr: the captured output, decoded as UTF-8 (undecodable bytes replaced).
    """

    command: str
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class HttpResponse:
    """An HTTP response read through a port-forward.

    Attributes:
        commands: the port-forward command line and the request, as the user could repeat them.
        status: the HTTP status code.
        body: the response body, decoded as UTF-8.
        cookies: the ``name=value`` pairs of the response's Set-Cookie headers, to send back as a Cookie header
            (Kiali's login answers with its session there); secrets: never print or store them.
    """

    commands: tuple[str, ...]
    status: int
    body: str
    cookies: tuple[str, ...] = ()


class Cluster(Protocol):
    """What the checks need from a cluster; `Kubectl` provides it, tests pass a fake."""

    def command(self, args: Sequence[str]) -> str:
        """The kubectl command line for `args`, for reports."""
        ...

    def pods(self, namespace: str, selector: str | None = None) -> dict[str, Any]:
        """``kubectl get pods -o json`` in `namespace`, optionally filtered by a label selector."""
        ...

    def nodes(self) -> dict[str, Any]:
        """``kubectl get nodes -o json``."""
        ...

    def exec(
        self, namespace: str, target: str, container: str, argv: Sequence[str], timeout_s: float = ...
    ) -> ExecResult:
        """Run `argv` in `container` of `target` (``deploy/NAME`` or a pod name); never raises on a non-zero exit."""
        ...

    def logs(
        self, namespace: str, pod: str, *, since_s: int | None = None, tail: int | None = None
    ) -> str:
        """A pod's log, optionally only the last `since_s` seconds or `tail` lines."""
        ...

    def http_get(self, namespace: str, pod: str, port: int, path: str, timeout_s: float = ..., *,
                 form: Mapping[str, str] | None = None, cookies: Sequence[str] = ()) -> HttpResponse:
        """GET `path` (POST `form`, when given) on `port` of `pod` (or ``svc/NAME``) through a port-forward on
        127.0.0.1."""
        ...

    def create_token(self, namespace: str, service_account: str, duration_s: int = ...) -> str:
        """A short-lived token of `service_account` (``kubectl create token``); a secret: never print or store it."""
        ...

    def get_raw(self, path: str, timeout_s: float = ...) -> str:
        """GET `path` from the API server (``kubectl get --raw``), e.g. a Service through its proxy.

        Raises:
            RawGetError: the API server or the proxied service answered with an error status.
        """
        ...


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no error output"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


# How the API server says that its service proxy could not open a connection to the pod behind a Service: its proxy
# transport wraps every dial error as 503 ServiceUnavailable "error trying to reach service: <dial error>"
# (k8s.io/apimachinery pkg/util/proxy/transport.go), e.g. "dial tcp 10.0.3.7:9090: i/o timeout" where the control plane
# has no route to pod IPs (private GKE, some EKS setups) or "proxy error from ... while dialing ..." through a
# Konnectivity tunnel. A kubectl that gives up first (its --request-timeout) says so in Go's words instead.
# "no endpoints available for service" is not one of these: the proxy reached no pod because none is Ready.
PROXY_UNREACHABLE_SIGNS = ("error trying to reach service", "Client.Timeout exceeded", "context deadline exceeded")


def proxy_cannot_reach(error: ClusterError) -> bool:
    """Whether a failed ``get --raw`` through the service proxy means the API server could not reach the pod (a
    port-forward, which goes through the kubelet instead, may still), rather than that the Service has no Ready pod."""
    text = f"{error.reason or ''} {error}"
    return any(sign in text for sign in PROXY_UNREACHABLE_SIGNS)


_PICKING_PORTS = threading.Lock()


def _free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PortForward:
    """A running ``kubectl port-forward`` listening on 127.0.0.1 (made by `Kubectl.open_port_forward`).

    Attributes:
        process: the kubectl process.
        local_port: the port on 127.0.0.1.
        command: the kubectl command line, as the user could type it.
    """

    def __init__(self, process: subprocess.Popen[str], local_port: int, command: str, stderr: IO[str]) -> None:
        self.process = process
        self.local_port = local_port
        self.command = command
        self._stderr = stderr

    @property
    def running(self) -> bool:
        """Whether kubectl still runs."""
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """kubectl's exit code, None while it runs."""
        return self.process.poll()

    def _stderr_text(self) -> str:
        if self._stderr.closed:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def first_error_line(self) -> str:
        """kubectl's first line on stderr (why it could not start), or ``no error output``."""
        return _first_line(self._stderr_text())

    def last_error_line(self) -> str:
        """kubectl's last line on stderr (why a running forward ended), or ``no error output``."""
        return _last_line(self._stderr_text())

    def terminate(self) -> None:
        """Ask kubectl to stop, without waiting (see `stop`)."""
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop kubectl (SIGTERM, then SIGKILL after `timeout_s`), wait for it, and close the stderr file."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


class Kubectl:
    """The `Cluster` boundary over the kubectl CLI.

    Args:
        kubeconfig: path of the kubeconfig file, passed as ``--kubeconfig`` on every call.
        context: the context to use, passed as ``--context`` on every call.
        kubectl: the kubectl executable.
        kubeconfig_display: how reports show the kubeconfig (defaults to the path); used to show a runnable
            ``<(kind get kubeconfig ...)`` instead of a temporary file that no longer exists.

    Example:
        >>> with Kubectl.for_kind_cluster("ambient-lab") as kube:  # doctest: +SKIP
        ...     kube.pods("istio-system", "app=ztunnel")
    """

    def __init__(
        self, kubeconfig: str | None, context: str, *, kubectl: str = "kubectl", kubeconfig_display: str | None = None
    ) -> None:
        self.kubeconfig = kubeconfig  # None: kubectl reads (and merges) the files $KUBECONFIG lists
        self.context = context
        self.kubectl = kubectl
        self._kubeconfig_display = kubeconfig_display or (shlex.quote(kubeconfig) if kubeconfig else None)

    @classmethod
    @contextmanager
    def for_kind_cluster(cls, name: str, *, kind: str = "kind", kubectl: str = "kubectl") -> Iterator[Kubectl]:
        """A `Kubectl` for the kind cluster `name`, through a private temporary kubeconfig.

        Args:
            name: the kind cluster's name (as ``kind get clusters`` lists it); its context is ``kind-<name>``.
            kind: the kind executable.
            kubectl: the kubectl executable.

        Yields:
            The boundary; the kubeconfig file (mode 0600) is deleted when the block ends.
        """
        with kind_kubeconfig(name, kind=kind) as path:
            yield cls(path, f"kind-{name}", kubectl=kubectl,
                      kubeconfig_display=f"<({shlex.join([kind, 'get', 'kubeconfig', '--name', name])})")

    # --- running kubectl ---------------------------------------------------------------------------------------

    def _argv(self, args: Sequence[str]) -> list[str]:
        kubeconfig = ["--kubeconfig", self.kubeconfig] if self.kubeconfig else []
        return [self.kubectl, *kubeconfig, "--context", self.context, *args]

    def command(self, args: Sequence[str]) -> str:
        """The kubectl command line for `args`, as the user could type it.

        Args:
            args: kubectl arguments after the kubeconfig and context flags.

        Returns:
            The command line as one shell string.
        """
        kubeconfig = f"--kubeconfig {self._kubeconfig_display} " if self._kubeconfig_display else ""
        return f"{shlex.quote(self.kubectl)} {kubeconfig}--context {shlex.quote(self.context)} {shlex.join(args)}"

    def _run(self, args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._argv(args), capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False
            )
        except FileNotFoundError as error:
            raise ClusterError(f"{self.kubectl} is not on PATH; install kubectl or put it on PATH.") from error
        except subprocess.TimeoutExpired as error:
            raise ClusterError(
                f"`{self.command(args)}` did not finish within {timeout_s:g} s; check that the cluster is up."
            ) from error

    def get_json(self, args: Sequence[str], timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> dict[str, Any]:
        """Run ``kubectl <args> -o json`` and decode its output.

        Args:
            args: e.g. ``["get", "pods", "-n", "default"]``.
            timeout_s: how long kubectl may take.

        Returns:
            The decoded JSON object.

        Raises:
            ClusterError: kubectl failed or printed something that is not a JSON object.
        """
        full = [*args, "-o", "json", f"--request-timeout={int(timeout_s)}s"]
        result = self._run(full, timeout_s + 5)
        if result.returncode != 0:
            reason = _first_line(result.stderr)
            raise ClusterError(f"`{self.command(full)}` failed: {reason}", reason)
        try:
            document = json.loads(result.stdout)
        except ValueError as error:
            raise ClusterError(f"`{self.command(full)}` did not print JSON ({error}).") from error
        if not isinstance(document, dict):
            raise ClusterError(f"`{self.command(full)}` printed JSON that is not an object.")
        return document

    def pods(self, namespace: str, selector: str | None = None) -> dict[str, Any]:
        """``kubectl get pods -o json`` in `namespace`, filtered by the label `selector` when given."""
        return self.get_json(["get", "pods", "-n", namespace, *(["-l", selector] if selector else [])])

    def nodes(self) -> dict[str, Any]:
        """``kubectl get nodes -o json``."""
        return self.get_json(["get", "nodes"])

    def exec(
        self,
        namespace: str,
        target: str,
        container: str,
        argv: Sequence[str],
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> ExecResult:
        """Run `argv` inside `container` of `target` with ``kubectl exec``.

        Args:
            namespace: the target's namespace.
            target: ``deploy/NAME`` or a pod name.
            container: the container to run in (always explicit: ``-c``).
            argv: the command and its arguments.
            timeout_s: how long the whole exec may take.

        Returns:
            The exit code and output; a non-zero exit is data, not an error.

        Raises:
            ClusterError: kubectl is missing or the exec did not finish in time.
        """
        args = ["exec", "-n", namespace, target, "-c", container, "--", *argv]
        result = self._run(args, timeout_s)
        return ExecResult(self.command(args), result.returncode, result.stdout, result.stderr)

    def logs(self, namespace: str, pod: str, *, since_s: int | None = None, tail: int | None = None) -> str:
        """A pod's log.

        Args:
            namespace: the pod's namespace.
            pod: the pod's name.
            since_s: only lines from the last `since_s` seconds.
            tail: only the last `tail` lines (kubectl's default with a selector is 10, so ask explicitly).

        Returns:
            The log text.

        Raises:
            ClusterError: kubectl failed.
        """
        args = ["logs", "-n", namespace, pod]
        if since_s is not None:
            args.append(f"--since={max(1, int(since_s))}s")
        if tail is not None:
            args.append(f"--tail={int(tail)}")
        result = self._run(args, DEFAULT_CALL_TIMEOUT_S)
        if result.returncode != 0:
            raise ClusterError(f"`{self.command(args)}` failed: {_first_line(result.stderr)}")
        return result.stdout

    def get_raw(self, path: str, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> str:
        """GET `path` from the API server with ``kubectl get --raw``.

        The API server's service proxy (``/api/v1/namespaces/NS/services/NAME:PORT/proxy/...``) reaches a ClusterIP
        Service from outside the cluster without a port-forward; kubectl exits non-zero on any error status.

        Args:
            path: the absolute request URI, query string included (already URL-encoded).
            timeout_s: how long the request may take.

        Returns:
            The response body.

        Raises:
            RawGetError: kubectl failed; ``reason`` holds its first error line (e.g. ``Error from server
                (ServiceUnavailable): ...`` while the service has no ready endpoint).
            ClusterError: kubectl is missing or did not finish in time.
        """
        args = ["get", "--raw", path]
        full = [*args, f"--request-timeout={int(timeout_s)}s"]
        result = self._run(full, timeout_s + 5)
        if result.returncode != 0:
            reason = _first_line(result.stderr)
            raise RawGetError(f"`{self.command(args)}` failed: {reason}", reason)
        return result.stdout

    def create_token(self, namespace: str, service_account: str, duration_s: int = TOKEN_DURATION_S) -> str:
        """A short-lived token of `service_account` from the TokenRequest API (``kubectl create token``).

        The token is a secret: it is returned to the caller only, never logged, and errors quote kubectl's stderr,
        never its stdout.

        Raises:
            ClusterError: kubectl failed (e.g. no such service account, or no right to create its tokens).
        """
        args = ["create", "token", service_account, "-n", namespace, f"--duration={int(duration_s)}s"]
        result = self._run(args, DEFAULT_CALL_TIMEOUT_S)
        if result.returncode != 0 or not result.stdout.strip():
            reason = _first_line(result.stderr)
            raise ClusterError(f"`{self.command(args)}` failed: {reason}", reason)
        return result.stdout.strip()

    # --- port-forward ------------------------------------------------------------------------------------------

    def port_forward_args(self, namespace: str, target: str, local_port: int, remote_port: int) -> list[str]:
        """kubectl arguments of a port-forward that listens on 127.0.0.1 only.

        Args:
            namespace: the target's namespace.
            target: a pod name, or ``KIND/NAME`` such as ``svc/kiali`` (kubectl then picks one ready pod behind it).
            local_port: the port on 127.0.0.1.
            remote_port: the port of the pod or Service.
        """
        resource = target if "/" in target else f"pod/{target}"
        return ["port-forward", "-n", namespace, resource, f"{local_port}:{remote_port}", "--address", "127.0.0.1"]

    def open_port_forward(
        self,
        namespace: str,
        target: str,
        remote_port: int,
        *,
        local_port: int | None = None,
        ready_timeout_s: float = PORT_FORWARD_READY_TIMEOUT_S,
        new_session: bool = False,
    ) -> PortForward:
        """Start ``kubectl port-forward`` on 127.0.0.1 and wait until the local port accepts connections.

        The caller owns the returned forward and must `PortForward.stop` it; `port_forward` does that for a block.

        Args:
            namespace: the target's namespace.
            target: a pod name, or ``svc/NAME`` (see `port_forward_args`).
            remote_port: the port of the pod or Service.
            local_port: the port on 127.0.0.1; None picks a free one.
            ready_timeout_s: how long to wait for the local port to accept connections.
            new_session: start kubectl in a session of its own, so a Ctrl-C in the terminal reaches only this
                process, which then stops kubectl itself (a long-running forward, such as the dashboard's).

        Returns:
            The running forward.

        Raises:
            ClusterError: kubectl is missing, exited, or the port did not accept connections in time (kubectl is
                stopped first).
        """
        # Checks run side by side: from picking a free port until kubectl listens on it, no other forward of this
        # process may pick the same one (the loser's kubectl would exit and the winner's listener answer instead).
        with _PICKING_PORTS if local_port is None else nullcontext():
            return self._start_forward(namespace, target, remote_port, local_port or _free_local_port(),
                                       ready_timeout_s, new_session)

    def _start_forward(self, namespace: str, target: str, remote_port: int, local: int, ready_timeout_s: float,
                       new_session: bool) -> PortForward:
        args = self.port_forward_args(namespace, target, local, remote_port)
        # stderr goes to a file, not a pipe nobody reads while the forward runs (a full pipe would stall kubectl).
        # Not a `with`: the file lives as long as the forward, which closes it in `PortForward.stop`.
        stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            process = subprocess.Popen(self._argv(args), stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                       start_new_session=new_session)
        except FileNotFoundError as error:
            stderr.close()
            raise ClusterError(f"{self.kubectl} is not on PATH; install kubectl or put it on PATH.") from error
        forward = PortForward(process, local, self.command(args), stderr)
        try:
            self._wait_until_accepting(forward, ready_timeout_s)
        except BaseException:
            forward.stop()
            raise
        return forward

    @contextmanager
    def port_forward(
        self, namespace: str, pod: str, remote_port: int, ready_timeout_s: float = PORT_FORWARD_READY_TIMEOUT_S
    ) -> Iterator[int]:
        """Forward a free port on 127.0.0.1 to `remote_port` of `pod` for the duration of the block.

        Args:
            namespace: the pod's namespace.
            pod: the pod's name (or ``svc/NAME``).
            remote_port: the port inside the pod (it may listen on the pod's localhost only, as ztunnel's admin
                port does: a port-forward reaches it, the API server's pod proxy does not).
            ready_timeout_s: how long to wait for the local port to accept connections.

        Yields:
            The local port.

        Raises:
            ClusterError: kubectl exited or the port did not accept connections in time.
        """
        forward = self.open_port_forward(namespace, pod, remote_port, ready_timeout_s=ready_timeout_s)
        try:
            yield forward.local_port
        finally:
            # Always stop kubectl, whatever happened in the block.
            forward.stop()

    @staticmethod
    def _wait_until_accepting(forward: PortForward, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if not forward.running:
                raise ClusterError(f"`{forward.command}` exited early: {forward.first_error_line()}")
            try:
                with socket.create_connection(("127.0.0.1", forward.local_port), timeout=0.5):
                    pass
                if forward.running:  # the listener that answered is this kubectl's, not one that took the port
                    return
                raise ClusterError(f"`{forward.command}` exited early: {forward.first_error_line()}")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"`{forward.command}` did not accept connections within {timeout_s:g} s.")
            time.sleep(0.1)

    def http_get(
        self, namespace: str, pod: str, port: int, path: str, timeout_s: float = DEFAULT_CALL_TIMEOUT_S, *,
        form: Mapping[str, str] | None = None, cookies: Sequence[str] = (),
    ) -> HttpResponse:
        """GET `path` on `port` of `pod` through a port-forward on 127.0.0.1, then stop the forward.

        Args:
            namespace: the pod's namespace.
            pod: the pod's name, or ``svc/NAME`` (kubectl then forwards to one Ready pod behind the Service).
            port: the port inside the pod (of the Service, for ``svc/NAME``).
            path: the request path, starting with ``/``.
            timeout_s: how long the request may take.
            form: POST these fields, form-encoded, instead of a GET (a login); the reports show the method and URL
                only, never the fields.
            cookies: ``name=value`` pairs to send as the Cookie header (a session); never shown either.

        Returns:
            The status, body and the cookies the response set; an HTTP error status is data, not an error.

        Raises:
            ClusterError: the forward or the connection failed.
        """
        # Loopback must never go through an HTTP proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        method = "GET" if data is None else "POST"
        failure = ""
        for _ in range(HTTP_GET_ATTEMPTS):
            with self.port_forward(namespace, pod, port) as local_port:
                url = f"http://127.0.0.1:{local_port}{path}"
                commands = (self.command(self.port_forward_args(namespace, pod, local_port, port)), f"{method} {url}")
                request = urllib.request.Request(url, data=data, method=method)
                if cookies:
                    request.add_header("Cookie", "; ".join(cookies))
                try:
                    with opener.open(request, timeout=timeout_s) as response:
                        return HttpResponse(commands, response.status, response.read().decode("utf-8", "replace"),
                                            _set_cookies(response.headers))
                except urllib.error.HTTPError as error:
                    try:  # the error's body can be cut off too: then it is one more forward, like any drop
                        body = error.read().decode("utf-8", "replace")
                    except (OSError, http.client.HTTPException) as cut:
                        failure = f"{type(cut).__name__}: {cut}" if str(cut) else type(cut).__name__
                        continue
                    return HttpResponse(commands, error.code, body, _set_cookies(error.headers))
                # A forward that drops mid-response shows up as a reset, a cut-off body (IncompleteRead) or no
                # status line at all (BadStatusLine, RemoteDisconnected): all worth one more forward.
                except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                    failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise ClusterError(
            f"{method} {path} on {namespace}/{pod}:{port} through a port-forward failed {HTTP_GET_ATTEMPTS} times "
            f"(last: {failure}); check that the pod is running and ready, then run the verification again."
        )


def _set_cookies(headers: Any) -> tuple[str, ...]:
    """The ``name=value`` pairs of every Set-Cookie header (attributes such as Path dropped)."""
    pairs: list[str] = []
    for header in (headers.get_all("Set-Cookie") if headers is not None else None) or []:
        jar = http.cookies.SimpleCookie()
        jar.load(header)
        pairs += [f"{name}={morsel.value}" for name, morsel in jar.items()]
    return tuple(pairs)


@contextmanager
def kind_kubeconfig(name: str, *, kind: str = "kind") -> Iterator[str]:
    """Write the kubeconfig of kind cluster `name` to a private temporary file for the duration of the block.

    The file is created with mode 0600 and deleted when the block ends (and, as a fallback, when the interpreter
    exits). Its content is never printed or logged; errors quote only kind's stderr.

    Args:
        name: the kind cluster's name.
        kind: the kind executable.

    Yields:
        The file's path.

    Raises:
        KindClusterMissing: kind has no such cluster.
        ClusterError: kind is missing or did not answer.
    """
    try:
        result = subprocess.run(
            [kind, "get", "kubeconfig", "--name", name], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as error:
        raise ClusterError(
            f"{kind} is not on PATH; install kind, or pass --kubeconfig and --context instead."
        ) from error
    except subprocess.TimeoutExpired as error:
        raise ClusterError(
            f"`{kind} get kubeconfig --name {name}` did not finish within 60 s; check that Docker is running."
        ) from error
    if result.returncode != 0 or not result.stdout.strip():
        reason = _first_line(result.stderr)
        raise KindClusterMissing(
            f"kind has no kubeconfig for a cluster named {name!r} ({reason}); pass a name that `kind get clusters` "
            "lists.",
            reason,
        )
    # mkstemp creates it 0600. The name is the one every lab kubeconfig has: the e2e leftover check looks for it.
    descriptor, path = tempfile.mkstemp(prefix="lab-kubeconfig-", suffix=".kubeconfig")

    def remove() -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    atexit.register(remove)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(result.stdout)
        yield path
    finally:
        remove()
        atexit.unregister(remove)
