"""The ./lab.sh commands, with docker, kind, kubectl and pulumi replaced by scripts that record their calls."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
from pathlib import Path

import pytest

from lab import catalog, cli, preflight
from lab.bootstrap import run_captured
from lab.cli import Context, Paths
from lab.preflight import Host
from tests import realistic_secrets

KUBECTL_JSON = '{"clientVersion": {"gitVersion": "v1.36.4"}}'


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    (root / "Pulumi.yaml").write_text("name: istio-ambient-lab\nruntime: python\nstackConfigDir: stacks\n")
    (root / "stacks" / "Pulumi.l4-only.yaml").write_text("config: {}\n")
    (root / "stacks" / "Pulumi.l7.yaml").write_text(
        "config:\n  istio-ambient-lab:meshMode: l7\n  istio-ambient-lab:ingressHostPort: 8081\n"
    )
    return root


class Machine:
    """Fake tools on a PATH of their own; pulumi writes each call, and the lab's variables, to a log."""

    def __init__(self, fake_bin, tmp_path: Path):
        self.bin = fake_bin
        self.log = tmp_path / "pulumi.log"
        self.outputs = tmp_path / "outputs.json"
        self.state = tmp_path / "state.json"  # what `pulumi stack export` prints
        self.state.write_text('{"version": 3, "deployment": {}}')
        self.clusters = tmp_path / "clusters.txt"
        self.clusters.write_text("")
        fake_bin.add("docker", 'case "$*" in *DockerRootDir*) echo /var/lib/docker ;; *) echo 28.2.2 ;; esac')
        fake_bin.add("kubectl", f"echo '{KUBECTL_JSON}'")
        fake_bin.add("kind", f"""
case "$1" in
  version) echo "kind v0.32.0 go1.26.5 linux/amd64" ;;
  get) [ "$2" = clusters ] && /bin/cat {self.clusters} || echo "kubeconfig: yes" ;;
esac""")
        self.pulumi()

    def pulumi(self, fail: str = "", on_up: str = ":") -> None:
        """(Re)write the fake pulumi; ``fail`` names a subcommand ("up", "select", ...) that exits 1; ``on_up`` is
        shell run (in the project, as the cluster's create would be) at each `pulumi up`."""
        self.bin.add("pulumi", f"""
[ "$1" = version ] && {{ echo v3.272.0; exit 0; }}
lab="$PULUMI_BACKEND_URL | $PULUMI_CONFIG_PASSPHRASE_FILE | $PULUMI_SKIP_UPDATE_CHECK"
echo "$* | $lab | $PULUMI_CONFIG_PASSPHRASE" >> {self.log}
case "$*" in "up "*) {on_up} ;; esac
case "$*" in
  *"{fail or "never"}"*) echo "error: {fail} went wrong" >&2; exit 1 ;;
  "stack output"*) /bin/cat {self.outputs} ;;
  "stack export"*) /bin/cat {self.state} ;;
  "destroy "*) if [ -e {self.log.parent}/destroy-deletes-cluster ]; then : > {self.clusters}; fi ;;  # the stored kind delete
  "stack ls"*) echo '[]' ;;
esac""")

    def calls(self) -> list[str]:
        return [line.split(" | ")[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def machine(fake_bin, tmp_path) -> Machine:
    return Machine(fake_bin, tmp_path)


def healthy_host(**overrides) -> Host:
    defaults = dict(
        run=run_captured,
        read_text=lambda path: "1048576",
        port_is_free=lambda address, port: True,
        free_bytes=lambda path: 100 << 30,
        system=lambda: "Linux",
        machine=lambda: "x86_64",
        cluster_owner=lambda name: None,
    )
    return Host(**{**defaults, **overrides})


def context(project: Path, machine: Machine, **env) -> Context:
    return Context(
        Paths(project), env={"PATH": machine.bin.path, "HOME": str(project.parent), **env}, host=healthy_host(),
        out=io.StringIO(), platform=("linux", "amd64"),
    )


def test_pulumi_env_uses_a_local_backend_and_a_private_passphrase_made_once(project):
    paths = Paths(project)
    env = cli.pulumi_env(paths, {"PATH": "/usr/bin", "PULUMI_CONFIG_PASSPHRASE": "from the user"})
    assert env["PULUMI_BACKEND_URL"] == f"file://{project}/.lab/state"
    assert (project / ".lab" / "state").is_dir()
    assert env["PULUMI_CONFIG_PASSPHRASE_FILE"] == str(project / ".lab" / "passphrase")
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert env["PATH"] == f"{project}/.lab/tools:/usr/bin"
    assert "PULUMI_CONFIG_PASSPHRASE" not in env
    passphrase = paths.passphrase.read_text()
    assert len(passphrase.strip()) >= 32
    assert stat.S_IMODE(paths.passphrase.stat().st_mode) == 0o600
    cli.pulumi_env(paths, {})
    assert paths.passphrase.read_text() == passphrase


def test_an_empty_passphrase_file_is_replaced(project):
    path = project / ".lab" / "passphrase"
    path.parent.mkdir()
    path.write_text("\n")
    cli.ensure_passphrase(path)
    assert path.read_text().strip() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_up_runs_each_step_in_order_with_the_lab_environment(project, machine, capfd):
    ctx = context(project, machine, PULUMI_CONFIG_PASSPHRASE="leaked")
    assert cli.main(["up"], ctx) == 0
    printed = ctx.out.getvalue()
    steps = [line for line in printed.splitlines() if line.startswith("[")]
    assert steps == ["[1/6] tools", "[2/6] preflight", "[3/6] state", "[4/6] stack l4-only", "[5/6] cluster",
                     "[6/6] pulumi up"]
    assert "FAIL" not in printed
    assert machine.calls() == [
        "stack select --create l4-only --secrets-provider passphrase",
        "up --yes --stack l4-only",
    ]
    backend, passphrase_file, skip, inherited = machine.log.read_text().splitlines()[-1].split(" | ")[1:]
    assert backend == f"file://{project}/.lab/state"
    assert passphrase_file == str(project / ".lab" / "passphrase")
    assert (skip, inherited) == ("true", "")
    passphrase = (project / ".lab" / "passphrase").read_text().strip()
    assert passphrase not in printed + capfd.readouterr().out + machine.log.read_text()


def brought_up(project: Path, stack: str, resources: int = 1) -> Path:
    """The stack's checkpoint as pulumi's file backend keeps it in .lab/state, with that many resources."""
    path = project / ".lab" / "state" / ".pulumi" / "stacks" / "istio-ambient-lab" / f"{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    listed = [{"urn": f"urn:pulumi:{stack}::istio-ambient-lab::pulumi:pulumi:Stack::r{n}"} for n in range(resources)]
    path.write_text(json.dumps({"version": 3, "checkpoint": {"stack": stack, "latest": {"resources": listed}}}))
    return path


def up_before(project: Path, machine: Machine, stack: str = "l7", **shape) -> dict:
    """The stack's outputs as its last up left them, with the state it made."""
    brought_up(project, stack)
    name = f"ambient-{stack}"
    recorded = {"cluster_name": name, "cluster_owner": f"istio-ambient-lab.{stack}.0a1b2c3d", "mesh_mode": stack,
                "node_shape": {"clusterName": name, "workers": 2, "nodeImage": catalog.KIND_NODE_IMAGE,
                               "ingressHostPort": 8081 if stack == "l7" else 8080, **shape}}
    machine.outputs.write_text(json.dumps(recorded))
    machine.state.write_text(json.dumps(state_with_cluster(recorded["node_shape"], recorded["cluster_owner"])))
    return recorded


def state_with_cluster(shape: dict, owner: str) -> dict:
    """A state export holding the kind cluster Command as the program registers it (triggers, stored stdout)."""
    name = shape["clusterName"]
    return {"version": 3, "deployment": {"resources": [{
        "urn": "urn:pulumi:s::istio-ambient-lab::istio-ambient-lab:index:KindCluster$command:local:Command::kind-cluster",
        "type": "command:local:Command",
        "inputs": {"triggers": [name, shape["nodeImage"], shape["workers"], shape["ingressHostPort"]]},
        "outputs": {"stdout": f"created kind cluster '{name}' (owner {owner})."}}]}}


def test_up_reads_the_stacks_own_port_and_cluster_name(project, machine, monkeypatch):
    monkeypatch.setenv("PATH", machine.bin.path)  # lab.kind_cluster runs kind and docker itself
    up_before(project, machine)
    asked = []
    ctx = context(project, machine)
    ctx.host = healthy_host(port_is_free=lambda address, port: asked.append(port) or True)
    machine.clusters.write_text("ambient-l7\n")
    ctx.host.cluster_owner = lambda name: "istio-ambient-lab.l7.0a1b2c3d" if name == "ambient-l7" else None
    assert cli.main(["up", "l7"], ctx) == 0
    assert asked == []  # the port is held by the stack's own cluster, so it is not probed
    assert "kind cluster ambient-l7 belongs to this stack" in ctx.out.getvalue()
    assert "127.0.0.1:8081 belongs to this stack's cluster" in ctx.out.getvalue()


def test_docker_disk_and_port_are_checked_before_any_download(project, machine, capsys):
    """With no Docker, `up` ends on the Docker check, not on a failed download of a tool it lacks."""
    (machine.bin.folder / "kind").unlink()
    machine.bin.add("docker", "exit 1")
    ctx = context(project, machine, LAB_DOWNLOAD_BASE_KIND="https://127.0.0.1:9/unreachable")
    ctx.host = healthy_host(free_bytes=lambda path: 1 << 30, port_is_free=lambda address, port: False)
    assert cli.main(["up"], ctx) == 1
    assert machine.calls() == []
    assert not (project / ".lab").exists(), "no tool downloaded, no state made"
    assert capsys.readouterr().err == (
        "Preflight found the problems marked FAIL above before downloading anything: fix them, then run "
        "`./lab.sh up l4-only` again.\n"
    )
    printed = ctx.out.getvalue()
    assert [line.split()[:2] for line in printed.splitlines()] == [
        ["ok", "architecture"], ["FAIL", "docker"], ["FAIL", "disk"], ["FAIL", "ingress"]]
    assert "[1/6] tools" not in printed


def test_preflight_failure_stops_before_pulumi_or_any_state(project, machine, capsys):
    ctx = context(project, machine)
    ctx.host = healthy_host(read_text=lambda path: "1048576", cluster_owner=lambda name: "someone.else")
    machine.clusters.write_text("ambient-l4-only\n")
    assert cli.main(["up"], ctx) == 1
    assert machine.calls() == []
    assert not (project / ".lab" / "state").exists()
    assert capsys.readouterr().err == (
        "Preflight found the problems marked FAIL above: fix them, then run `./lab.sh up l4-only` again.\n"
    )
    assert "FAIL  cluster name" in ctx.out.getvalue()


def test_failed_up_collects_diagnostics_and_says_where(project, machine, capsys):
    machine.pulumi(fail="up --yes")
    ctx = context(project, machine)
    assert cli.main(["up"], ctx) == 1
    folders = list((project / ".lab" / "diagnostics").iterdir())
    assert len(folders) == 1 and (folders[0] / "summary.txt").exists()
    assert f"Diagnostics: {folders[0]}" in ctx.out.getvalue()
    assert capsys.readouterr().err == (
        f"`pulumi up` failed: read its output above and the diagnostics in {folders[0]}, fix the cause, then run "
        "`./lab.sh up l4-only` again.\n"
    )


def test_adopt_is_a_choice_for_one_up_that_stores_nothing(project, machine, tmp_path):
    """The create (run by pulumi up, in the project) finds a private marker; nothing goes into the stack, and the
    marker is gone after the up, so the next up neither shows a diff nor adopts another cluster of that name."""
    machine.clusters.write_text("ambient-l4-only\n")
    seen = tmp_path / "seen"
    marker = ".lab/adopt-once/ambient-l4-only"
    machine.pulumi(on_up=f"{{ /usr/bin/stat -c %a {marker} && /bin/cat {marker} && echo \"env $LAB_ADOPT_NONCE\"; "
                         f"}} >> {seen} 2>/dev/null || echo no >> {seen}")
    ctx = context(project, machine, LAB_ADOPT_NONCE="left-in-the-shell")
    assert cli.main(["up", "--adopt"], ctx) == 0
    assert machine.calls() == ["stack select --create l4-only --secrets-provider passphrase", "up --yes --stack l4-only"]
    mode, content, env = seen.read_text().splitlines()
    name, nonce = content.split()
    assert mode == "600" and name == "ambient-l4-only" and env == f"env {nonce}", "pulumi up carries the marker's nonce"
    assert len(nonce) == 32 and nonce != str(os.getpid()), "a random nonce, not a process id that can be reused"
    assert not (project / marker).exists()
    assert "adopting kind cluster ambient-l4-only if it exists, for this up only" in ctx.out.getvalue()
    machine.clusters.write_text("")  # say the cluster went: the next up creates one, with no adoption pending
    assert cli.main(["up"], ctx) == 0
    assert seen.read_text().splitlines()[-1] == "no"


def test_adopt_is_withdrawn_when_the_up_fails(project, machine, tmp_path):
    machine.clusters.write_text("ambient-l4-only\n")
    marker = project / ".lab" / "adopt-once" / "ambient-l4-only"
    machine.pulumi(fail="up --yes", on_up=f"[ -f {marker} ] && echo pending > {tmp_path / 'seen'}")
    assert cli.main(["up", "--adopt"], context(project, machine)) == 1
    assert (tmp_path / "seen").read_text() == "pending\n" and not marker.exists()


def test_a_stored_adopt_setting_is_pointed_out_on_each_up(project, machine):
    (project / "stacks" / "Pulumi.l4-only.yaml").write_text("config:\n  istio-ambient-lab:adoptExistingCluster: true\n")
    ctx = context(project, machine)
    assert cli.main(["up"], ctx) == 0
    assert ("the stack file sets istio-ambient-lab:adoptExistingCluster, which stays set and adopts any kind cluster "
            "named ambient-l4-only on every create: remove it with `./lab.sh pulumi config rm "
            "istio-ambient-lab:adoptExistingCluster --stack l4-only` once you no longer need it") in ctx.out.getvalue()


def test_stack_that_cannot_be_selected_stops_with_pulumis_reason(project, machine, capsys):
    machine.pulumi(fail="select")
    assert cli.main(["up"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "pulumi could not select or create stack l4-only (error: select went wrong): fix that, then run the "
        "command again.\n"
    )


def test_errors_quoting_a_tool_are_printed_with_its_credentials_redacted(project, machine, capsys):
    """pulumi and kind quote the proxy they could not reach, headers, kubeconfig lines: the sentence stays readable."""
    machine.bin.add("pulumi", f"""
[ "$1" = version ] && {{ echo v3.272.0; exit 0; }}
echo 'error: Get https://api.pulumi.com: proxyconnect tcp: http://lab:{realistic_secrets.PROXY_PASSWORD}@proxy.corp:3128 \
(Authorization: Bearer {realistic_secrets.JWT})' >&2
exit 1""")
    assert cli.main(["up"], context(project, machine)) == 1
    err = capsys.readouterr().err
    realistic_secrets.assert_clean(err)
    assert "http://lab:REDACTED@proxy.corp:3128 (Authorization: Bearer REDACTED)" in err


def test_an_unexpected_error_never_prints_a_secret(project, machine, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError(realistic_secrets.KUBECONFIG)

    monkeypatch.setattr(cli, "stack_config", broken)
    assert cli.main(["preflight"], context(project, machine)) == 1
    realistic_secrets.assert_clean(capsys.readouterr().err)


def test_everything_a_command_says_goes_through_the_leak_rule(project, machine):
    ctx = context(project, machine)
    ctx.say(realistic_secrets.ALL)
    ctx.detail(realistic_secrets.ALL)
    realistic_secrets.assert_clean(ctx.out.getvalue())
    assert "REDACTED" in ctx.out.getvalue()


def test_kiali_signing_keys_are_known_secrets_that_are_never_printed(project, machine, monkeypatch):
    """32 hex characters have no shape the leak rule could know: the lab hands it the keys it keeps."""
    from lab import local_secrets

    monkeypatch.delenv(local_secrets.SECRETS_ENV, raising=False)
    key = local_secrets.kiali_signing_key("l7", project)
    assert local_secrets.known_secrets(project) == [key]
    ctx = context(project, machine)
    ctx.detail(f"helm get values kiali: {{'login_token': {{'signing_key': '{key}'}}}}")
    assert key not in ctx.out.getvalue() and "'signing_key': 'REDACTED'" in ctx.out.getvalue()


def test_a_lab_folder_of_another_user_stops_every_command_in_one_sentence(project, machine, capsys, monkeypatch):
    from lab import private

    (project / ".lab").mkdir(exist_ok=True)
    me = os.getuid()
    monkeypatch.setattr(private.os, "getuid", lambda: me + 1)
    assert cli.main(["up"], context(project, machine)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{project / '.lab'} belongs to another user (uid {me})") and err.count("\n") == 1, err
    assert "Unexpected error" not in err and "Traceback" not in err


def test_destroy_checks_that_no_cluster_is_left(project, machine):
    brought_up(project, "l4-only")
    ctx = context(project, machine)
    assert cli.main(["destroy"], ctx) == 0
    assert machine.calls() == ["stack select l4-only", "stack export --stack l4-only",
                               "stack output --json --stack l4-only", "destroy --yes --stack l4-only"]
    assert ctx.out.getvalue().splitlines()[-1] == "Nothing is left: no kind cluster named ambient-l4-only."


def test_destroy_on_an_existing_cluster_ends_saying_what_stays_and_how_to_remove_it(project, machine):
    (project / "stacks" / "Pulumi.gke.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: gke_lab\n")
    brought_up(project, "gke")
    machine.outputs.write_text(json.dumps({"target": "existing", "kube_context": "gke_lab",
                                           "gateway_api_crds": "v1.6.1"}))
    ctx = context(project, machine)
    assert cli.main(["destroy", "gke"], ctx) == 0
    assert ctx.out.getvalue().splitlines()[-1] == (
        "The lab removed what it added to context gke_lab except what stays on purpose, to remove only if nobody else "
        "uses it: Istio's CRDs, which Istio keeps on uninstall (`kubectl --context gke_lab get crd -o name | grep "
        "'\\.istio\\.io$' | xargs kubectl --context gke_lab delete`), the istio-ca-root-cert ConfigMaps istiod wrote "
        "into namespaces the lab did not create (`kubectl --context gke_lab delete configmap --all-namespaces "
        "--field-selector metadata.name=istio-ca-root-cert`) and the Gateway API CRDs v1.6.1 and their admission "
        "policy, which other teams' Gateways may use (`kubectl --context gke_lab delete -f "
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml`).")


def test_destroy_says_how_to_remove_a_cluster_left_behind(project, machine, capsys):
    brought_up(project, "l4-only")
    machine.clusters.write_text("ambient-l4-only\n")
    assert cli.main(["destroy"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "The kind cluster ambient-l4-only is still there: if it is this stack's, remove it with "
        "`.lab/tools/kind delete cluster --name ambient-l4-only`.\n"
    )


def test_destroy_of_a_stack_that_never_existed_does_nothing(project, machine):
    ctx = context(project, machine)
    assert cli.main(["destroy"], ctx) == 0
    assert machine.calls() == [] and not (project / ".lab").exists()
    # After any `./lab.sh pulumi ...` the state folder exists, and a stack may too, empty: still nothing up.
    brought_up(project, "l4-only", resources=0)
    assert cli.main(["destroy"], ctx) == 0
    assert machine.calls() == [] and not (project / ".lab" / "tools").exists()
    brought_up(project, "l4-only")
    machine.pulumi(fail="stack select")
    assert cli.main(["destroy"], ctx) == 0
    assert machine.calls() == ["stack select l4-only", "stack ls --json"]
    assert "stack l4-only does not exist" in ctx.out.getvalue()


@pytest.fixture
def streamed(monkeypatch):
    """What would have run in the user's terminal."""
    calls = []
    monkeypatch.setattr(cli, "_stream", lambda argv, env, cwd: calls.append(list(argv)) or 0)
    return calls


def test_verify_runs_the_verify_package_with_the_stacks_outputs(project, machine, streamed):
    brought_up(project, "l7")
    machine.outputs.write_text(json.dumps(
        {"mesh_mode": "l7", "cluster_name": "ambient-l7", "target": "kind", "apps_namespace": "shop"}
    ))
    assert cli.main(["verify", "l7", "--json"], context(project, machine)) == 0
    assert streamed == [[
        cli.sys.executable, "-m", "verify", "--mode", "l7", "--namespace", "shop", "--kind-cluster", "ambient-l7",
        "--addons", "--image-record", ".lab/image-digests.json", "--timeout", "120", "--json",
    ]]
    assert machine.calls() == ["stack output --json --stack l7"]


def test_verify_leaves_the_addon_checks_out_when_observability_is_off(project, machine, streamed):
    (project / "stacks" / "Pulumi.l7.yaml").write_text(
        "config:\n  istio-ambient-lab:meshMode: l7\n  istio-ambient-lab:observability: false\n"
    )
    brought_up(project, "l7")
    machine.outputs.write_text(json.dumps({"mesh_mode": "l7", "cluster_name": "ambient-l7", "target": "kind"}))
    assert cli.main(["verify", "l7"], context(project, machine)) == 0
    assert "--addons" not in streamed[0]
    assert streamed[0][-6:] == ["--kind-cluster", "ambient-l7", "--image-record", ".lab/image-digests.json",
                                "--timeout", "120"]


def test_verify_on_an_existing_cluster_passes_its_kubeconfig_and_context(project, machine, streamed):
    (project / "stacks" / "Pulumi.gke.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: gke_lab\n"
        "  istio-ambient-lab:kubeconfigPath: /home/me/.kube/gke\n"
    )
    brought_up(project, "gke")
    machine.outputs.write_text(json.dumps({"mesh_mode": "l4-only", "target": "existing", "kube_context": "gke_lab"}))
    assert cli.main(["verify", "gke"], context(project, machine)) == 0
    assert streamed[0][3:] == [
        "--mode", "l4-only", "--namespace", "istio-ambient-lab", "--kubeconfig", "/home/me/.kube/gke", "--context", "gke_lab",
        "--addons", "--kiali-login", "--image-record", ".lab/image-digests.json", "--timeout", "120",
    ]


def test_verify_retries_each_check_as_long_as_the_stack_says(project, machine, streamed):
    (project / "stacks" / "Pulumi.l7.yaml").write_text(
        "config:\n  istio-ambient-lab:meshMode: l7\n  istio-ambient-lab:verificationTimeout: 15\n"
    )
    brought_up(project, "l7")
    machine.outputs.write_text(json.dumps({"mesh_mode": "l7", "cluster_name": "ambient-l7", "target": "kind"}))
    assert cli.main(["verify", "l7"], context(project, machine)) == 0
    assert streamed[0][-2:] == ["--timeout", "15"]


def test_verify_before_up_says_to_bring_the_lab_up(project, machine, capsys, streamed):
    assert cli.main(["verify"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "Nothing has been brought up here for stack l4-only: run `./lab.sh up l4-only` first.\n")
    assert streamed == [] and not (project / ".lab").exists(), "no tools downloaded, no state made"
    (project / ".lab" / "state").mkdir(parents=True)  # any `./lab.sh pulumi ...` call makes it
    assert cli.main(["verify"], context(project, machine)) == 1
    assert capsys.readouterr().err.startswith("Nothing has been brought up here for stack l4-only")
    assert streamed == [] and not (project / ".lab" / "tools").exists()
    brought_up(project, "l4-only")  # an up that failed before it saved outputs
    assert cli.main(["verify"], context(project, machine)) == 1
    assert capsys.readouterr().err == "Stack l4-only has no outputs to verify yet: run `./lab.sh up l4-only` first.\n"


def test_dashboard_runs_the_dashboard_module_and_leaves_ctrl_c_to_it(project, machine, monkeypatch):
    seen = []

    def stream(argv, env, cwd):
        seen.append((list(argv), signal.getsignal(signal.SIGINT)))
        # While the dashboard runs, Ctrl-C must not end this process (the dashboard cleans up and exits 0).
        signal.raise_signal(signal.SIGINT)
        return 0

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "_stream", stream)
    up_before(project, machine)
    assert cli.main(["dashboard", "l7"], context(project, machine)) == 0
    (argv, handler), = seen
    assert argv == [cli.sys.executable, "-m", "lab.dashboard", "--stack", "l7"]
    # A Python handler, not SIG_IGN: exec resets handlers but would pass an ignored SIGINT on to the dashboard.
    assert callable(handler) and handler not in (signal.SIG_IGN, signal.SIG_DFL, signal.default_int_handler)
    assert signal.getsignal(signal.SIGINT) is before


def test_dashboard_options_reach_the_dashboard(project, machine, monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_stream", lambda argv, env, cwd: seen.append(list(argv)) or 0)
    up_before(project, machine)
    assert cli.main(["dashboard", "l7", "--prometheus", "--open", "--kiali-port", "21001"],
                    context(project, machine)) == 0
    assert seen == [[cli.sys.executable, "-m", "lab.dashboard", "--stack", "l7", "--prometheus", "--open",
                     "--kiali-port", "21001"]]


def test_diagnose_prints_the_folder(project, machine):
    up_before(project, machine)
    ctx = context(project, machine)
    assert cli.main(["diagnose", "l7"], ctx) == 0
    folder = next((project / ".lab" / "diagnostics").iterdir())
    assert ctx.out.getvalue().splitlines()[-1] == f"Diagnostics: {folder}"
    assert "ok      kind export logs" in ctx.out.getvalue()


def test_diagnose_that_collects_nothing_fails(project, machine, capsys):
    """Docker down: every step fails, so the command does too, instead of exiting 0 with a folder of failures."""
    up_before(project, machine)
    down = 'echo "Cannot connect to the Docker daemon" >&2; exit 1'
    machine.bin.add("kind", f'[ "$1" = version ] && {{ echo "kind v0.32.0 go1.26.5 linux/amd64"; exit 0; }}; {down}')
    machine.bin.add("kubectl", f"[ \"$1\" = version ] && {{ echo '{KUBECTL_JSON}'; exit 0; }}; {down}")
    machine.bin.add("docker", down)
    ctx = context(project, machine, LAB_DOWNLOAD_BASE_KIND="https://127.0.0.1:9", LAB_DOWNLOAD_BASE_KUBECTL="https://127.0.0.1:9")
    assert cli.main(["diagnose", "l7"], ctx) == 1
    assert "FAILED  kind export logs" in ctx.out.getvalue()
    assert capsys.readouterr().err == (
        "Nothing could be collected for stack l7, every step failed (see above): start Docker or make the cluster "
        "reachable, then run `./lab.sh diagnose l7` again.\n")


def test_pulumi_and_test_pass_every_argument_through(project, machine, streamed, monkeypatch):
    assert cli.main(["pulumi", "config", "set", "--stack", "l7", "-h"], context(project, machine)) == 0
    assert streamed == [["pulumi", "config", "set", "--stack", "l7", "-h"]]
    ran = []
    monkeypatch.setattr(cli.subprocess, "call", lambda argv, cwd, env: ran.append((argv, env["PATH"])) or 0)
    assert cli.main(["test", "-q", "-k", "lab"], context(project, machine)) == 0
    [(argv, path)] = ran
    assert argv == [cli.sys.executable, "-m", "pytest", "-q", "-k", "lab"]
    assert path.split(cli.os.pathsep)[0] == str(project / ".lab" / "tools"), "e2e tests find the installed tools"


def test_a_bad_stack_value_is_the_config_modules_sentence(project, machine, capsys):
    (project / "stacks" / "Pulumi.l7.yaml").write_text("config:\n  istio-ambient-lab:meshMode: l9\n")
    assert cli.main(["preflight", "l7"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        f"istio-ambient-lab:meshMode is 'l9', but it must be one of: l4-only, l7: fix it in "
        f"{project}/stacks/Pulumi.l7.yaml.\n"
    )


def test_an_unexpected_error_is_a_sentence_not_a_traceback(project, machine, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "stack_config", broken)
    assert cli.main(["preflight"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "Unexpected error (RuntimeError: disk on fire): run it again with LAB_DEBUG=1 and report the traceback.\n"
    )
    with pytest.raises(RuntimeError):
        cli.main(["preflight"], context(project, machine, LAB_DEBUG="1"))


def test_preflight_command_prints_every_result(project, machine):
    ctx = context(project, machine)
    assert cli.main(["preflight"], ctx) == 0
    lines = ctx.out.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [
        "architecture", "docker", "kind", "kubectl", "pulumi", "inotify", "ingress", "disk", "cluster",
    ]
    assert lines[-1] == "Preflight passed."


def test_preflight_of_a_stack_that_is_up_knows_its_own_cluster_and_port(project, machine):
    """`./lab.sh preflight` on a stack that is up reads its state as `up` does: the kind cluster there, and the
    ingress port it holds, are this stack's, not someone else's in the way (found by the cluster tier)."""
    up_before(project, machine)
    machine.clusters.write_text("ambient-l7\n")
    asked = []
    ctx = context(project, machine)
    ctx.host = healthy_host(port_is_free=lambda address, port: asked.append(port) or False,
                            cluster_owner=lambda name: "istio-ambient-lab.l7.0a1b2c3d")

    assert cli.main(["preflight", "l7"], ctx) == 0

    printed = ctx.out.getvalue()
    assert "kind cluster ambient-l7 belongs to this stack" in printed
    assert "127.0.0.1:8081 belongs to this stack's cluster" in printed
    assert asked == []
    assert printed.splitlines()[-1] == "Preflight passed."


def test_the_repositorys_own_stacks_are_read_as_the_program_reads_them():
    repository = Path(cli.__file__).resolve().parents[1]
    l7 = cli.stack_config(repository, "l7")
    assert (l7.mesh_mode, l7.target, l7.cluster_name, l7.ingress_host_port) == ("l7", "kind", "ambient-l7", 8081)
    assert cli.stack_config(repository, "l4-only").cluster_name == "ambient-l4-only"


def test_preflight_does_not_import_the_cli():
    """lab.cli uses lab.preflight; the other way round would be a cycle."""
    import ast

    tree = ast.parse(Path(cli.__file__).with_name("preflight.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "cli" not in imported


def test_failed_destroy_says_what_to_do(project, machine, capsys):
    brought_up(project, "l7")
    machine.pulumi(fail="destroy")
    assert cli.main(["destroy", "l7"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "`pulumi destroy` failed: read its output above, fix the cause, then run `./lab.sh destroy l7` again.\n"
    )


def test_up_refuses_a_node_shape_change_with_the_command_that_rebuilds(project, machine, monkeypatch, capsys):
    monkeypatch.setenv("PATH", machine.bin.path)
    up_before(project, machine, workers=3)
    machine.clusters.write_text("ambient-l7\n")
    ctx = context(project, machine)
    ctx.host.cluster_owner = lambda name: "istio-ambient-lab.l7.0a1b2c3d"
    assert cli.main(["up", "l7"], ctx) == 1
    assert capsys.readouterr().err == (
        "Stack l7's kind cluster changes shape (workers 3 -> 2), which needs a new cluster: run `./lab.sh up l7 "
        "--recreate` to destroy this lab and build it again, or undo the change.\n")
    assert not any(call.startswith(("up", "destroy")) for call in machine.calls())
    (machine.log.parent / "destroy-deletes-cluster").touch()
    assert cli.main(["up", "l7", "--recreate"], ctx) == 0
    assert [c for c in machine.calls() if c.startswith(("up", "destroy"))] == [
        "destroy --yes --stack l7", "up --yes --stack l7"]


def test_up_after_the_cluster_was_deleted_by_hand_clears_the_record_and_builds_again(project, machine, monkeypatch):
    monkeypatch.setenv("PATH", machine.bin.path)
    up_before(project, machine)
    ctx = context(project, machine)
    assert cli.main(["up", "l7"], ctx) == 0
    assert "kind cluster ambient-l7 was deleted outside the lab: clearing the stack's record of it" in ctx.out.getvalue()
    assert [c for c in machine.calls() if c.startswith(("up", "destroy"))] == [
        "destroy --yes --stack l7", "up --yes --stack l7"]


def test_up_starts_the_stacks_stopped_cluster(project, machine, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", machine.bin.path)
    started = tmp_path / "started"
    machine.bin.add("docker", f"""
case "$*" in
  *DockerRootDir*) echo /var/lib/docker ;;
  "ps -a"*) [ -e {started} ] && echo "ambient-l7-control-plane running" || echo "ambient-l7-control-plane exited" ;;
  "start "*) echo "$*" > {started} ;;
  *) echo 28.2.2 ;;
esac""")
    up_before(project, machine)
    machine.clusters.write_text("ambient-l7\n")
    monkeypatch.setattr(cli.kind_cluster, "cluster_owner", lambda name: "istio-ambient-lab.l7.0a1b2c3d")  # once up
    ctx = context(project, machine)
    ctx.host.cluster_owner = lambda name: preflight.OWNER_UNKNOWN
    assert cli.main(["up", "l7"], ctx) == 0
    printed = ctx.out.getvalue()
    assert "kind cluster ambient-l7 is this stack's and stopped: up starts it" in printed
    assert "kind cluster ambient-l7 is stopped: starting it" in printed
    assert started.read_text().strip() == "start ambient-l7-control-plane"
    assert machine.calls()[-1] == "up --yes --stack l7"


def test_up_after_a_failed_first_up_knows_its_cluster_from_the_state(project, machine, monkeypatch):
    """A failed up saves no outputs, but the cluster Command's record is in the state: the cluster is ours."""
    monkeypatch.setenv("PATH", machine.bin.path)
    brought_up(project, "l7")
    shape = {"clusterName": "ambient-l7", "workers": 2, "nodeImage": catalog.KIND_NODE_IMAGE, "ingressHostPort": 8081}
    machine.state.write_text(json.dumps(state_with_cluster(shape, "istio-ambient-lab.l7.0a1b2c3d")))
    machine.outputs.write_text("{}")
    machine.clusters.write_text("ambient-l7\n")
    ctx = context(project, machine)
    ctx.host = healthy_host(port_is_free=lambda address, port: False,
                            cluster_owner=lambda name: "istio-ambient-lab.l7.0a1b2c3d")
    assert cli.main(["up", "l7"], ctx) == 0, ctx.out.getvalue()
    assert "kind cluster ambient-l7 belongs to this stack" in ctx.out.getvalue()
    assert "127.0.0.1:8081 belongs to this stack's cluster" in ctx.out.getvalue()


def test_a_shape_change_is_decided_before_the_checks_that_the_old_cluster_would_fail(project, machine, monkeypatch,
                                                                                     capsys):
    """A new clusterName with the same port: the old cluster holds the port, yet the way out is offered."""
    monkeypatch.setenv("PATH", machine.bin.path)
    up_before(project, machine, clusterName="old-name")
    machine.clusters.write_text("old-name\n")
    ctx = context(project, machine)
    ctx.host = healthy_host(port_is_free=lambda address, port: False)
    assert cli.main(["up", "l7"], ctx) == 1
    assert "needs a new cluster: run `./lab.sh up l7 --recreate`" in capsys.readouterr().err
    assert "FAIL" not in ctx.out.getvalue()


def test_a_started_cluster_that_is_not_this_states_is_refused(project, machine, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", machine.bin.path)
    machine.bin.add("docker", """
case "$*" in
  *DockerRootDir*) echo /var/lib/docker ;;
  "ps -a"*) echo "ambient-l7-control-plane exited" ;;
  *) echo 28.2.2 ;;
esac""")
    up_before(project, machine)
    machine.clusters.write_text("ambient-l7\n")
    monkeypatch.setattr(cli.kind_cluster, "start", lambda name: f"started kind cluster '{name}' (1 node(s)).")
    monkeypatch.setattr(cli.kind_cluster, "cluster_owner", lambda name: "someone.else.ffffffff")
    ctx = context(project, machine)
    assert cli.main(["up", "l7"], ctx) == 1
    assert capsys.readouterr().err.startswith(
        "The kind cluster ambient-l7 that was started carries the owner label someone.else.ffffffff, not this stack's")
    assert not any(call.startswith("up") for call in machine.calls())


def test_a_state_that_cannot_be_read_is_said_not_taken_for_no_stack(project, machine, capsys):
    brought_up(project, "l7")
    machine.pulumi(fail="stack export")
    assert cli.main(["up", "l7"], context(project, machine)) == 1
    assert capsys.readouterr().err == (
        "pulumi could not read stack l7 (error: stack export went wrong): fix that, then run the command again.\n")


def test_an_existing_cluster_stack_knows_its_context_from_the_state_after_a_failed_first_up(project, machine):
    """No outputs were saved, but the provider in the state names the context: what the lab installed there is its
    own, not another install to refuse."""
    brought_up(project, "gke")
    machine.state.write_text(json.dumps({"version": 3, "deployment": {"resources": [{
        "urn": "urn:pulumi:gke::istio-ambient-lab::istio-ambient-lab:index:ExistingCluster$pulumi:providers:kubernetes"
               "::existing",
        "type": "pulumi:providers:kubernetes", "inputs": {"context": "gke_lab"}}]}}))
    machine.outputs.write_text("{}")
    recorded = cli.stack_record(context(project, machine), "gke")
    assert recorded == {"target": "existing", "kube_context": "gke_lab"}


def existing_state(context: str = "minikube", files: str = "/home/me/.kube/config", uid: str = "uid-lab",
                   server: str = "https://lab:6443") -> str:
    """A state brought up on an existing cluster: its provider, and the identity recorded at the first up."""
    prefix = "urn:pulumi:gke::istio-ambient-lab::istio-ambient-lab:index:ExistingCluster$"
    return json.dumps({"version": 3, "deployment": {"resources": [
        {"urn": prefix + "pulumi:providers:kubernetes::existing", "type": "pulumi:providers:kubernetes",
         "inputs": {"context": context, "kubeconfig": files}},
        {"urn": prefix + "command:local:Command::cluster-identity", "type": "command:local:Command",
         "inputs": {"create": f"venv/bin/python -m lab.cluster_identity --context {context}",
                    "environment": {"KUBECONFIG": files}},
         "outputs": {"stdout": json.dumps({"kubeSystemUid": uid, "server": server})}},
    ]}})


def fake_cluster_kubectl(machine: Machine, uid: str | None, server: str = "https://lab:6443") -> Path:
    """kubectl answering for one cluster (None: it does not answer); it logs the KUBECONFIG and context it got."""
    seen = machine.log.parent / "kubectl.log"
    answer = f"echo {uid}" if uid else "echo 'Unable to connect to the server: dial tcp: i/o timeout' >&2; exit 1"
    machine.bin.add("kubectl", f"""
echo "KUBECONFIG=$KUBECONFIG $*" >> {seen}
case "$*" in
  *"get namespace kube-system"*) {answer} ;;
  *"config view"*) echo {server} ;;
  *"config get-contexts"*) echo minikube ;;
  *"--request-timeout"*) echo '{{"serverVersion": {{"major": "1", "minor": "34", "gitVersion": "v1.34.1"}}}}' ;;
  *) echo '{KUBECTL_JSON}' ;;
esac""")
    return seen


def existing_stack_file(project: Path, context: str) -> None:
    (project / "stacks" / "Pulumi.gke.yaml").write_text(
        f"config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: {context}\n")


def test_destroy_asks_the_states_cluster_through_the_states_kubeconfig_and_names_its_context(project, machine):
    """The shell's KUBECONFIG and the stack file's current context play no part: the state's do."""
    existing_stack_file(project, "renamed-since")
    brought_up(project, "gke")
    machine.state.write_text(existing_state(context="minikube", files="/home/me/lab.yaml"))
    machine.outputs.write_text(json.dumps({"target": "existing", "kube_context": "minikube"}))
    seen = fake_cluster_kubectl(machine, "uid-lab")
    ctx = context(project, machine, KUBECONFIG="prod.yaml")
    assert cli.main(["destroy", "gke"], ctx) == 0
    assert "destroy --yes --stack gke" in machine.calls()
    asked = [line for line in seen.read_text().splitlines() if "kube-system" in line][0]
    assert asked.startswith("KUBECONFIG=/home/me/lab.yaml --context minikube get namespace kube-system")
    last = ctx.out.getvalue().splitlines()[-1]
    assert last.startswith("The lab removed what it added to context minikube except")
    assert "(`KUBECONFIG=/home/me/lab.yaml kubectl --context minikube get crd -o name" in last
    assert "renamed-since" not in last


def test_destroy_refuses_another_cluster_behind_the_same_context_name(project, machine, capsys):
    existing_stack_file(project, "minikube")
    brought_up(project, "gke")
    machine.state.write_text(existing_state())
    machine.outputs.write_text(json.dumps({"target": "existing", "kube_context": "minikube"}))
    fake_cluster_kubectl(machine, "uid-prod", server="https://prod:443")
    assert cli.main(["destroy", "gke"], context(project, machine)) == 1
    assert not [call for call in machine.calls() if call.startswith("destroy")]
    assert capsys.readouterr().err == (
        "Context minikube (/home/me/.kube/config) now reaches another cluster (kube-system UID uid-prod, server "
        "https://prod:443) than the one stack gke was brought up on (kube-system UID uid-lab, server "
        "https://lab:6443), so destroy would remove the lab's objects from the wrong cluster: make that context reach "
        "the lab's cluster again, then run `./lab.sh destroy gke`.\n")


def test_destroy_of_an_unreachable_cluster_says_how_to_proceed(project, machine, capsys):
    existing_stack_file(project, "minikube")
    brought_up(project, "gke")
    machine.state.write_text(existing_state())
    machine.outputs.write_text("{}")
    fake_cluster_kubectl(machine, None)
    assert cli.main(["destroy", "gke"], context(project, machine)) == 1
    assert not [call for call in machine.calls() if call.startswith("destroy")]
    assert capsys.readouterr().err == (
        "The cluster of context minikube (/home/me/.kube/config) does not answer (Unable to connect to the server: "
        "dial tcp: i/o timeout), so the lab cannot tell whether it is the one stack gke was brought up on "
        "(kube-system UID uid-lab, server https://lab:6443): make it reachable (VPN, credentials) and run "
        "`./lab.sh destroy gke` again, or, if that cluster is gone for good, forget the stack's state with "
        "`./lab.sh pulumi stack rm gke --force --preserve-config --yes`, which touches no cluster.\n")


def test_the_state_records_which_cluster_an_existing_stack_was_brought_up_on(project, machine):
    brought_up(project, "gke")
    machine.state.write_text(existing_state())
    machine.outputs.write_text("{}")
    assert cli.stack_record(context(project, machine), "gke") == {
        "target": "existing", "kube_context": "minikube", "kubeconfig_files": "/home/me/.kube/config",
        "cluster_identity": {"kubeSystemUid": "uid-lab", "server": "https://lab:6443"}}


def test_up_refuses_another_cluster_behind_the_recorded_context(project, machine, capsys):
    existing_stack_file(project, "minikube")
    brought_up(project, "gke")
    machine.state.write_text(existing_state())
    machine.outputs.write_text(json.dumps({"target": "existing", "kube_context": "minikube"}))
    fake_cluster_kubectl(machine, "uid-prod", server="https://prod:443")
    ctx = context(project, machine, KUBECONFIG="prod.yaml")
    assert cli.main(["up", "gke"], ctx) == 1
    assert not [call for call in machine.calls() if call.startswith("up")]
    assert ("FAIL  cluster identity  Context minikube reaches another cluster (kube-system UID uid-prod, server "
            "https://prod:443) than the one stack gke was brought up on through context minikube (kube-system UID "
            "uid-lab, server https://lab:6443)") in ctx.out.getvalue()


@pytest.mark.parametrize("argv", [["kubeconfig"], ["kubectl", "l4-only", "get", "pods"], ["istioctl", "l4-only", "version"],
                                  ["shell"], ["tour"], ["verify"], ["diagnose"], ["dashboard"]])
def test_a_command_on_a_stack_that_is_not_up_says_so_before_any_download(project, machine, capsys, argv):
    """On a fresh clone, and after a `./lab.sh pulumi ...` call made the state folder: one sentence, no download."""
    for made_before in (None, "state folder", "empty stack"):
        if made_before == "state folder":
            (project / ".lab" / "state").mkdir(parents=True)
        elif made_before == "empty stack":
            brought_up(project, "l4-only", resources=0)
        assert cli.main(argv, context(project, machine, LAB_DOWNLOAD_BASE_KIND="https://127.0.0.1:9/no")) == 1
        assert capsys.readouterr().err == (
            "Nothing has been brought up here for stack l4-only: run `./lab.sh up l4-only` first.\n"), made_before
        assert not (project / ".lab" / "tools").exists() and machine.calls() == []


def test_a_stack_may_be_up_while_its_checkpoint_is_compressed_unreadable_or_an_update_is_under_way(project):
    import gzip

    paths = Paths(project)
    assert not cli.may_be_up(paths, "l7")
    checkpoint = brought_up(project, "l7")
    assert cli.may_be_up(paths, "l7") and not cli.may_be_up(paths, "l4-only")
    compressed = checkpoint.with_name("l7.json.gz")
    compressed.write_bytes(gzip.compress(checkpoint.read_bytes()))
    checkpoint.unlink()
    assert cli.may_be_up(paths, "l7")
    compressed.write_bytes(gzip.compress(b'{"version": 3, "checkpoint": {"latest": {"resources": []}}}'))
    assert not cli.may_be_up(paths, "l7")
    compressed.write_bytes(b"not gzip")
    assert cli.may_be_up(paths, "l7"), "what cannot be read is left to pulumi"
    compressed.unlink()
    (project / ".lab" / "state" / ".pulumi" / "journal" / "istio-ambient-lab" / "l7").mkdir(parents=True)
    assert cli.may_be_up(paths, "l7")
    legacy = project / ".lab" / "state" / ".pulumi" / "stacks" / "l4-only.json"
    legacy.write_text('{"checkpoint": {"latest": {"pending_operations": [{"type": "creating"}]}}}')
    assert cli.may_be_up(paths, "l4-only")
