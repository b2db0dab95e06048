"""`python -m lab.dashboard`: the sentences for a lab that is not up, addons that are off, a busy port and a dying
port-forward; a run that stops cleanly on Ctrl-C. First with the cluster boundary replaced, then end to end with
stand-in `kind` and `kubectl` executables whose port-forward serves a tiny HTTP listener."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab import dashboard
from lab.cli import stack_config
from verify.cluster import ClusterError, KindClusterMissing, Kubectl, RawGetError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    (root / "Pulumi.yaml").write_text("name: istio-ambient-lab\nruntime: python\nstackConfigDir: stacks\n")
    (root / "stacks" / "Pulumi.l7.yaml").write_text("config:\n  istio-ambient-lab:meshMode: l7\n")
    (root / "stacks" / "Pulumi.bare.yaml").write_text("config:\n  istio-ambient-lab:observability: false\n")
    (root / "stacks" / "Pulumi.gke.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: gke_lab\n"
        "  istio-ambient-lab:kubeconfigPath: /home/me/.kube/gke\n"
    )
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- The boundary replaced --------------------------------------------------------------------------------------------


@dataclass
class FakeForward:
    command: str
    polls_left: int | None = None  # None: runs until stopped; N: dies after N looks
    code: int | None = None
    terminated: bool = False
    stopped: bool = False
    last_line: str = "E1002 09:14:03.120455   41822 portforward.go:413] lost connection to pod"

    @property
    def running(self) -> bool:
        if self.stopped or self.code is not None:
            return False
        if self.polls_left is not None:
            self.polls_left -= 1
            if self.polls_left < 0:
                self.code = 1
                return False
        return True

    @property
    def exit_code(self) -> int | None:
        return self.code

    def last_error_line(self) -> str:
        return self.last_line

    def terminate(self) -> None:
        self.terminated = True

    def stop(self, timeout_s: float = 5.0) -> None:
        assert self.terminated, "every forward is signalled before any is waited for"
        self.stopped = True


@dataclass
class FakeKube:
    nodes_error: Exception | None = None
    missing: tuple[str, ...] = ()
    forward_errors: dict[str, Exception] = field(default_factory=dict)
    die_after: int | None = None
    forwards: list[tuple[tuple, dict, FakeForward]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def command(self, args):
        return "kubectl --kubeconfig /home/me/.kube/gke --context gke_lab " + " ".join(args)

    def nodes(self):
        if self.nodes_error:
            raise self.nodes_error
        return {"items": [{"metadata": {"name": "ambient-l7-control-plane"}}]}

    def get_raw(self, path, timeout_s=30.0):
        self.raw.append(path)
        name = path.rsplit("/", 1)[-1]
        if name in self.missing:
            reason = f'Error from server (NotFound): services "{name}" not found'
            raise RawGetError(f"`kubectl get --raw {path}` failed: {reason}", reason)
        return json.dumps({"kind": "Service", "metadata": {"name": name}})

    def open_port_forward(self, namespace, target, remote_port, **options):
        if target in self.forward_errors:
            raise self.forward_errors[target]
        forward = FakeForward(f"kubectl port-forward -n {namespace} {target} {options['local_port']}:{remote_port} "
                              "--address 127.0.0.1", polls_left=self.die_after)
        self.forwards.append(((namespace, target, remote_port), options, forward))
        return forward


class Interrupt:
    """A sleep that presses Ctrl-C after `after` pauses."""

    def __init__(self, after: int = 0):
        self.after, self.calls = after, 0

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt


def run(project, argv, kube=None, *, open_cluster=None, port_is_free=lambda port: True, sleep=None, browser=None):
    out, err = io.StringIO(), io.StringIO()
    opened = []

    def default_open(config):
        opened.append(config)
        return nullcontext(kube)

    code = dashboard.main(argv, root=project, open_cluster=open_cluster or default_open, port_is_free=port_is_free,
                          open_browser=browser or (lambda url: True), sleep=sleep or Interrupt(), stdout=out,
                          stderr=err)
    return code, out.getvalue(), err.getvalue(), opened


def test_a_kind_cluster_that_does_not_exist_is_one_sentence(project):
    def missing(config):
        raise KindClusterMissing("kind has no kubeconfig for a cluster named 'ambient-l7' (...); pass a name ...",
                                 "ERROR: could not locate any control plane nodes for cluster named 'ambient-l7'")

    code, out, err, _ = run(project, ["--stack", "l7"], open_cluster=missing)
    assert (code, out) == (1, "")
    assert err == "The lab of stack l7 is not up (kind has no cluster named ambient-l7): run `./lab.sh up l7` first.\n"


def test_a_cluster_that_does_not_answer_is_one_sentence(project):
    reason = "The connection to the server 127.0.0.1:40123 was refused - did you specify the right host or port?"
    kube = FakeKube(nodes_error=ClusterError(f"`kubectl get nodes -o json` failed: {reason}", reason))
    code, _, err, _ = run(project, ["--stack", "l7"], kube)
    assert code == 1
    assert err == (f"The lab of stack l7 is not up (its cluster does not answer: {reason}): run `./lab.sh up l7` "
                   "first.\n")
    assert kube.forwards == []


def test_without_kind_the_lab_is_not_up(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err, _ = run(project, ["--stack", "l7"], open_cluster=dashboard.open_cluster)
    assert code == 1 and err == "The lab of stack l7 is not up (kind is not installed): run `./lab.sh up l7` first.\n"


def test_addons_switched_off_name_the_config_key(project):
    kube = FakeKube()
    code, _, err, opened = run(project, ["--stack", "bare"], kube)
    assert code == 1 and opened == []  # nothing to reach for
    assert err == (
        "Kiali is not installed in stack bare: its config has istio-ambient-lab:observability false; turn it on with "
        "`./lab.sh pulumi config set istio-ambient-lab:observability true --stack bare`, then run `./lab.sh up bare`.\n"
    )


def test_a_missing_kiali_service_says_to_bring_the_lab_up(project):
    kube = FakeKube(missing=("kiali",))
    code, _, err, _ = run(project, ["--stack", "l7"], kube)
    assert code == 1
    assert err == ("Kiali is not installed in the cluster of stack l7 (no Service kiali in istio-system): run "
                   "`./lab.sh up l7` to install it.\n")
    assert kube.raw == ["/api/v1/namespaces/istio-system/services/kiali"] and kube.forwards == []


def test_a_busy_port_names_the_port_and_the_flag(project):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not dashboard.port_is_free(port)
        kube = FakeKube()
        code, out, err, _ = run(project, ["--stack", "l7", "--kiali-port", str(port)], kube,
                                port_is_free=dashboard.port_is_free)
    assert (code, out) == (1, "")
    assert err == (f"Port {port} on 127.0.0.1 is already in use, so Kiali cannot be forwarded there: stop what holds "
                   "it (another dashboard?) or pick another port with `./lab.sh dashboard l7 "
                   "--kiali-port PORT`.\n")
    assert kube.forwards == []
    assert dashboard.port_is_free(port)  # released again


def test_the_prometheus_port_is_checked_too(project):
    code, _, err, _ = run(project, ["--stack", "l7", "--prometheus"], FakeKube(),
                          port_is_free=lambda port: port != 9090)
    assert code == 1 and "Port 9090 on 127.0.0.1 is already in use, so Prometheus" in err
    assert err.rstrip().endswith("--prometheus-port PORT`.")


def test_kiali_opens_on_loopback_and_ctrl_c_stops_it(project):
    kube = FakeKube()
    sleep = Interrupt(after=3)
    code, out, err, opened = run(project, ["--stack", "l7"], kube, sleep=sleep)
    assert (code, err) == (0, "")
    assert opened[0].cluster_name == "ambient-l7"
    lines = out.splitlines()
    assert lines[0] == "Kiali: http://127.0.0.1:20001/kiali"
    assert lines[1] == ("  (Kiali through: kubectl port-forward -n istio-system svc/kiali 20001:20001 --address "
                        "127.0.0.1)")
    assert lines[2:] == ["Press Ctrl-C to stop.", "Dashboard stopped."]
    (args, options, forward), = kube.forwards
    assert args == ("istio-system", "svc/kiali", 20001)
    assert options["local_port"] == 20001 and options["new_session"] is True
    assert forward.stopped and sleep.calls == 4


def test_on_an_existing_cluster_it_says_how_to_sign_in_to_kiali(project):
    code, out, err, opened = run(project, ["--stack", "gke"], FakeKube())
    assert (code, err) == (0, ""), err
    assert opened[0].target == "existing"
    lines = out.splitlines()
    assert lines[2] == ("  (Kiali asks for a token: paste the one `kubectl --kubeconfig /home/me/.kube/gke --context "
                        "gke_lab create token kiali -n istio-system` prints; it expires, run it again for a new one)")
    assert lines[3:] == ["Press Ctrl-C to stop.", "Dashboard stopped."]


def test_the_login_command_names_the_labs_context_and_kubeconfig(project):
    with dashboard.open_cluster(stack_config(project, "gke")) as kube:
        assert dashboard.kiali_login_hint(kube) == (
            "  (Kiali asks for a token: paste the one `kubectl --kubeconfig /home/me/.kube/gke --context gke_lab "
            "create token kiali -n istio-system` prints; it expires, run it again for a new one)")


def test_prometheus_too_on_chosen_ports_and_the_browser(project):
    kube = FakeKube()
    urls = []
    code, out, _, _ = run(project, ["--stack", "l7", "--prometheus", "--kiali-port", "21001", "--prometheus-port",
                                    "19090", "--open"], kube, browser=lambda url: urls.append(url) or True)
    assert code == 0
    assert out.splitlines()[:2] == ["Kiali: http://127.0.0.1:21001/kiali", "Prometheus: http://127.0.0.1:19090"]
    assert urls == ["http://127.0.0.1:21001/kiali"]
    assert [(args, options["local_port"]) for args, options, _ in kube.forwards] == [
        (("istio-system", "svc/kiali", 20001), 21001), (("istio-system", "svc/prometheus", 9090), 19090)]
    assert all(forward.stopped for _, _, forward in kube.forwards)


def test_no_browser_is_a_note_not_an_error(project):
    code, out, _, _ = run(project, ["--stack", "l7", "--open"], FakeKube(), browser=lambda url: False)
    assert code == 0 and "(no web browser to open: open http://127.0.0.1:20001/kiali yourself)" in out


def test_a_port_forward_that_dies_says_kubectls_last_line(project):
    kube = FakeKube(die_after=2)
    sleep = Interrupt(after=100)
    code, out, err, _ = run(project, ["--stack", "l7"], kube, sleep=sleep)
    assert code == 1 and "Kiali: http://127.0.0.1:20001/kiali" in out
    assert err == ("The Kiali port-forward stopped (kubectl exited with 1: E1002 09:14:03.120455   41822 "
                   "portforward.go:413] lost connection to pod): run `./lab.sh dashboard l7` again.\n")
    assert kube.forwards[0][2].stopped and sleep.calls == 2


def test_a_port_forward_that_cannot_start_stops_the_others(project):
    kube = FakeKube(forward_errors={"svc/prometheus": ClusterError(
        "`kubectl port-forward -n istio-system svc/prometheus 9090:9090 --address 127.0.0.1` exited early: error: "
        "unable to forward port because pod is not running. Current status=Pending")})
    code, out, err, _ = run(project, ["--stack", "l7", "--prometheus"], kube)
    assert code == 1 and out == ""
    assert err.startswith("Could not open Prometheus on 127.0.0.1:9090 (`kubectl port-forward")
    assert err.endswith("Current status=Pending): check that its pod in istio-system is Ready, then run "
                        "`./lab.sh dashboard l7` again.\n")
    assert kube.forwards[0][2].stopped  # Kiali's, opened before


def test_same_port_twice_is_a_usage_error(project):
    code, _, err, opened = run(project, ["--stack", "l7", "--prometheus", "--kiali-port", "9090"], FakeKube())
    assert code == 2 and opened == []
    assert err == ("python -m lab.dashboard: --kiali-port and --prometheus-port are both 9090: give them different "
                   "ports.\n")


@pytest.mark.parametrize("argv", [["--kiali-port", "0"], ["--kiali-port", "http"], ["--nope"]])
def test_bad_arguments_exit_2(project, argv):
    code, _, err, _ = run(project, argv, FakeKube())
    assert code == 2 and "usage: python -m lab.dashboard" in err


def test_a_bad_stack_value_is_the_config_sentence(project):
    (project / "stacks" / "Pulumi.l7.yaml").write_text("config:\n  istio-ambient-lab:observability: maybe\n")
    code, _, err, _ = run(project, ["--stack", "l7"], FakeKube())
    assert code == 1 and err.startswith("istio-ambient-lab:observability is 'maybe', but it must be true or false")


def test_an_existing_cluster_is_reached_with_its_kubeconfig_and_context(project):
    with dashboard.open_cluster(stack_config(project, "gke")) as kube:
        assert isinstance(kube, Kubectl)
        assert (kube.kubeconfig, kube.context) == ("/home/me/.kube/gke", "gke_lab")


def test_several_kubeconfig_files_are_left_to_kubectl_to_merge(project, monkeypatch):
    (project / "stacks" / "Pulumi.eks.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: eks_lab\n")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(["/a/config", "/b/config"]))
    with dashboard.open_cluster(stack_config(project, "eks")) as kube:
        assert kube.kubeconfig is None and kube.context == "eks_lab"
        assert kube._argv(["get", "pods"]) == ["kubectl", "--context", "eks_lab", "get", "pods"]


def test_ctrl_c_before_the_forward_opens_still_exits_0(project):
    class Slow(FakeKube):
        def nodes(self):
            raise KeyboardInterrupt

    code, out, _, _ = run(project, ["--stack", "l7"], Slow())
    assert code == 0 and out == "Dashboard stopped.\n"


def test_help_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "lab.dashboard", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "--kiali-port" in result.stdout and "--prometheus" in result.stdout


# --- End to end: real Kubectl, stand-in kind and kubectl --------------------------------------------------------------

FAKE_KIND = f"""#!{sys.executable}
import sys
assert sys.argv[1:] == ["get", "kubeconfig", "--name", "ambient-l7"], sys.argv
print("apiVersion: v1\\nkind: Config\\nusers:\\n- name: kind-ambient-l7\\n  user:\\n    client-key-data: SECRET\\n")
"""

FAKE_KUBECTL = f"""#!{sys.executable}
import http.server, json, os, sys, threading, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
assert args[0] == "--kubeconfig" and args[2] == "--context" and args[3] == "kind-ambient-l7", args
rest = args[4:]
if rest[:2] == ["get", "nodes"]:
    print(json.dumps({{"items": [{{"metadata": {{"name": "ambient-l7-control-plane"}}}}]}}))
