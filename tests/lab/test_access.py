"""./lab.sh kubeconfig, shell, kubectl and istioctl against fake kind, kubectl and istioctl that record their calls."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

import pytest
import yaml

from lab import access, cli, tools
from tests.lab.test_cli import KUBECTL_JSON, brought_up, context, machine, project  # noqa: F401 (fixtures)

SECRET = "client-key-data: LS0tU0VDUkVULUtFWS0tLQ=="
KIND_KUBECONFIG = f"""apiVersion: v1
kind: Config
current-context: kind-ambient-l7
contexts:
- name: kind-ambient-l7
users:
- name: kind-ambient-l7
  user:
    {SECRET}
"""


@pytest.fixture
def lab(machine, project, tmp_path):  # noqa: F811 (the fixtures imported above)
    """The fake machine, with kind knowing one cluster (ambient-l7) and kubectl/istioctl logging each call; every
    stack has a state here, as an up leaves it."""
    for stack in ("l4-only", "l7", "gke"):
        brought_up(project, stack)
    machine.calls_log = tmp_path / "tools.log"
    machine.bin.add("kind", f"""
case "$1 $2" in
  "version ") echo "kind v0.32.0 go1.26.5 linux/amd64" ;;
  "get kubeconfig")
    [ "$4" = ambient-l7 ] || {{
      echo "ERROR: could not locate any control plane nodes for cluster named '$4'" >&2; exit 1; }}
    /bin/cat <<'EOF'
{KIND_KUBECONFIG}EOF
    ;;
  "export kubeconfig") echo "kind $* | $KUBECONFIG" >> {machine.calls_log} ;;
esac""")
    machine.bin.add("kubectl", f"""
[ "$1" = version ] && {{ echo '{KUBECTL_JSON}'; exit 0; }}
printf "%s | %s\n" "kubectl $*" "$KUBECONFIG" >> {machine.calls_log}
echo "kubectl ran"
""")
    istioctl(machine, "1.31.1")
    return machine


def istioctl(lab_machine, version: str) -> None:
    lab_machine.bin.add("istioctl", f"""
