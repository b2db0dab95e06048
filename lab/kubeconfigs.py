"""Which kubeconfig the Kubernetes provider gets for an existing cluster.

kubectl reads ``KUBECONFIG=a:b`` as a list of files and merges them; the Pulumi Kubernetes provider does not: its
Python SDK passes ``$KUBECONFIG`` on as the ``kubeconfig`` input, and the provider takes any string that is not the
path of one file for kubeconfig *content*, so ``a:b`` fails to parse and the cluster looks unreachable. The lab
therefore resolves the files itself, as kubectl would, and hands the provider either one file (the one that holds
the context, its cluster and its user: nothing secret enters the state) or, when they are spread over several
files, a merged config of just that context, which the program keeps secret.

Plain Python, no Pulumi import: the program and the tests call it alike.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.catalog import LAB_SCRIPT

# Fields that name a file; a relative one is relative to the kubeconfig that holds it (client-go's rule), so a
# merged config written elsewhere must carry them absolute.
DEFAULT_KUBECONFIG = "~/.kube/config"  # kubectl's and the provider's file when KUBECONFIG is unset
_FILE_FIELDS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


class KubeconfigError(ValueError):
    """The context is in none of the kubeconfig files; the message says what to do."""


@dataclass(frozen=True)
class ProviderKubeconfig:
    """Exactly one of ``path`` (an absolute file to read) and ``content`` (a merged config, secret)."""

    path: str | None = None
    content: str | None = None


def kubeconfig_files(env: Mapping[str, str]) -> list[str]:
    """The files of ``KUBECONFIG`` in order, empty entries dropped, as kubectl lists them."""
    return [part for part in env.get("KUBECONFIG", "").split(os.pathsep) if part]


def _absolute_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def absolute_files(kubeconfig_path: str | None, env: Mapping[str, str]) -> list[str]:
    """The kubeconfig files that reach the stack's cluster now, absolute: the stack's file, else ``KUBECONFIG``'s,
    else ~/.kube/config. Written into the state, they keep meaning these files whatever a later shell exports."""
    if kubeconfig_path:
        return [_absolute_path(kubeconfig_path)]
    return [_absolute_path(path) for path in kubeconfig_files(env)] or [_absolute_path(DEFAULT_KUBECONFIG)]


def _load(path: str) -> dict:
    try:
        loaded = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}  # kubectl skips a missing file too; an unreadable one cannot hold the context
    return loaded if isinstance(loaded, dict) else {}


def _absolute(entry: dict, section: str, folder: Path) -> dict:
    inner = dict(entry.get(section) or {})
    for key in _FILE_FIELDS[section]:
        value = inner.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            inner[key] = str(folder / value)
    return {**entry, section: inner}


def for_provider(context: str, kubeconfig_path: str | None, env: Mapping[str, str]) -> ProviderKubeconfig:
    """What the provider should read to reach ``context``.

    Args:
        context: The stack's kubeContext.
        kubeconfig_path: The stack's kubeconfigPath (absolute), or None for ``$KUBECONFIG`` / ~/.kube/config.
        env: The environment the program runs in.

    Raises:
        KubeconfigError: ``KUBECONFIG`` lists several files and none of them defines the context.
    """
    files = absolute_files(kubeconfig_path, env)
    if len(files) == 1:
        # Never empty: the provider would read whatever KUBECONFIG the shell of a later `destroy` exports.
        return ProviderKubeconfig(path=files[0])
    # client-go's merge: for each name, the first file that defines it wins.
    found: dict[str, dict[str, tuple[str, dict]]] = {"contexts": {}, "clusters": {}, "users": {}}
    for path in files:
        for section, named in found.items():
            for entry in _load(path).get(section) or []:
                if isinstance(entry, dict) and entry.get("name") and entry["name"] not in named:
                    named[entry["name"]] = (os.path.abspath(os.path.expanduser(path)), entry)
    if context not in found["contexts"]:
        raise KubeconfigError(
            f"No file in KUBECONFIG ({os.pathsep.join(files)}) defines the context {context}: set kubeContext to one "
            f"of `kubectl config get-contexts -o name`, or name the file with `{LAB_SCRIPT} pulumi config set "
            "istio-ambient-lab:kubeconfigPath FILE`.")
    context_file, context_entry = found["contexts"][context]
    body = context_entry.get("context") or {}
    cluster = found["clusters"].get(body.get("cluster", ""))
    user = found["users"].get(body.get("user", ""))
    if all(part is None or part[0] == context_file for part in (cluster, user)):
        return ProviderKubeconfig(path=context_file)
    merged = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "contexts": [context_entry],
        "clusters": [_absolute(cluster[1], "cluster", Path(cluster[0]).parent)] if cluster else [],
        "users": [_absolute(user[1], "user", Path(user[0]).parent)] if user else [],
    }
    return ProviderKubeconfig(content=yaml.safe_dump(merged, sort_keys=False))


def kubectl_command(context: str, kubeconfig_path: str | None, env: Mapping[str, str]) -> str:
    """The start of a kubectl command line that reaches the lab's cluster whatever the user's shell has selected:
    its context always, and its kubeconfig (the stack's file, or the KUBECONFIG the program saw)."""
    words = ["kubectl", "--context", context]
    if kubeconfig_path:
        return shlex.join([*words, "--kubeconfig", kubeconfig_path])
    files = kubeconfig_files(env)
    if files:
        return f"KUBECONFIG={shlex.quote(os.pathsep.join(files))} {shlex.join(words)}"
    return shlex.join(words)
