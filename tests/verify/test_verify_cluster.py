"""The kubectl boundary, against stand-in `kubectl` and `kind` executables (Python scripts made per test)."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from verify.cluster import (
    ClusterError,
    KindClusterMissing,
    Kubectl,
    RawGetError,
    kind_kubeconfig,
    proxy_cannot_reach,
)

FAKE_KUBECTL = f"""#!{sys.executable}
import http.server, json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
assert args[0] == "--kubeconfig" and args[2] == "--context", args
verb = args[4]
if verb == "get" and args[5] == "--raw":
    if os.environ.get("FAKE_RAW_FAIL"):
        sys.stderr.write(os.environ["FAKE_RAW_FAIL"] + "\\n")
        sys.exit(1)
    print(json.dumps({{"path": args[6]}}))
elif verb == "get":
    if os.environ.get("FAKE_GET_FAIL"):
        sys.stderr.write('Error from server (Forbidden): pods is forbidden\\nmore detail\\n')
        sys.exit(1)
    print(os.environ.get("FAKE_GET_OUTPUT", json.dumps({{"items": [{{"metadata": {{"name": "p"}}}}]}})))
elif verb == "exec":
    sys.stdout.write("partial output\\n")
    sys.stderr.write("curl: (56) Recv failure: Connection reset by peer\\ncommand terminated with exit code 56\\n")
    sys.exit(56)
elif verb == "logs":
    print("line one\\nline two")
elif verb == "create" and args[5] == "token":
    if os.environ.get("FAKE_TOKEN_FAIL"):
        sys.stderr.write('error: failed to create token: serviceaccounts "kiali" not found\\n')
        sys.exit(1)
    print("eyJhbGciOiJSUzI1NiJ9.fake-token-body.fake-signature")
