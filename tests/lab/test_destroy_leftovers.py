"""The clean-up commands destroy's last line prints on an existing cluster run as printed, in a POSIX shell.

Found by the cluster tier (tests/cluster/test_existing.py runs them against a real API server): since the state
records the kubeconfig files an existing stack was brought up with, the commands start with `KUBECONFIG=... kubectl`,
and that prefix after `xargs` is no command (xargs execs its first word: "No such file or directory", exit 127).
"""

from __future__ import annotations

import os
import re
import subprocess

from lab import catalog, cli, outputs
from lab import config as lab_config

FAKE_KUBECTL = """#!/bin/sh
echo "KUBECONFIG=$KUBECONFIG $*" >> "{log}"
case "$*" in
  *"get crd -o name"*) printf '%s\\n' customresourcedefinition.apiextensions.k8s.io/gateways.gateway.networking.k8s.io \
    customresourcedefinition.apiextensions.k8s.io/peerauthentications.security.istio.io \
    customresourcedefinition.apiextensions.k8s.io/wasmplugins.extensions.istio.io ;;
esac
"""


def _run_printed(tmp_path, recorded: dict) -> tuple[list[subprocess.CompletedProcess], list[str]]:
    config = lab_config.load({"target": "existing", "kubeContext": "renamed-since"}, "gke")
    line = cli.existing_leftovers(config, recorded)
    commands = re.findall(r"`([^`]+)`", line)
    assert len(commands) == 3, line
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.log"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(log=log))
    kubectl.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KUBECONFIG": "/shell/elsewhere.yaml"}
    ran = [subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
           for command in commands]
    return ran, log.read_text().splitlines()


def test_the_printed_commands_run_as_printed_with_the_states_kubeconfig_files(tmp_path):
    recorded = {outputs.TARGET: "existing", outputs.KUBE_CONTEXT: "minikube",
                outputs.KUBECONFIG_FILES: "/home/me/contexts.yaml:/home/me/credentials.yaml",
                outputs.GATEWAY_API_CRDS: catalog.GATEWAY_API_VERSION}

    ran, calls = _run_printed(tmp_path, recorded)

    assert [(r.returncode, r.stderr) for r in ran] == [(0, "")] * 3
    files = "KUBECONFIG=/home/me/contexts.yaml:/home/me/credentials.yaml"
    assert calls == [
        f"{files} --context minikube get crd -o name",
        f"{files} --context minikube delete customresourcedefinition.apiextensions.k8s.io/"
        "peerauthentications.security.istio.io customresourcedefinition.apiextensions.k8s.io/"
        "wasmplugins.extensions.istio.io",
        f"{files} --context minikube delete configmap --all-namespaces --field-selector "
        "metadata.name=istio-ca-root-cert",
        f"{files} --context minikube delete -f {catalog.gateway_api_crds_url(catalog.GATEWAY_API_VERSION)}",
    ]


def test_a_state_without_recorded_files_prints_commands_that_run_too(tmp_path):
    """A state from before the lab recorded the files: the stack file's kubeconfig (none here), the shell's."""
    ran, calls = _run_printed(tmp_path, {outputs.TARGET: "existing", outputs.KUBE_CONTEXT: "minikube",
                                         outputs.GATEWAY_API_CRDS: catalog.GATEWAY_API_VERSION})

    assert [r.returncode for r in ran] == [0, 0, 0]
    assert calls[1].startswith("KUBECONFIG=/shell/elsewhere.yaml --context minikube delete "
                               "customresourcedefinition.apiextensions.k8s.io/peerauthentications"), calls