elif rest[:2] == ["get", "--raw"]:
    print(json.dumps({{"kind": "Service", "metadata": {{"name": rest[2].rsplit("/", 1)[-1]}}}}))
elif rest[0] == "port-forward":
    local = int(rest[4].split(":")[0])
    with open(os.environ["FAKE_PID"], "w") as handle:
        handle.write(str(os.getpid()))
    if os.environ.get("FAKE_PF_DIE_AFTER"):
        def die():
            time.sleep(float(os.environ["FAKE_PF_DIE_AFTER"]))
            sys.stderr.write("E1002 09:14:03.120455 portforward.go:413] lost connection to pod\\n")
            sys.stderr.flush()
            os._exit(1)
        threading.Thread(target=die, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<title>Kiali</title>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer((rest[rest.index("--address") + 1], local), Handler).serve_forever()
else:
    sys.exit("unexpected: " + " ".join(rest))
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    folder = tmp_path / "tools"
    folder.mkdir()
    for name, text in (("kind", FAKE_KIND), ("kubectl", FAKE_KUBECTL)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "kubectl.log"))
    monkeypatch.setenv("FAKE_PID", str(tmp_path / "pf.pid"))
    return tmp_path


def logged(tmp_path):
    return [json.loads(line) for line in (tmp_path / "kubectl.log").read_text().splitlines()]


