"""A KUBECONFIG of several files reaches the provider as one file or a merged config, never as the raw `a:b`."""

from __future__ import annotations

import os

import pytest
import yaml

from lab.kubeconfigs import KubeconfigError, ProviderKubeconfig, absolute_files, for_provider, kubectl_command

CONTEXT = "prod-lab"


def write(path, **sections) -> str:
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **sections}))
    return str(path)


def context(name=CONTEXT, cluster="prod", user="me"):
    return {"name": name, "context": {"cluster": cluster, "user": user}}


CLUSTER = {"name": "prod", "cluster": {"server": "https://prod:6443", "certificate-authority": "ca.crt"}}
USER = {"name": "me", "user": {"client-key": "keys/me.key", "token": "s3cr3t"}}


def test_a_chosen_file_or_a_single_kubeconfig_goes_as_its_path():
    assert for_provider(CONTEXT, "/abs/prod.yaml", {"KUBECONFIG": "/a:/b"}) == ProviderKubeconfig(path="/abs/prod.yaml")
    assert for_provider(CONTEXT, None, {"KUBECONFIG": "/only.yaml"}) == ProviderKubeconfig(path="/only.yaml")
    # No KUBECONFIG: kubectl's default file, by its absolute name. An empty input would make the provider read the
    # KUBECONFIG of whichever shell runs a later destroy.
    assert for_provider(CONTEXT, None, {}) == ProviderKubeconfig(path=os.path.expanduser("~/.kube/config"))


def test_the_files_recorded_for_the_cluster_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_files(None, {"KUBECONFIG": f"a.yaml{os.pathsep}{os.pathsep}/b.yaml"}) == [
        str(tmp_path / "a.yaml"), "/b.yaml"]
    assert absolute_files("/abs/prod.yaml", {"KUBECONFIG": "a.yaml"}) == ["/abs/prod.yaml"]
    assert absolute_files(None, {}) == [os.path.expanduser("~/.kube/config")]


def test_several_files_one_of_which_holds_everything_gives_that_file(tmp_path):
    other = write(tmp_path / "other", contexts=[context("dev")], clusters=[{**CLUSTER, "name": "dev"}])
    whole = write(tmp_path / "whole", contexts=[context()], clusters=[CLUSTER], users=[USER])
    missing = str(tmp_path / "gone")  # kubectl skips a file that does not exist
    chosen = for_provider(CONTEXT, None, {"KUBECONFIG": os.pathsep.join([missing, other, "", whole])})
    assert chosen == ProviderKubeconfig(path=whole)


def test_a_context_spread_over_files_is_merged_as_kubectl_would(tmp_path):
    (tmp_path / "creds").mkdir()
    contexts = write(tmp_path / "contexts", contexts=[context()])
    clusters = write(tmp_path / "creds" / "clusters", clusters=[CLUSTER, {"name": "dev", "cluster": {}}])
    users = write(tmp_path / "creds" / "users", users=[USER])
    shadowed = write(tmp_path / "later", users=[{"name": "me", "user": {"token": "later-file-loses"}}])
    chosen = for_provider(CONTEXT, None, {"KUBECONFIG": os.pathsep.join([contexts, clusters, users, shadowed])})
    assert chosen.path is None
    merged = yaml.safe_load(chosen.content)
    assert merged["current-context"] == CONTEXT
    assert merged["contexts"] == [context()]
    # Only the context's own cluster and user; relative files made absolute against the file that named them.
    authority = str(tmp_path / "creds" / "ca.crt")
    assert merged["clusters"] == [{"name": "prod", "cluster": {"server": "https://prod:6443",
                                                               "certificate-authority": authority}}]
    assert merged["users"] == [{"name": "me", "user": {"client-key": str(tmp_path / "creds" / "keys/me.key"),
                                                       "token": "s3cr3t"}}]


def test_a_context_in_no_file_is_one_sentence_with_the_way_out(tmp_path):
    first = write(tmp_path / "a", contexts=[context("dev")])
    second = str(tmp_path / "b")
    with pytest.raises(KubeconfigError) as caught:
        for_provider(CONTEXT, None, {"KUBECONFIG": f"{first}:{second}"})
    assert str(caught.value) == (
        f"No file in KUBECONFIG ({first}:{second}) defines the context prod-lab: set kubeContext to one of `kubectl "
        "config get-contexts -o name`, or name the file with `./lab.sh pulumi config set "
        "istio-ambient-lab:kubeconfigPath FILE`.")


def test_kubectl_command_names_the_context_and_the_kubeconfig():
    assert kubectl_command("c", None, {}) == "kubectl --context c"
    assert kubectl_command("c", "/k/my file", {"KUBECONFIG": "/x"}) == "kubectl --context c --kubeconfig '/k/my file'"
    assert kubectl_command("c", None, {"KUBECONFIG": "/a:/b"}) == "KUBECONFIG=/a:/b kubectl --context c"
