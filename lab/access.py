"""Hands on a stack's cluster: a kubeconfig the user's shell can use, and istioctl at the stack's Istio version.

The kubeconfig lives in ``.lab/kube/<stack>.kubeconfig`` (folder 0700, file 0600, under the git-ignored ``.lab/``):

- kind target: kind's kubeconfig of the stack's cluster, credentials included, so it is never printed;
- existing target: a file that only names the stack's context (``current-context``), put in front of the user's own
  kubeconfig files in ``KUBECONFIG``. kubectl and istioctl merge the files and take the first ``current-context``
  they meet, so the stack's context is selected without copying the user's credentials or editing their files.

Either way the user's ``~/.kube/config`` is left alone; ``KUBECONFIG`` alone points a command (or a shell) at the lab.
This module does not import ``lab.cli``, which calls it.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import bootstrap, private, tools
from lab import config as lab_config
from lab.bootstrap import LabError, Runner
from lab.preflight import LAB_SCRIPT


@dataclass(frozen=True)
class Access:
    """What a command needs to reach a stack's cluster."""

    stack: str
    kubeconfig: Path  # the lab's own file for the stack
    files: tuple[str, ...]  # KUBECONFIG's files in order, the lab's first
    context: str

    @property
    def kubeconfig_variable(self) -> str:
        """The value of KUBECONFIG that reaches the stack's cluster."""
        return os.pathsep.join(self.files)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with KUBECONFIG pointing at the stack's cluster."""
        return {**base, "KUBECONFIG": self.kubeconfig_variable}

    @property
    def export_line(self) -> str:
        """The shell line that gives the current shell this access."""
        return f"export KUBECONFIG={shlex.quote(self.kubeconfig_variable)}"


def stack_file(root: Path, stack: str) -> Path:
    """Where a stack's settings live: ``<stackConfigDir>/Pulumi.<stack>.yaml``."""
    try:
        project = yaml.safe_load((root / "Pulumi.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        project = {}
    return root / str(project.get("stackConfigDir", ".")) / f"Pulumi.{stack}.yaml"


def require_known_stack(root: Path, stack: str) -> None:
    """Stop with a sentence when no stack file of that name exists (a typo would otherwise read as the defaults,
    and `up` would quietly make a new stack and cluster of it).

    Raises:
        LabError: The stack is unknown; the sentence lists the known ones and how to make a new one.
    """
    path = stack_file(root, stack)
    if path.is_file():
        return
    known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in path.parent.glob("Pulumi.*.yaml"))
    raise LabError(f"There is no stack named {stack} (no {path.relative_to(root)}): use one of "
                   f"{', '.join(known) or 'none yet'}, or create it with `{LAB_SCRIPT} up {stack} --new`.")


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner alone, replacing any earlier one whole (never a half-written kubeconfig)."""
    private.write_private(path, text)


def _user_kubeconfig_files(config: lab_config.LabConfig, env: Mapping[str, str]) -> list[str]:
    """The user's kubeconfig files as kubectl would read them: the stack's kubeconfigPath, else $KUBECONFIG, else
    ~/.kube/config."""
    if config.kubeconfig_path:
        return [os.path.abspath(os.path.expanduser(config.kubeconfig_path))]
    listed = [part for part in env.get("KUBECONFIG", "").split(os.pathsep) if part]
    if listed:
        return [os.path.abspath(os.path.expanduser(part)) for part in listed]
    return [str(Path(env.get("HOME") or Path.home()) / ".kube" / "config")]


def not_up(stack: str, reason: str) -> LabError:
    return LabError(f"The lab of stack {stack} is not up ({reason.rstrip('.')}): run `{LAB_SCRIPT} up {stack}` first.")


def write_kubeconfig(lab_dir: Path, stack: str, config: lab_config.LabConfig, env: Mapping[str, str]) -> Access:
    """Write the stack's kubeconfig under ``lab_dir/kube`` and say how to use it.

    Args:
        lab_dir: The project's ``.lab`` folder.
        stack: The stack's name.
        config: The stack's configuration.
        env: The user's environment (PATH finds kind; KUBECONFIG and HOME find an existing target's files).

    Raises:
        LabError: kind is missing, or the stack's kind cluster does not exist.
    """
    path = lab_dir / "kube" / f"{stack}.kubeconfig"
    if config.target != "kind":
        context = str(config.kube_context)
        _write_private(path, yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "current-context": context}))
        return Access(stack, path, (str(path), *_user_kubeconfig_files(config, env)), context)
    # Imported here: lab.cli imports this module, and runs without the verify package (cmd_verify says so).
    from verify.cluster import ClusterError, KindClusterMissing, kind_kubeconfig

    kind = shutil.which("kind", path=env.get("PATH", ""))
    if kind is None:
        raise LabError(f"kind is not installed: run `{LAB_SCRIPT} up {stack}`, which installs it.")
    try:
        # verify's helper: kind's kubeconfig in a private temporary file, errors without its content.
        with kind_kubeconfig(config.cluster_name, kind=kind) as temporary:
            _write_private(path, Path(temporary).read_text(encoding="utf-8"))
    except KindClusterMissing:
        raise not_up(stack, f"kind has no cluster named {config.cluster_name}") from None
    except ClusterError as error:
        raise not_up(stack, str(error)) from None
    return Access(stack, path, (str(path),), f"kind-{config.cluster_name}")


def ensure_istioctl(
    tools_dir: Path,
    version: str,
    *,
    env: Mapping[str, str],
    run: Runner = bootstrap.run_captured,
    platform_: tuple[str, str] | None = None,
    progress: Callable[[str], None] = print,
) -> Path:
    """istioctl of exactly ``version``: the user's own when it is that version, else the release's, verified and
    installed into ``tools_dir/istio-<version>/`` (one folder per version, so stacks of different versions coexist).

    Raises:
        LabError: Not on PATH at that version and not installable (no pinned digest and no trust switch, a failed
            download or a digest mismatch); the sentence says what to do.
    """
    release = tools.istioctl_release(version)
    folder = tools_dir / f"istio-{version}"
    found = bootstrap.find_tool(release, os.pathsep.join([str(folder), env.get("PATH", "")]), run)
    if found is not None and found.satisfies(release):
        return found.path
    os_name, arch = platform_ or bootstrap.host_platform()
    bootstrap.refuse_unpinned(release, os_name, arch, env)  # never "installing" when nothing will be
    reason = "not found" if found is None else f"{found.path} is {bootstrap.version_text(found.version)}"
    progress(f"istioctl: {reason}, installing v{version} (the stack's istioVersion) for {os_name}/{arch} into {folder}")
    return bootstrap.install(release, folder, os_name, arch, env)


def command_text(stack: str, tool: str, args: Sequence[str]) -> str:
    """How the user runs ``tool args`` against a stack with the lab: ``./lab.sh kubectl l7 get pods``."""
    return shlex.join([LAB_SCRIPT, tool, stack, *args])