def test_end_to_end_ctrl_c_terminates_kubectl_and_removes_the_kubeconfig(project, tools):
    port = free_port()
    seen = {}

    def sleep(seconds):
        # The dashboard is up: Kiali answers on loopback through the forward, the private kubeconfig exists.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/kiali", timeout=5) as response:
            seen["status"], seen["body"] = response.status, response.read()
        kubeconfig = logged(tools)[0][1]
        seen["kubeconfig"], seen["mode"] = kubeconfig, stat.S_IMODE(os.stat(kubeconfig).st_mode)
        raise KeyboardInterrupt

    out, err = io.StringIO(), io.StringIO()
    code = dashboard.main(["--stack", "l7", "--kiali-port", str(port)], root=project, sleep=sleep, stdout=out,
                          stderr=err)
    assert (code, err.getvalue()) == (0, "")
    assert out.getvalue().splitlines()[0] == f"Kiali: http://127.0.0.1:{port}/kiali"
    assert "--kubeconfig <(" in out.getvalue() and "SECRET" not in out.getvalue()
    assert (seen["status"], seen["body"], seen["mode"]) == (200, b"<title>Kiali</title>", 0o600)
    assert not os.path.exists(seen["kubeconfig"])
    pid = int((tools / "pf.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    calls = logged(tools)
    assert calls[-1][4:] == ["port-forward", "-n", "istio-system", "svc/kiali", f"{port}:20001", "--address",
                             "127.0.0.1"]
    assert ["get", "--raw", "/api/v1/namespaces/istio-system/services/kiali", "--request-timeout=30s"] in [
        call[4:] for call in calls]


def test_end_to_end_a_dying_forward_is_reported_and_cleaned_up(project, tools, monkeypatch):
    monkeypatch.setenv("FAKE_PF_DIE_AFTER", "0.3")
    out, err = io.StringIO(), io.StringIO()
    code = dashboard.main(["--stack", "l7", "--kiali-port", str(free_port())], root=project, stdout=out, stderr=err,
                          sleep=lambda seconds: time.sleep(0.02))
    assert code == 1
    assert err.getvalue() == ("The Kiali port-forward stopped (kubectl exited with 1: E1002 09:14:03.120455 "
                              "portforward.go:413] lost connection to pod): run `./lab.sh dashboard l7` again.\n")
    assert not os.path.exists(logged(tools)[0][1])


def test_end_to_end_a_real_ctrl_c_from_the_terminal(project, tools):
    """The terminal sends SIGINT to the whole foreground process group; kubectl runs in a session of its own, so the
    dashboard stops it itself, removes the kubeconfig and exits 0."""
    port = free_port()
    script = ("import sys; from pathlib import Path; from lab import dashboard; "
              f"sys.exit(dashboard.main(['--stack', 'l7', '--kiali-port', '{port}'], root=Path({str(project)!r})))")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        printed = []
        for line in process.stdout:
            printed.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        assert printed and printed[-1] == "Press Ctrl-C to stop.\n", "".join(printed) + process.stderr.read()
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, err) == (0, "")
    assert out == "Dashboard stopped.\n"
    with pytest.raises(ProcessLookupError):
        os.kill(int((tools / "pf.pid").read_text()), 0)
    assert not os.path.exists(logged(tools)[0][1])