elif verb == "port-forward":
    if os.environ.get("FAKE_PF_FAIL"):
        sys.stderr.write("error: unable to forward port because pod is not running. Current status=Pending\\n")
        sys.exit(1)
    local = int(args[args.index("--address") - 1].split(":")[0])
    with open(os.environ["FAKE_PID"], "w") as handle:
        handle.write(str(os.getpid()))
    if os.environ.get("FAKE_PF_DIE_AFTER"):
        import threading, time
        def die():
            time.sleep(float(os.environ["FAKE_PF_DIE_AFTER"]))
            sys.stderr.write("Forwarding from 127.0.0.1:%d -> 20001\\n" % local)
            sys.stderr.write("E1002 09:14:03.120455 portforward.go:413] lost connection to pod\\n")
            sys.stderr.flush()
            os._exit(1)
        threading.Thread(target=die, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"path": self.path, "certificates": [], "cookie": self.headers.get("Cookie")}}).encode()
            self.send_response(200 if self.path == "/config_dump" else 404)
            # FAKE_PF_CUT: the forward drops mid-body, so the client reads fewer bytes than announced.
            self.send_header("Content-Length", str(len(body) * (2 if os.environ.get("FAKE_PF_CUT") else 1)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            # A login: the form's token answered with a session cookie, as Kiali's /api/authenticate does.
            form = self.rfile.read(int(self.headers["Content-Length"])).decode()
            self.send_response(200)
            self.send_header("Set-Cookie", "kiali-token-Kubernetes=sealed-session; Path=/kiali; HttpOnly")
            self.send_header("Set-Cookie", "kiali-token-chunks-Kubernetes=1; Path=/kiali; HttpOnly")
            body = json.dumps({{"path": self.path, "form": form, "cookie": self.headers.get("Cookie")}}).encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer((args[args.index("--address") + 1], local), Handler).serve_forever()
"""

FAKE_KIND = f"""#!{sys.executable}
import os, sys
if os.environ.get("FAKE_KIND_FAIL"):
    sys.stderr.write("ERROR: could not locate any control plane nodes for cluster named 'nope'\\n")
    sys.exit(1)
assert sys.argv[1:4] == ["get", "kubeconfig", "--name"], sys.argv
print("apiVersion: v1\\nkind: Config\\nusers:\\n- name: kind-lab\\n  user:\\n    client-key-data: SECRET-KEY\\n")
"""


def executable(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def kube(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FAKE_PID", str(tmp_path / "pf.pid"))
    kubectl = executable(tmp_path / "kubectl", FAKE_KUBECTL)
    return Kubectl(str(tmp_path / "kubeconfig"), "kind-lab", kubectl=kubectl)


def calls(tmp_path):
    return [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]


def test_every_call_names_kubeconfig_and_context(kube, tmp_path):
    kube.pods("istio-system", "app=ztunnel")
    kube.logs("istio-system", "ztunnel-1", since_s=42, tail=500)
    kube.exec("default", "deploy/sleep", "sleep", ["curl", "-sS", "http://productpage:9080/"])
    made = calls(tmp_path)
    assert all(call[:4] == ["--kubeconfig", str(tmp_path / "kubeconfig"), "--context", "kind-lab"] for call in made)
    assert made[0][4:] == ["get", "pods", "-n", "istio-system", "-l", "app=ztunnel", "-o", "json",
                           "--request-timeout=30s"]
    assert made[1][4:] == ["logs", "-n", "istio-system", "ztunnel-1", "--since=42s", "--tail=500"]
    assert made[2][4:] == ["exec", "-n", "default", "deploy/sleep", "-c", "sleep", "--", "curl", "-sS",
                           "http://productpage:9080/"]


def test_exec_returns_the_remote_exit_code_and_output(kube):
    result = kube.exec("default", "deploy/notsleep", "notsleep", ["curl", "http://productpage:9080/"])
    assert result.exit_code == 56
    assert result.stdout == "partial output\n"
    assert "command terminated with exit code 56" in result.stderr
    assert "--context kind-lab exec -n default deploy/notsleep -c notsleep -- curl" in result.command


def test_get_json_failure_is_one_clear_error(kube, monkeypatch):
    monkeypatch.setenv("FAKE_GET_FAIL", "1")
    with pytest.raises(ClusterError) as raised:
        kube.nodes()
    assert str(raised.value).endswith("failed: Error from server (Forbidden): pods is forbidden")


def test_get_json_that_is_not_json(kube, monkeypatch):
    monkeypatch.setenv("FAKE_GET_OUTPUT", "<html>")
    with pytest.raises(ClusterError, match="did not print JSON"):
        kube.nodes()


def test_missing_kubectl_says_what_to_do(tmp_path):
    with pytest.raises(ClusterError, match="is not on PATH; install kubectl"):
        Kubectl("cfg", "ctx", kubectl=str(tmp_path / "absent")).nodes()


def test_http_get_through_a_port_forward_on_loopback_and_the_forward_is_stopped(kube, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # must be ignored for loopback
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    response = kube.http_get("istio-system", "ztunnel-1", 15000, "/config_dump")
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/config_dump"
    forward = next(call for call in calls(tmp_path) if "port-forward" in call)
    assert forward[4:7] == ["port-forward", "-n", "istio-system"] and forward[7] == "pod/ztunnel-1"
    assert forward[8].endswith(":15000") and forward[9:] == ["--address", "127.0.0.1"]
    assert "port-forward" in response.commands[0] and response.commands[1].startswith("GET http://127.0.0.1:")
    pid = int((tmp_path / "pf.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_port_forward_is_killed_even_when_the_block_fails(kube, tmp_path):
    with pytest.raises(RuntimeError), kube.port_forward("istio-system", "ztunnel-1", 15000):
        raise RuntimeError("boom")
    pid = int((tmp_path / "pf.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_port_forward_that_exits_early_reports_kubectls_error(kube, monkeypatch):
    monkeypatch.setenv("FAKE_PF_FAIL", "1")
    with pytest.raises(ClusterError) as raised:
        kube.http_get("istio-system", "ztunnel-1", 15000, "/config_dump")
    assert "exited early: error: unable to forward port because pod is not running" in str(raised.value)


def test_a_forward_that_drops_mid_response_is_retried_then_one_sentence(kube, tmp_path, monkeypatch):
    """Before, http.client.IncompleteRead escaped as an exception no check expected: "the check crashed"."""
    monkeypatch.setenv("FAKE_PF_CUT", "1")
    with pytest.raises(ClusterError) as raised:
        kube.http_get("istio-system", "ztunnel-1", 15000, "/config_dump", timeout_s=5)
    assert str(raised.value).startswith(
        "GET /config_dump on istio-system/ztunnel-1:15000 through a port-forward failed 3 times (last: IncompleteRead")
    assert str(raised.value).endswith("check that the pod is running and ready, then run the verification again.")
    assert sum("port-forward" in call for call in calls(tmp_path)) == 3


def test_http_error_status_is_data(kube):
    assert kube.http_get("istio-system", "ztunnel-1", 15000, "/nope").status == 404


def test_kind_kubeconfig_is_private_and_removed(tmp_path):
    kind = executable(tmp_path / "kind", FAKE_KIND)
    with kind_kubeconfig("lab", kind=kind) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "client-key-data: SECRET-KEY" in Path(path).read_text()
    assert not os.path.exists(path)


def test_for_kind_cluster_uses_the_kind_context_and_never_shows_the_file(tmp_path, monkeypatch):
    kind = executable(tmp_path / "kind", FAKE_KIND)
    with Kubectl.for_kind_cluster("lab", kind=kind) as kube:
        assert kube.context == "kind-lab"
        shown = kube.command(["get", "nodes"])
    assert shown == "kubectl --kubeconfig <(kind get kubeconfig --name lab) --context kind-lab get nodes".replace(
        "kind get", f"{kind} get")
    assert "SECRET" not in shown and "lab-kubeconfig-" not in shown


def test_unknown_kind_cluster_is_a_sentence_without_the_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KIND_FAIL", "1")
    kind = executable(tmp_path / "kind", FAKE_KIND)
    with pytest.raises(ClusterError) as raised, kind_kubeconfig("nope", kind=kind):
        pass
    message = str(raised.value)
    assert message.startswith("kind has no kubeconfig for a cluster named 'nope'")
    assert message.endswith("pass a name that `kind get clusters` lists.")


def test_missing_kind(tmp_path):
    with pytest.raises(ClusterError, match="is not on PATH; install kind"), kind_kubeconfig(
            "lab", kind=str(tmp_path / "kind")):
        pass



def test_get_raw_reads_through_the_api_server(kube, tmp_path):
    path = "/api/v1/namespaces/istio-system/services/kiali:20001/proxy/kiali/api/namespaces/graph?namespaces=default"
    assert json.loads(kube.get_raw(path)) == {"path": path}
    assert calls(tmp_path)[-1][4:] == ["get", "--raw", path, "--request-timeout=30s"]


def test_get_raw_error_keeps_kubectls_reason(kube, monkeypatch):
    monkeypatch.setenv("FAKE_RAW_FAIL", 'Error from server (ServiceUnavailable): no endpoints available for service '
                                        '"kiali"')
    with pytest.raises(RawGetError) as raised:
        kube.get_raw("/api/v1/namespaces/istio-system/services/kiali:20001/proxy/kiali/api")
    assert raised.value.reason == 'Error from server (ServiceUnavailable): no endpoints available for service "kiali"'
    assert str(raised.value).startswith("`") and "get --raw /api/v1/namespaces/istio-system" in str(raised.value)
    assert isinstance(raised.value, ClusterError)


def test_port_forward_args_take_a_service():
    kube = Kubectl("cfg", "ctx")
    assert kube.port_forward_args("istio-system", "svc/kiali", 20001, 20001) == [
        "port-forward", "-n", "istio-system", "svc/kiali", "20001:20001", "--address", "127.0.0.1"]
    assert kube.port_forward_args("istio-system", "ztunnel-1", 5, 15000)[3] == "pod/ztunnel-1"


def test_open_port_forward_on_a_chosen_port_in_its_own_session(kube, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = kube.open_port_forward("istio-system", "svc/kiali", 20001, local_port=port, new_session=True)
    try:
        assert forward.local_port == port and forward.running and forward.exit_code is None
        assert forward.command.endswith(f"port-forward -n istio-system svc/kiali {port}:20001 --address 127.0.0.1")
        pid = int((tmp_path / "pf.pid").read_text())
        assert os.getsid(pid) == pid != os.getsid(0)  # Ctrl-C in the terminal does not reach it
    finally:
        forward.stop()
    assert not forward.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_forward_that_dies_tells_kubectls_last_line(kube, monkeypatch):
    monkeypatch.setenv("FAKE_PF_DIE_AFTER", "0.3")
    forward = kube.open_port_forward("istio-system", "svc/kiali", 20001)
    try:
        deadline = time.monotonic() + 10
        while forward.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forward.exit_code == 1
        assert forward.last_error_line() == "E1002 09:14:03.120455 portforward.go:413] lost connection to pod"
        assert forward.first_error_line().startswith("Forwarding from 127.0.0.1:")
    finally:
        forward.stop()


def test_a_missing_kind_cluster_is_its_own_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KIND_FAIL", "1")
    kind = executable(tmp_path / "kind", FAKE_KIND)
    with pytest.raises(KindClusterMissing) as raised, kind_kubeconfig("nope", kind=kind):
        pass
    assert raised.value.reason == "ERROR: could not locate any control plane nodes for cluster named 'nope'"


def test_a_login_posts_the_form_returns_the_cookies_and_shows_neither(kube):
    secret = "the-token-itself"
    response = kube.http_get("istio-system", "svc/kiali", 20001, "/kiali/api/authenticate", form={"token": secret})
    answer = json.loads(response.body)
    assert answer["form"] == f"token={secret}" and answer["path"] == "/kiali/api/authenticate"
    assert response.cookies == ("kiali-token-Kubernetes=sealed-session", "kiali-token-chunks-Kubernetes=1")
    assert response.commands[1].startswith("POST http://127.0.0.1:")
    assert secret not in " ".join(response.commands)
    again = kube.http_get("istio-system", "svc/kiali", 20001, "/config_dump", cookies=response.cookies)
    assert json.loads(again.body)["cookie"] == "kiali-token-Kubernetes=sealed-session; kiali-token-chunks-Kubernetes=1"
    assert "sealed-session" not in " ".join(again.commands)


def test_create_token_returns_only_the_token_and_its_failure_never_shows_one(kube, tmp_path, monkeypatch):
    assert kube.create_token("istio-system", "kiali") == "eyJhbGciOiJSUzI1NiJ9.fake-token-body.fake-signature"
    assert calls(tmp_path)[-1][4:] == ["create", "token", "kiali", "-n", "istio-system", "--duration=600s"]
    monkeypatch.setenv("FAKE_TOKEN_FAIL", "1")
    with pytest.raises(ClusterError) as raised:
        kube.create_token("istio-system", "kiali")
    assert raised.value.reason == 'error: failed to create token: serviceaccounts "kiali" not found'
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("reason", "unreachable"), [
    # The API server's proxy transport could not dial the pod: private control planes, Konnectivity tunnels.
    ("Error from server (ServiceUnavailable): error trying to reach service: dial tcp 10.8.0.12:9090: i/o timeout",
     True),
    ("Error from server (ServiceUnavailable): error trying to reach service: proxy error from 127.0.0.1:6443 while "
     "dialing 10.42.1.78:20001, code 502: 502 Bad Gateway", True),
    ("Unable to connect to the server: net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
     True),
    # The Service has no Ready pod: the addon is down, a port-forward would not help.
    ('Error from server (ServiceUnavailable): no endpoints available for service "prometheus"', False),
    ("Error from server (NotFound): services \"kiali\" not found", False),
])
def test_which_proxy_failures_mean_the_api_server_cannot_reach_the_pod(reason, unreachable):
    assert proxy_cannot_reach(RawGetError(f"`kubectl get --raw ...` failed: {reason}", reason)) is unreachable
