"""lab.cluster_identity: who a context's cluster is, as the program records it and ./lab.sh compares it."""

from __future__ import annotations

import json
import subprocess

from lab import cluster_identity
from lab.cluster_identity import Identity


def runner(uid: str | None, server: str = "https://lab:6443"):
    asked = []

    def run(argv, env=None, cwd=None, timeout=120):
        asked.append((list(argv), dict(env or {})))
        if "kube-system" in argv:
            if uid is None:
                return subprocess.CompletedProcess(argv, 1, "", "error: You must be logged in to the server\n")
            return subprocess.CompletedProcess(argv, 0, uid + "\n", "")
        return subprocess.CompletedProcess(argv, 0, server + "\n", "")
    return run, asked


def test_the_identity_is_the_kube_system_uid_and_the_server_of_that_context():
    run, asked = runner("3f2a")
    found = cluster_identity.read(run, {"KUBECONFIG": "/k/a.yaml"}, "minikube", "/k/lab.yaml")
    assert found == Identity("3f2a", "https://lab:6443")
    assert [argv[:5] for argv, _ in asked] == [["kubectl", "--kubeconfig", "/k/lab.yaml", "--context", "minikube"]] * 2
    assert asked[1][0][5:] == ["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]


def test_a_cluster_that_does_not_answer_is_an_error_with_kubectls_reason():
    run, _ = runner(None)
    try:
        cluster_identity.read(run, {}, "minikube")
    except cluster_identity.IdentityError as error:
        assert str(error) == "error: You must be logged in to the server"
    else:
        raise AssertionError("no identity without an answer")


def test_a_record_round_trips_and_anything_else_is_no_record():
    record = json.dumps(Identity("3f2a", "https://lab:6443").as_record())
    assert cluster_identity.from_record(record) == Identity("3f2a", "https://lab:6443")
    assert cluster_identity.from_record(json.loads(record)) == Identity("3f2a", "https://lab:6443")
    for nothing in (None, "", "done", "{}", json.dumps({"kubeSystemUid": ""}), ["3f2a"]):
        assert cluster_identity.from_record(nothing) is None


def test_the_command_prints_the_record_or_one_sentence(monkeypatch, capsys):
    run, _ = runner("3f2a")
    monkeypatch.setattr(cluster_identity, "run_captured", run)
    assert cluster_identity.main(["--context", "minikube"]) == 0
    assert json.loads(capsys.readouterr().out) == {"kubeSystemUid": "3f2a", "server": "https://lab:6443"}
    run, _ = runner(None)
    monkeypatch.setattr(cluster_identity, "run_captured", run)
    assert cluster_identity.main(["--context", "minikube"]) == 1
    assert capsys.readouterr().err == (
        "The cluster of context minikube could not be identified (error: You must be logged in to the server): check "
        "that it answers with `kubectl --context minikube get namespace kube-system`, then run up again.\n")


def test_a_rerun_on_the_same_cluster_keeps_the_stored_record_even_when_the_server_moved(monkeypatch, capsys):
    # pulumi-command reruns the create on any change of its inputs (another kubeconfig file, another context name)
    # and hands it the stored stdout: the record stays the one the first up made.
    stored = json.dumps({"kubeSystemUid": "3f2a", "server": "https://old:6443"})
    monkeypatch.setenv("PULUMI_COMMAND_STDOUT", stored)
    run, _ = runner("3f2a", server="https://new:6443")
    monkeypatch.setattr(cluster_identity, "run_captured", run)
    assert cluster_identity.main(["--context", "minikube"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(stored)


def test_a_rerun_that_reaches_another_cluster_fails_and_never_overwrites_the_record(monkeypatch, capsys):
    monkeypatch.setenv("PULUMI_COMMAND_STDOUT", json.dumps({"kubeSystemUid": "3f2a", "server": "https://lab:6443"}))
    run, _ = runner("9c1d", server="https://prod:6443")
    monkeypatch.setattr(cluster_identity, "run_captured", run)
    assert cluster_identity.main(["--context", "minikube"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""  # a failed update keeps the state's old stdout
    assert printed.err == (
        "Context minikube now reaches another cluster (kube-system UID 9c1d, server https://prod:6443) than the one "
        "this stack was brought up on (kube-system UID 3f2a, server https://lab:6443): point the stack's kubeContext "
        "and kubeconfig (or your KUBECONFIG) back at that cluster, or run `./lab.sh destroy` for this stack before "
        "bringing it up elsewhere.\n")


def test_a_first_run_records_the_cluster_whatever_else_the_environment_holds(monkeypatch, capsys):
    monkeypatch.setenv("PULUMI_COMMAND_STDOUT", "not a record")
    run, _ = runner("9c1d")
    monkeypatch.setattr(cluster_identity, "run_captured", run)
    assert cluster_identity.main(["--context", "minikube"]) == 0
    assert json.loads(capsys.readouterr().out)["kubeSystemUid"] == "9c1d"