[ "$1" = version ] && [ "$2" = --remote=false ] && {{ echo "client version: {version}"; exit 0; }}
echo "istioctl $* | $KUBECONFIG" >> {lab_machine.calls_log}
""")


def tool_calls(lab_machine) -> list[str]:
    return lab_machine.calls_log.read_text().splitlines() if lab_machine.calls_log.exists() else []


@pytest.fixture
def user_kubeconfig(project):  # noqa: F811
    """The user's own ~/.kube/config (HOME is the project's parent in `context`): it must never change."""
    path = project.parent / ".kube" / "config"
    path.parent.mkdir()
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: work\n")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    yield path
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before, "the user's kubeconfig was touched"


def test_kubeconfig_of_a_kind_stack_is_private_and_only_its_export_line_is_printed(
        project, lab, user_kubeconfig, capfd):  # noqa: F811
    ctx = context(project, lab)
    assert cli.main(["kubeconfig", "l7"], ctx) == 0
    path = project / ".lab" / "kube" / "l7.kubeconfig"
    assert path.read_text() == KIND_KUBECONFIG
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    printed = ctx.out.getvalue()
    assert printed.splitlines()[-1] == f"export KUBECONFIG={path}"
    assert all(line.startswith(("#", "export ")) for line in printed.splitlines()), "eval reads it"
    terminal = capfd.readouterr()
    assert SECRET not in printed + terminal.out + terminal.err
    assert terminal.out == terminal.err == ""  # no tool progress when nothing is installed


def test_kubeconfig_is_rewritten_private_even_over_a_readable_leftover(project, lab):  # noqa: F811
    path = project / ".lab" / "kube" / "l7.kubeconfig"
    path.parent.mkdir(parents=True)
    path.write_text("old")
    path.chmod(0o644)
    assert cli.main(["kubeconfig", "l7"], context(project, lab)) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == KIND_KUBECONFIG


def test_an_existing_target_selects_its_context_in_front_of_the_users_own_files(project, lab, tmp_path):  # noqa: F811
    (project / "stacks" / "Pulumi.gke.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: gke_lab\n")
    mine, theirs = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for path in (mine, theirs):
        path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: work\n")
    before = [path.read_bytes() for path in (mine, theirs)]
    ctx = context(project, lab, KUBECONFIG=f"{mine}{os.pathsep}{theirs}")
    assert cli.main(["kubeconfig", "gke"], ctx) == 0
    lab_file = project / ".lab" / "kube" / "gke.kubeconfig"
    assert yaml.safe_load(lab_file.read_text()) == {"apiVersion": "v1", "kind": "Config", "current-context": "gke_lab"}
    assert stat.S_IMODE(lab_file.stat().st_mode) == 0o600
    assert ctx.out.getvalue().splitlines()[-1] == f"export KUBECONFIG={lab_file}:{mine}:{theirs}"
    assert [path.read_bytes() for path in (mine, theirs)] == before
    # The stack's own kubeconfigPath wins over $KUBECONFIG, as for the program.
    (project / "stacks" / "Pulumi.gke.yaml").write_text(
        "config:\n  istio-ambient-lab:target: existing\n  istio-ambient-lab:kubeContext: gke_lab\n"
        f"  istio-ambient-lab:kubeconfigPath: {theirs}\n")
    assert cli.main(["kubectl", "gke", "get", "nodes"], ctx) == 0
    assert tool_calls(lab) == [f"kubectl get nodes | {lab_file}:{theirs}"]


def test_into_user_config_is_kinds_own_export_and_only_when_asked(project, lab):  # noqa: F811
    ctx = context(project, lab)
    assert cli.main(["kubeconfig", "l7", "--into-user-config"], ctx) == 0
    assert tool_calls(lab) == ["kind export kubeconfig --name ambient-l7 | "]
    assert "Added context kind-ambient-l7 to your kubeconfig" in ctx.out.getvalue()


def test_kubectl_gets_every_argument_and_the_stacks_kubeconfig(project, lab, user_kubeconfig, capfd):  # noqa: F811
    argv = ["kubectl", "l7", "-n", "default", "get", "pods", "-o", "json", "--help"]
    assert cli.main(argv, context(project, lab)) == 0
    assert tool_calls(lab) == [f"kubectl -n default get pods -o json --help | {project}/.lab/kube/l7.kubeconfig"]
    assert capfd.readouterr().out == "kubectl ran\n", "stdout is kubectl's alone"


def test_istioctl_of_the_stacks_version_on_path_is_used_with_the_stacks_kubeconfig(project, lab):  # noqa: F811
    assert cli.main(["istioctl", "l7", "ztunnel-config", "workloads"], context(project, lab)) == 0
    assert tool_calls(lab) == [f"istioctl ztunnel-config workloads | {project}/.lab/kube/l7.kubeconfig"]


def test_istioctl_of_another_version_is_unused_and_unpinned_needs_the_trust_switch(project, lab, capsys):  # noqa: F811
    istioctl(lab, "1.30.5")
    assert cli.main(["istioctl", "l7", "version"], context(project, lab)) == 1
    assert tool_calls(lab) == []
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "No SHA-256 of istioctl v1.31.1 for linux/amd64 is pinned in lab/tools.py: install istioctl v1.31.1 yourself "
        "and put it on your PATH, or set LAB_TRUST_PUBLISHED_CHECKSUMS=1 to trust the checksum file published with "
        "the release alone.")
    assert len(err.splitlines()) == 1, "no \"installing\" line when nothing can be installed"


def istioctl_archive(script: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in (("istioctl", script.encode()), ("sub/istioctl", b"not me")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def test_istioctl_installs_per_version_from_the_release_checksum_when_trusted(project, lab, server):  # noqa: F811
    (lab.bin.folder / "istioctl").unlink()
    archive = istioctl_archive(f'#!/bin/sh\necho "installed $* | $KUBECONFIG" >> {lab.calls_log}\n')
    asset = "/1.31.1/istioctl-1.31.1-linux-amd64.tar.gz"
    server.files[asset] = archive
    digest = hashlib.sha256(archive).hexdigest()
    server.files[asset + ".sha256"] = f"{digest} istioctl-1.31.1-linux-amd64.tar.gz\n".encode()
    ctx = context(project, lab, LAB_DOWNLOAD_BASE_ISTIOCTL=server.url, LAB_TRUST_PUBLISHED_CHECKSUMS="1")
    assert cli.main(["istioctl", "l7", "waypoint", "list"], ctx) == 0
    installed = project / ".lab" / "tools" / "istio-1.31.1"
    assert sorted(p.name for p in installed.iterdir()) == ["istioctl"]
    assert tool_calls(lab) == [f"installed waypoint list | {project}/.lab/kube/l7.kubeconfig"]
    assert server.requests == [asset + ".sha256", asset]


def test_an_unknown_stack_is_one_sentence(project, lab, capsys):  # noqa: F811
    assert cli.main(["kubectl", "l8", "get", "pods"], context(project, lab)) == 1
    assert capsys.readouterr().err == (
        "There is no stack named l8 (no stacks/Pulumi.l8.yaml): use one of l4-only, l7, or create it with "
        "`./lab.sh up l8 --new`.\n")
    assert tool_calls(lab) == []


def test_a_kind_stack_that_is_not_up_is_one_sentence(project, lab, capsys):  # noqa: F811
    assert cli.main(["istioctl", "l4-only", "version"], context(project, lab)) == 1
    assert capsys.readouterr().err == (
        "The lab of stack l4-only is not up (kind has no cluster named ambient-l4-only): run `./lab.sh up l4-only` "
        "first.\n")
    assert not (project / ".lab" / "kube" / "l4-only.kubeconfig").exists()


def test_a_missing_kubectl_that_cannot_be_fetched_is_one_sentence(project, lab, capsys):  # noqa: F811
    (lab.bin.folder / "kubectl").unlink()
    ctx = context(project, lab, LAB_DOWNLOAD_BASE_KUBECTL="https://127.0.0.1:9")
    assert cli.main(["kubectl", "l7", "get", "pods"], ctx) == 1
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "check your network connection or proxy, or install kubectl v1.35.0 or newer yourself and put it on your PATH.")


def test_kubectl_without_a_stack_is_a_usage_error(project, lab, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit_:
        cli.main(["kubectl"], context(project, lab))
    assert exit_.value.code == 2 and "stack" in capsys.readouterr().err


def test_the_lab_kubeconfig_folder_is_ignored_by_git():
    ignored = (access.Path(cli.__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert ".lab/" in ignored


def test_istioctl_release_layout_and_pins():
    release = tools.istioctl_release("1.31.1")
    base = release.base_url
    assert f"{base}/{release.asset_path('darwin', 'amd64')}" == (
        "https://github.com/istio/istio/releases/download/1.31.1/istioctl-1.31.1-osx-amd64.tar.gz")
    assert f"{base}/{release.checksums_path('linux', 'arm64')}" == (
        "https://github.com/istio/istio/releases/download/1.31.1/istioctl-1.31.1-linux-arm64.tar.gz.sha256")
    assert release.exact and release.archive and release.archive_dir == ""
    assert release.base_url_variable == "LAB_DOWNLOAD_BASE_ISTIOCTL"
    for version, digests in tools.ISTIOCTL_SHA256.items():
        assert set(digests) == set(tools.PLATFORMS), version
        assert all(d is None or (len(d) == 64 and d == d.lower()) for d in digests.values()), version
    # None is pinned yet: no two agreeing public copies were found (lab/tools.py says where the single ones are).
    assert {p: d for digests in tools.ISTIOCTL_SHA256.values() for p, d in digests.items() if d} == {}
    assert set(tools.istioctl_release("9.9.9").sha256.values()) == {None}
    from lab import catalog
    assert catalog.ISTIO_VERSION in tools.ISTIOCTL_SHA256, "bumping Istio means looking for istioctl digests too"


def test_shell_starts_the_users_shell_on_the_stack_with_istioctl_first_on_path(project, lab):  # noqa: F811
    seen = lab.calls_log.parent / "shell.txt"
    shell = lab.bin.add("myshell", f'printf "%s\\n%s\\n" "$KUBECONFIG" "$PATH" > {seen}')
    ctx = context(project, lab, SHELL=str(shell))
    assert cli.main(["shell", "l7"], ctx) == 0
    kubeconfig, path = seen.read_text().splitlines()
    assert kubeconfig == f"{project}/.lab/kube/l7.kubeconfig"
    # The user's istioctl is 1.31.1, the stack's version, so its folder comes first, then the lab's tools.
    assert path.split(os.pathsep)[:2] == [lab.bin.path, str(project / ".lab" / "tools")]
    assert "Your own kubeconfig is untouched." in ctx.out.getvalue()
