"""verify reaches the same kubeconfig the Kubernetes provider reads."""

import os

from verify.__main__ import resolve_kubeconfig
from verify.cluster import Kubectl


def test_tilde_is_expanded_because_kubectl_does_not(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    assert resolve_kubeconfig("~/.kube/prod") == "/home/me/.kube/prod"


def test_several_files_in_kubeconfig_are_merged_by_kubectl(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(["/a", "/b"]))
    assert resolve_kubeconfig(None) is None
    kube = Kubectl(None, "ctx")
    assert kube._argv(["get", "nodes"]) == ["kubectl", "--context", "ctx", "get", "nodes"]
    assert kube.command(["get", "nodes"]) == "kubectl --context ctx get nodes"


def test_one_file_in_kubeconfig_is_passed_explicitly(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/a")
    assert resolve_kubeconfig(None) == "/a"
    assert Kubectl("/a", "ctx")._argv(["get", "nodes"])[:3] == ["kubectl", "--kubeconfig", "/a"]


def test_the_cli_passes_no_kubeconfig_flag_when_kubectl_must_merge(monkeypatch):
    from verify.__main__ import open_kubectl, parse_options

    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(["/a", "/b"]))
    with open_kubectl(parse_options(["--mode", "l4-only", "--context", "prod"])) as kube:
        assert kube._argv(["get", "nodes"]) == ["kubectl", "--context", "prod", "get", "nodes"]
