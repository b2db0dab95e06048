"""The commands behind ``./lab.sh``: bring a lab up, check it, verify it, collect diagnostics, tear it down.

Every command runs pulumi against a local file state backend inside the project (``.lab/state``) with a
passphrase generated once into ``.lab/passphrase`` (mode 0600), and finds kind, kubectl and pulumi in
``.lab/tools`` before the user's PATH. Errors end the command with one sentence saying what to do.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from lab import access, bootstrap, catalog, cluster_identity, diagnostics, kind_cluster, kubeconfigs, outputs, preflight
from lab import leaks, local_secrets, private, stack_files, tour
from lab import config as lab_config
from lab.bootstrap import LabError, last_line
from lab.images import DIGESTS_FILE as IMAGE_RECORD
from lab.preflight import LAB_SCRIPT

DEFAULT_STACK = "l4-only"
STACK_DIR = "stacks"  # Pulumi.yaml's stackConfigDir


@dataclass(frozen=True)
class Paths:
    """Where the lab keeps its files inside the project."""

    root: Path

    @property
    def lab(self) -> Path:
        return self.root / ".lab"

    @property
    def state(self) -> Path:
        return self.lab / "state"

    @property
    def tools(self) -> Path:
        return self.lab / "tools"

    @property
    def passphrase(self) -> Path:
        return self.lab / "passphrase"

    @property
    def diagnostics(self) -> Path:
        return self.lab / "diagnostics"


@dataclass
class Context:
    """What a command works with; tests replace the parts that reach the machine."""

    paths: Paths
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    host: preflight.Host = field(default_factory=preflight.Host)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    platform: tuple[str, str] | None = None  # (os, arch) to install tools for; None: this machine

    def say(self, text: str) -> None:
        # Everything the lab prints goes through the leak rule: a tool's message may quote a proxy URL or a token.
        print(leaks.redact(text, local_secrets.known_secrets(self.paths.root)), file=self.out, flush=True)

    def step(self, number: int, total: int, text: str) -> None:
        self.say(f"[{number}/{total}] {text}")

    def detail(self, text: str) -> None:
        self.say(f"      {text}")


# --- Environment -------------------------------------------------------------------------------------------------


def ensure_passphrase(path: Path) -> Path:
    """Create the secrets passphrase once (random, mode 0600); later calls keep it.

    Args:
        path: The passphrase file.

    Returns:
        The same path.
    """
    private.private_dir(path.parent)
    if path.exists() and not path.is_symlink() and path.read_text().strip():
        path.chmod(0o600)
        return path
    # An empty passphrase would encrypt the stack's secrets with nothing; a symlink could point anywhere.
    return private.write_private(path, secrets.token_urlsafe(32) + "\n")


def tool_env(paths: Paths, env: Mapping[str, str]) -> dict[str, str]:
    """The user's environment with the project's tools folder first on PATH."""
    return {**env, "PATH": os.pathsep.join([str(paths.tools), env.get("PATH", "")])}


def pulumi_env(paths: Paths, env: Mapping[str, str]) -> dict[str, str]:
    """The environment pulumi runs in: local file backend, passphrase file, no update check, project tools.

    Creates ``.lab/state`` and the passphrase file when missing.
    """
    private.private_dir(paths.state)  # the passphrase and state live here: the user's alone
    ensure_passphrase(paths.passphrase)
    result = tool_env(paths, env)
    # A passphrase in the user's environment would win over the file; the lab's stacks use the file's.
    result.pop("PULUMI_CONFIG_PASSPHRASE", None)
    result.update(
        PULUMI_BACKEND_URL=paths.state.as_uri(),
        PULUMI_CONFIG_PASSPHRASE_FILE=str(paths.passphrase),
        PULUMI_SKIP_UPDATE_CHECK="true",
    )
    result[stack_files.FALLBACK_ENV] = "true"  # the salt lives in the state, not in the tracked stack file
    return result


def _stream(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """Run a command with its output going straight to the user's terminal."""
    try:
        return subprocess.call(list(argv), env=dict(env), cwd=cwd)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed: run `{LAB_SCRIPT} up` first, which installs it.") from None


# --- What a stack is -------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except yaml.YAMLError:
        raise LabError(f"{path} is not valid YAML: fix it, then run the command again.") from None
    return data if isinstance(data, dict) else {}


def _lab_settings(stack_file: Path) -> dict[str, object]:
    """The lab's keys of a stack file, without the project prefix; each misshapen part stops with one sentence.

    Pulumi itself would refuse these files or read them otherwise than the author meant, and the lab reads the file
    before pulumi runs (the stack may not exist yet): a list for `config:`, a key without its namespace, one of the
    lab's keys under another namespace (a typo of the project's), and a list or mapping where a value is expected.
    """
    try:
        document = yaml.safe_load(stack_file.read_text())
    except FileNotFoundError:
        return {}
    except yaml.YAMLError:
        raise LabError(f"{stack_file} is not valid YAML: fix it, then run the command again.") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise LabError(f"{stack_file} holds a {type(document).__name__}, not a mapping with a `config:` section: "
                       "make it `config:` followed by lines like `  istio-ambient-lab:meshMode: l7`.")
    config = document.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise LabError(f"`config:` in {stack_file} is a {type(config).__name__}, not a mapping of keys to values: "
                       f"write one `{lab_config.PROJECT}:<key>: <value>` line per setting under it.")
    settings = {}
    for key, value in config.items():
        namespace, colon, name = str(key).partition(":")
        if not colon:
            raise LabError(f"{stack_file} sets `{key}` without a namespace, which pulumi refuses: write it as "
                           f"`{lab_config.PROJECT}:{key}`.")
        if namespace != lab_config.PROJECT:
            if name in lab_config.DEFAULTS:
                raise LabError(f"{stack_file} sets `{key}`, which the lab never reads (its keys start with "
                               f"`{lab_config.PROJECT}:`): write it as `{lab_config.PROJECT}:{name}`.")
            continue  # another package's setting (kubernetes:..., pulumi:...): not the lab's to judge
        if isinstance(value, (dict, list)):
            raise LabError(f"`{key}` in {stack_file} is a {'list' if isinstance(value, list) else 'mapping'}, but it "
                           "takes a single value: give it one value, such as the default in Pulumi.yaml.")
        settings[name] = value
    return settings


def stack_config(root: Path, stack: str) -> lab_config.LabConfig:
    """A stack's validated configuration, read from its stack file as the program reads it.

    The files are read directly (not through pulumi) because the stack may not exist in the backend yet;
    ``lab.config`` supplies the project's defaults.

    Raises:
        LabError: A value the program would refuse, with ``lab.config``'s sentence.
    """
    stack_dir = root / str(_read_yaml(root / "Pulumi.yaml").get("stackConfigDir", "."))
    stack_file = stack_dir / f"Pulumi.{stack}.yaml"
    raw = {key: str(value).lower() if isinstance(value, bool) else str(value)
           for key, value in _lab_settings(stack_file).items()}
    try:
        return lab_config.load(raw, stack)
    except lab_config.ConfigError as error:
        raise LabError(f"{str(error).rstrip('.')}: fix it in {stack_file}.") from None


def _checkpoint_holds_resources(path: Path) -> bool:
    """Whether a stack's checkpoint file lists resources or operations under way; True when it cannot be read."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        latest = (json.loads(raw).get("checkpoint") or {}).get("latest") or {}
        return bool(latest.get("resources") or latest.get("pending_operations"))
    except (OSError, ValueError, AttributeError, EOFError, gzip.BadGzipFile):
        return True  # a file this cannot read (zstd, a newer format) may hold a lab: let pulumi decide


def may_be_up(paths: Paths, stack: str) -> bool:
    """Whether the lab's backend may hold anything of the stack, read from its files without pulumi or a download.

    The file backend keeps a stack's checkpoint in ``.pulumi/stacks/<project>/<stack>.json`` (``.json.gz`` or
    ``.json.zst`` when compressed; ``.pulumi/stacks/<stack>.json`` in its older layout) and an update's journal under
    ``.pulumi/journal/`` until the update ends. No checkpoint, or one with no resources and nothing under way, and no
    journal: nothing is up, whatever else ``.lab/state`` holds (any ``./lab.sh pulumi`` call creates the folder).
    """
    bookkeeping = paths.state / ".pulumi"
    places = [Path(lab_config.PROJECT, stack), Path(stack)]
    if any((bookkeeping / "journal" / place).exists() for place in places):
        return True
    for place in places:
        for extension in (".json", ".json.gz", ".json.zst"):
            checkpoint = bookkeeping / "stacks" / place.parent / (place.name + extension)
            if checkpoint.is_file() and _checkpoint_holds_resources(checkpoint):
                return True
    return False


def stack_outputs(ctx: Context, stack: str) -> dict:
    """The stack's outputs, or {} when the stack has never been brought up here."""
    if not ctx.paths.state.is_dir():
        return {}
    result = ctx.host.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack],
        env=pulumi_env(ctx.paths, ctx.env), cwd=ctx.paths.root, timeout=120,
    )
    try:
        values = json.loads(result.stdout) if result.returncode == 0 else {}
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


CLUSTER_COMMAND_URN_SUFFIX = "command:local:Command::kind-cluster"
EXISTING_PROVIDER_URN_SUFFIX = "pulumi:providers:kubernetes::existing"
IDENTITY_COMMAND_URN_SUFFIX = "command:local:Command::cluster-identity"  # components.cluster.IDENTITY_RESOURCE


def _existing_in_state(resources: list) -> dict:
    """An existing cluster's records in the state: the provider's context and the identity recorded at the first
    up, with the kubeconfig files it was measured through."""
    record: dict[str, object] = {}
    for resource in resources:
        urn = str(resource.get("urn", ""))
        if urn.endswith(EXISTING_PROVIDER_URN_SUFFIX):
            context = (resource.get("inputs") or {}).get("context")
            if isinstance(context, str) and context:
                record.update({outputs.TARGET: "existing", outputs.KUBE_CONTEXT: context})
        elif urn.endswith(IDENTITY_COMMAND_URN_SUFFIX):
            identity = cluster_identity.from_record((resource.get("outputs") or {}).get("stdout"))
            files = ((resource.get("inputs") or {}).get("environment") or {}).get("KUBECONFIG")
            if identity and isinstance(files, str) and files:
                record.update({outputs.CLUSTER_IDENTITY: identity.as_record(), outputs.KUBECONFIG_FILES: files})
    return record if outputs.TARGET in record else {}


def _cluster_in_state(exported: dict) -> dict:
    """The kind cluster the state records: its name, owner label and node shape, from the cluster Command itself.

    Outputs are saved only by an up that succeeded, but the Command's stored inputs and stdout are there as soon
    as the cluster was created: after a failed first up too.
    """
    resources = (exported.get("deployment") or {}).get("resources") or []
    # An existing cluster: the provider the state used names its context, and the identity record says which cluster
    # that was (what preflight needs to tell the lab's own Istio from another install after a failed first up, which
    # saved no outputs, and destroy to refuse another cluster of the same context name).
    existing = _existing_in_state(resources)
    if existing:
        return existing
    for resource in resources:
        if not str(resource.get("urn", "")).endswith(CLUSTER_COMMAND_URN_SUFFIX):
            continue
        inputs, stored = resource.get("inputs") or {}, resource.get("outputs") or {}
        triggers = inputs.get("triggers") or []
        record: dict[str, object] = {}
        if len(triggers) == 4:  # [name, node image, workers, ingress host port]: what shapes the nodes
            name, image, workers, port = triggers
            record[outputs.CLUSTER_NAME] = name
            record[outputs.NODE_SHAPE] = {"clusterName": name, "workers": int(workers), "nodeImage": image,
                                          "ingressHostPort": int(port)}
        owner = kind_cluster.owner_in(stored.get("stdout") if isinstance(stored.get("stdout"), str) else None)
        if owner:
            record[outputs.CLUSTER_OWNER] = owner
        return record
    return {}


def stack_record(ctx: Context, stack: str) -> dict:
    """What the stack's state says: its outputs, completed from the state itself where a failed up saved none.

    `pulumi stack export` needs no passphrase (secrets stay encrypted), so a lost passphrase cannot pass for a
    missing stack. {} when nothing was ever brought up here or the stack does not exist.
    """
    if not ctx.paths.state.is_dir():
        return {}
    env = pulumi_env(ctx.paths, ctx.env)
    exported = ctx.host.run(["pulumi", "stack", "export", "--stack", stack], env=env, cwd=ctx.paths.root,
                            timeout=120)
    if exported.returncode != 0:
        if "no stack named" in exported.stderr.lower():
            return {}
        raise LabError(f"pulumi could not read stack {stack} ({last_line(exported.stderr)}): fix that, then run the "
                       "command again.")
    try:
        state = json.loads(exported.stdout)
    except ValueError:
        state = {}
    return {**_cluster_in_state(state if isinstance(state, dict) else {}), **stack_outputs(ctx, stack)}


def _tools_for(config: lab_config.LabConfig) -> tuple[str, ...]:
    return ("kind", "kubectl", "pulumi") if config.target == "kind" else ("kubectl", "pulumi")


def _ensure_tools(ctx: Context, names: Sequence[str]) -> None:
    bootstrap.ensure_tools(
        ctx.paths.tools, names, env=ctx.env, run=ctx.host.run, platform_=ctx.platform, progress=ctx.detail
    )


def _preflight(ctx: Context, stack: str, config: lab_config.LabConfig, adopt: bool,
               recorded: Mapping[str, object] | None = None) -> bool:
    """Run and print the checks; whether all passed. ``recorded``: the stack's outputs, when it was up before."""
    results = preflight.run_checks(
        preflight.Situation(
            stack=stack,
            project_dir=ctx.paths.root,
            env=tool_env(ctx.paths, ctx.env),
            target=config.target,
            cluster_name=config.cluster_name,
            adopt=config.adopt_existing_cluster or adopt,
            ingress_port=config.ingress_host_port,
            tools=[bootstrap.RELEASES[name] for name in _tools_for(config)],
            recorded=recorded or {},
            existing=preflight.ExistingTarget(
                context=str(config.kube_context), kubeconfig_path=config.kubeconfig_path,
                apps_namespace=config.apps_namespace, istio_version=config.istio_version,
                install_gateway_api_crds=config.install_gateway_api_crds, observability=config.observability,
            ) if config.target == "existing" else None,
        ),
        ctx.host,
    )
    ctx.say(preflight.format_results(results))
    return all(result.ok for result in results)


def _collect_diagnostics(ctx: Context, config: lab_config.LabConfig) -> Path:
    folder = diagnostics.collect(
        ctx.paths.diagnostics,
        target=config.target,
        cluster_name=config.cluster_name,
        apps_namespace=config.apps_namespace,
        kubeconfig=config.kubeconfig_path,
        context=config.kube_context,
        env=tool_env(ctx.paths, ctx.env),
        run=ctx.host.run,
    )
    ctx.say((folder / "summary.txt").read_text().rstrip())
    ctx.say(f"Diagnostics: {folder}")
    return folder


# --- Commands ------------------------------------------------------------------------------------------------------


def _nothing_up(ctx: Context, stack: str) -> LabError:
    return LabError(f"Nothing has been brought up here for stack {stack}: run `{LAB_SCRIPT} up {stack}` first.")


def _shape_change(recorded: Mapping[str, object], config: lab_config.LabConfig) -> str:
    """What changed in the node shape since the last up, as "workers 2 -> 1", or "" when nothing did."""
    before = recorded.get(outputs.NODE_SHAPE)
    if not isinstance(before, dict):
        return ""
    now = kind_cluster.node_shape(config)
    return ", ".join(f"{key} {before.get(key)} -> {value}" for key, value in now.items() if before.get(key) != value)


def _bring_back_cluster(ctx: Context, stack: str, config: lab_config.LabConfig, recorded: Mapping[str, object],
                        env: Mapping[str, str]) -> None:
    """Before pulumi runs: the stack's recorded kind cluster is in a state its program can work with.

    A cluster deleted by hand leaves a record that previews against nothing: the record goes (nothing of the
    user's is touched, the cluster and everything in it is gone already). A stopped cluster (Docker or host
    restart) is started, and must then carry this state's owner label.
    """
    name = str(recorded.get(outputs.CLUSTER_NAME) or config.cluster_name)
    if name not in kind_cluster.existing_clusters():
        ctx.detail(f"kind cluster {name} was deleted outside the lab: clearing the stack's record of it")
        _destroy_for_up(ctx, stack, env)
        return
    if kind_cluster.stopped_nodes(name):
        ctx.detail(f"kind cluster {name} is stopped: starting it")
        ctx.detail(kind_cluster.start(name))
        # Started by name: make sure it is the one this stack's state made before pulumi points a provider at it.
        situation = preflight.Situation(stack=stack, project_dir=ctx.paths.root, env=ctx.env, cluster_name=name,
                                        recorded=recorded)
        owner = kind_cluster.cluster_owner(name)
        if not situation.is_ours(owner):
            raise LabError(f"The kind cluster {name} that was started carries the owner label {owner}, not this "
                           f"stack's: stop it with `docker stop {name}-control-plane`, or give this stack another "
                           f"cluster name, then run `{LAB_SCRIPT} up {stack}` again.")
    else:
        ctx.detail(f"kind cluster {name} is running")


def _destroy_for_up(ctx: Context, stack: str, env: Mapping[str, str]) -> None:
    if _stream(["pulumi", "destroy", "--yes", "--stack", stack], env, ctx.paths.root) != 0:
        raise LabError(f"`pulumi destroy` failed: read its output above, fix the cause, then run `{LAB_SCRIPT} up "
                       f"{stack}` again.")


def cmd_up(ctx: Context, stack: str, adopt: bool, recreate: bool = False) -> int:
    """Bring a stack's lab up: tools, preflight, state, stack, its cluster, ``pulumi up``; diagnostics on failure."""
    total = 6
    config = stack_config(ctx.paths.root, stack)
    # Docker, disk and the ingress port before any download: a machine that cannot run the lab fetches nothing.
    machine = preflight.run_machine_checks(
        preflight.Situation(stack=stack, project_dir=ctx.paths.root, env=tool_env(ctx.paths, ctx.env),
                            target=config.target, ingress_port=config.ingress_host_port),
        ctx.host, port_may_be_ours=may_be_up(ctx.paths, stack))
    if not all(result.ok for result in machine):
        ctx.say(preflight.format_results(machine))
        raise LabError(f"Preflight found the problems marked FAIL above before downloading anything: fix them, then "
                       f"run `{LAB_SCRIPT} up {stack}` again.")
    ctx.step(1, total, "tools")
    _ensure_tools(ctx, _tools_for(config))
    recorded = stack_record(ctx, stack)

    ctx.step(2, total, "preflight")
    # A node-shape change needs a new cluster, which through the engine means uninstalling every release one by one
    # through the old cluster first: the lab refuses, or destroys and rebuilds when asked. Decided before the checks,
    # which would otherwise find the old cluster holding the port and stop with no way forward.
    changed = _shape_change(recorded, config) if config.target == "kind" else ""
    if changed and not recreate:
        raise LabError(f"Stack {stack}'s kind cluster changes shape ({changed}), which needs a new cluster: run "
                       f"`{LAB_SCRIPT} up {stack} --recreate` to destroy this lab and build it again, or undo the change.")
    if changed:
        ctx.detail(f"node shape changes ({changed}): destroying the lab to build it again")
        _destroy_for_up(ctx, stack, pulumi_env(ctx.paths, ctx.env))
        recorded = {}
    if not _preflight(ctx, stack, config, adopt, recorded):
        raise LabError(f"Preflight found the problems marked FAIL above: fix them, then run `{LAB_SCRIPT} up "
                       f"{stack}` again.")

    ctx.step(3, total, "state")
    env = pulumi_env(ctx.paths, ctx.env)
    ctx.detail(f"backend {env['PULUMI_BACKEND_URL']}, secrets passphrase in {ctx.paths.passphrase} (mode 0600)")

    ctx.step(4, total, f"stack {stack}")
    selected = ctx.host.run(
        ["pulumi", "stack", "select", "--create", stack, "--secrets-provider", "passphrase"],
        env=env, cwd=ctx.paths.root, timeout=120,
    )
    if selected.returncode != 0:
        raise LabError(f"pulumi could not select or create stack {stack} ({last_line(selected.stderr)}): fix that, "
                       "then run the command again.")

    ctx.step(5, total, "cluster")
    if config.target == "kind" and recorded.get(outputs.CLUSTER_NAME):
        try:
            _bring_back_cluster(ctx, stack, config, recorded, env)
        except kind_cluster.KindError as error:
            raise LabError(str(error)) from None
    else:
        ctx.detail("created by pulumi up" if config.target == "kind" else f"existing cluster, context {config.kube_context}")

    if config.target == "kind" and config.adopt_existing_cluster:
        ctx.detail(f"the stack file sets {preflight.ADOPT_CONFIG_KEY}, which stays set and adopts any kind cluster "
                   f"named {config.cluster_name} on every create: remove it with `{LAB_SCRIPT} pulumi config rm "
                   f"{preflight.ADOPT_CONFIG_KEY} --stack {stack}` once you no longer need it")
    # --adopt is for this up alone: a marker the cluster's create consumes, withdrawn when no create ran. Nothing
    # is stored in the stack, so the next up neither shows a diff nor adopts another cluster of that name.
    env.pop(kind_cluster.ADOPT_NONCE_ENV, None)  # only the nonce of this run's own marker counts
    if adopt and config.target == "kind":
        env[kind_cluster.ADOPT_NONCE_ENV] = kind_cluster.request_adoption(ctx.paths.root, config.cluster_name)
        ctx.detail(f"adopting kind cluster {config.cluster_name} if it exists, for this up only")

    ctx.step(6, total, "pulumi up")
    try:
        code = _stream(["pulumi", "up", "--yes", "--stack", stack], env, ctx.paths.root)
    finally:
        if adopt:
            kind_cluster.withdraw_adoption(ctx.paths.root, config.cluster_name)
    if code != 0:
        folder = _collect_diagnostics(ctx, config)
        raise LabError(f"`pulumi up` failed: read its output above and the diagnostics in {folder}, fix the cause, "
                       f"then run `{LAB_SCRIPT} up {stack}` again.")
    ctx.say(f"The {stack} lab is up: check it with `{LAB_SCRIPT} verify {stack}`.")
    return 0


def _stack_exists(ctx: Context, stack: str, env: Mapping[str, str]) -> bool:
    """Whether the lab's backend holds the stack. A failed select alone says nothing: the stack list decides."""
    if ctx.host.run(["pulumi", "stack", "select", stack], env=env, cwd=ctx.paths.root, timeout=120).returncode == 0:
        return True
    listed = ctx.host.run(["pulumi", "stack", "ls", "--json"], env=env, cwd=ctx.paths.root, timeout=120)
    try:
        names = {entry.get("name") for entry in json.loads(listed.stdout)} if listed.returncode == 0 else None
    except (ValueError, AttributeError):
        names = None
    if names is None:
        raise LabError(f"pulumi could not list the stacks in {ctx.paths.state} ({last_line(listed.stderr)}): fix "
                       f"that, then run `{LAB_SCRIPT} destroy {stack}` again.")
    if stack in names:
        raise LabError(f"pulumi could not select stack {stack}, which exists: run `{LAB_SCRIPT} pulumi stack select "
                       f"{stack}` to see why, fix it, then run `{LAB_SCRIPT} destroy {stack}` again.")
    return False


def _recorded_kubectl(config: lab_config.LabConfig, recorded: Mapping[str, object]) -> tuple[str, str]:
    """The context and kubectl command line the state reached its cluster with (the stack file's, when the state
    is from before the lab recorded them)."""
    context = str(recorded.get(outputs.KUBE_CONTEXT) or config.kube_context)
    files = recorded.get(outputs.KUBECONFIG_FILES)
    if isinstance(files, str) and files:
        return context, kubeconfigs.kubectl_command(context, None, {"KUBECONFIG": files})
    return context, kubeconfigs.kubectl_command(context, config.kubeconfig_path, {})


def existing_leftovers(config: lab_config.LabConfig, recorded: Mapping[str, object]) -> str:
    """The last line of destroy on an existing cluster: what stays on purpose and how to remove it, on the cluster
    the state used (its context and kubeconfig, not the stack file's current ones)."""
    context, kubectl = _recorded_kubectl(config, recorded)
    # xargs runs its first word as the program: a leading `KUBECONFIG=...` assignment needs `env` in front of it.
    xargs_kubectl = kubectl if kubectl.startswith("kubectl ") else f"env {kubectl}"
    stays = [
        f"Istio's CRDs, which Istio keeps on uninstall (`{kubectl} get crd -o name | grep '\\.istio\\.io$' | xargs "
        f"{xargs_kubectl} delete`)",
        f"the istio-ca-root-cert ConfigMaps istiod wrote into namespaces the lab did not create (`{kubectl} delete "
        "configmap --all-namespaces --field-selector metadata.name=istio-ca-root-cert`)",
    ]
    crds = recorded.get(outputs.GATEWAY_API_CRDS)
    if crds:
        stays.append(f"the Gateway API CRDs {crds} and their admission policy, which other teams' Gateways may use "
                     f"(`{kubectl} delete -f {catalog.gateway_api_crds_url(str(crds))}`)")
    return (f"The lab removed what it added to context {context} except what stays on purpose, to remove "
            f"only if nobody else uses it: {', '.join(stays[:-1])} and {stays[-1]}.")


def _check_destroy_identity(ctx: Context, stack: str, recorded: Mapping[str, object]) -> None:
    """Destroy removes what the state lists from the cluster its provider reaches now: refuse unless that is the
    cluster the state's first up recorded.

    Raises:
        LabError: the cluster does not answer, or is another one.
    """
    expected = cluster_identity.from_record(recorded.get(outputs.CLUSTER_IDENTITY))
    context = str(recorded.get(outputs.KUBE_CONTEXT))
    if expected is None:  # a state from before the lab recorded identities: nothing to compare with
        ctx.detail(f"stack {stack}'s state holds no record of which cluster context {context} reached: destroying "
                   "through that context as it is now")
        return
    files = str(recorded.get(outputs.KUBECONFIG_FILES))
    # The files the state's provider reads, never the KUBECONFIG of this shell.
    env = {**tool_env(ctx.paths, ctx.env), "KUBECONFIG": files}
    try:
        found = cluster_identity.read(ctx.host.run, env, context)
    except cluster_identity.IdentityError as error:
        raise LabError(
            f"The cluster of context {context} ({files}) does not answer ({error}), so the lab cannot tell whether it "
            f"is the one stack {stack} was brought up on ({expected.describe()}): make it reachable (VPN, "
            f"credentials) and run `{LAB_SCRIPT} destroy {stack}` again, or, if that cluster is gone for good, forget "
            f"the stack's state with `{LAB_SCRIPT} pulumi stack rm {stack} --force --preserve-config --yes`, which "
            "touches no cluster.") from None
    if found.uid != expected.uid:
        raise LabError(
            f"Context {context} ({files}) now reaches another cluster ({found.describe()}) than the one stack {stack} "
            f"was brought up on ({expected.describe()}), so destroy would remove the lab's objects from the wrong "
            f"cluster: make that context reach the lab's cluster again, then run `{LAB_SCRIPT} destroy {stack}`.")
    if found.server != expected.server:
        ctx.detail(f"the lab's cluster ({expected.describe()}) now answers at {found.server}")


def cmd_destroy(ctx: Context, stack: str) -> int:
    """Destroy a stack's lab, then check that its kind cluster is gone."""
    total = 3
    config = stack_config(ctx.paths.root, stack)
    # Nothing of the stack in the backend: say so before installing tools or creating any state.
    if not may_be_up(ctx.paths, stack):
        ctx.say(f"Nothing to destroy: nothing of stack {stack} is up here.")
        return 0
    ctx.step(1, total, "tools")
    _ensure_tools(ctx, _tools_for(config))

    ctx.step(2, total, "pulumi destroy")
    env = pulumi_env(ctx.paths, ctx.env)
    if not _stack_exists(ctx, stack, env):
        ctx.detail(f"stack {stack} does not exist in {ctx.paths.state}: nothing to destroy")
        return 0
    recorded = stack_record(ctx, stack)
    if recorded.get(outputs.TARGET) == "existing":
        _check_destroy_identity(ctx, stack, recorded)
    if _stream(["pulumi", "destroy", "--yes", "--stack", stack], env, ctx.paths.root) != 0:
        raise LabError(f"`pulumi destroy` failed: read its output above, fix the cause, then run `{LAB_SCRIPT} "
                       f"destroy {stack}` again.")

    ctx.step(3, total, "leftovers")
    if config.target != "kind":
        ctx.say(existing_leftovers(config, recorded))
        return 0
    name = str(recorded.get(outputs.CLUSTER_NAME) or config.cluster_name)
    clusters = ctx.host.run(["kind", "get", "clusters"], env=tool_env(ctx.paths, ctx.env), timeout=60)
    if clusters.returncode != 0:
        raise LabError(f"`kind get clusters` failed ({last_line(clusters.stderr)}): start Docker, then check with "
                       f"`{kind_cluster.KIND_TOOL} get clusters` that {name} is gone.")
    if name in (line.strip() for line in clusters.stdout.splitlines()):
        owner = ctx.host.cluster_owner(name)
        situation = preflight.Situation(stack=stack, project_dir=ctx.paths.root, env=ctx.env, cluster_name=name,
                                        recorded=recorded)
        if owner and owner is not preflight.OWNER_UNKNOWN and not situation.is_ours(owner):
            ctx.say(f"The kind cluster {name} belongs to {owner}, so the lab left it alone.")
            return 0
        raise LabError(f"The kind cluster {name} is still there: if it is this stack's, remove it with "
                       f"`{kind_cluster.KIND_TOOL} delete cluster --name {name}`.")
    ctx.say(f"Nothing is left: no kind cluster named {name}.")
    return 0


def cmd_preflight(ctx: Context, stack: str) -> int:
    """Run the preflight checks alone and print each result."""
    config = stack_config(ctx.paths.root, stack)
    # A stack that is up holds its cluster (and on kind that cluster's ingress port): what its state recorded tells
    # the checks that these are this stack's own, as `up` tells them, instead of someone else's in the way.
    recorded = stack_record(ctx, stack) if may_be_up(ctx.paths, stack) else {}
    if not _preflight(ctx, stack, config, adopt=False, recorded=recorded):
        raise LabError("Preflight found the problems marked FAIL above: fix them, then run it again.")
    ctx.say("Preflight passed.")
    return 0


def cmd_test(ctx: Context, pytest_args: Sequence[str]) -> int:
    """Run the test suite; a run that collects no tests fails. The project's tools folder comes first on PATH, so
    the end-to-end tests find the kind, kubectl and pulumi that `up` installed."""
    code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], cwd=ctx.paths.root,
                           env=tool_env(ctx.paths, ctx.env))
    if code == 5:  # pytest's "no tests collected": non-zero already, but say why
        ctx.say("pytest collected no tests, which counts as a failure: check the paths and options you gave it.")
    return code


def cmd_verify(ctx: Context, stack: str, as_json: bool) -> int:
    """Run the verification suite (the ``verify`` package) against a stack that is up."""
    if importlib.util.find_spec("verify") is None:
        raise LabError("The verify package is missing from this checkout: update your clone, then run it again.")
    config = stack_config(ctx.paths.root, stack)
    if not may_be_up(ctx.paths, stack):
        raise _nothing_up(ctx, stack)
    _ensure_tools(ctx, _tools_for(config))
    values = stack_outputs(ctx, stack)
    if not values.get(outputs.MESH_MODE):
        raise LabError(f"Stack {stack} has no outputs to verify yet: run `{LAB_SCRIPT} up {stack}` first.")
    argv = [sys.executable, "-m", "verify", "--mode", str(values[outputs.MESH_MODE]),
            "--namespace", str(values.get(outputs.APPS_NAMESPACE) or config.apps_namespace)]
    if values.get(outputs.TARGET, "kind") == "kind":
        argv += ["--kind-cluster", str(values[outputs.CLUSTER_NAME])]
    else:
        # The program exports the context; the kubeconfig file is config only (the default when unset).
        argv += ["--kubeconfig", config.kubeconfig_path] if config.kubeconfig_path else []
        argv += ["--context", str(values[outputs.KUBE_CONTEXT])] if values.get(outputs.KUBE_CONTEXT) else []
    # With the observability addons, also prove that Prometheus and Kiali saw the mesh traffic (as `up` does).
    argv += ["--addons"] if config.observability else []
    # Off the lab's kind cluster Kiali asks for a login (components/observability.py): the check signs in.
    argv += ["--kiali-login"] if config.observability and values.get(outputs.TARGET, "kind") != "kind" else []
    argv += ["--image-record", IMAGE_RECORD]  # as `up` does: lab.images' record, relative to the project
    argv += ["--timeout", str(config.verification_timeout)]  # the stack's retry limit, as `up` uses it
    argv += ["--json"] if as_json else []
    return _stream(argv, tool_env(ctx.paths, ctx.env), ctx.paths.root)


def cmd_dashboard(ctx: Context, stack: str, options: Sequence[str] = ()) -> int:
    """Start the dashboard (``lab.dashboard``) for a stack; `options` go to it as they are."""
    import signal

    if not may_be_up(ctx.paths, stack):
        raise _nothing_up(ctx, stack)

    # Ctrl-C reaches this process and the dashboard alike. The dashboard answers it by stopping its port-forwards,
    # removing its kubeconfig and exiting 0, so this process waits for that instead of ending (and killing it) first.
    # A do-nothing handler rather than SIG_IGN: exec resets handlers but keeps ignored signals, and the dashboard
    # must still receive its Ctrl-C.
    try:
        previous, installed = signal.signal(signal.SIGINT, lambda signum, frame: None), True
    except ValueError:  # not the main thread: leave signals alone
        previous, installed = None, False
    try:
        return _stream([sys.executable, "-m", "lab.dashboard", "--stack", stack, *options],
                       pulumi_env(ctx.paths, ctx.env), ctx.paths.root)
    finally:
        if installed:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def dashboard_options(args: argparse.Namespace) -> list[str]:
    """The dashboard subcommand's options, spelled as lab.dashboard takes them."""
    options = [flag for flag, on in (("--prometheus", args.prometheus), ("--open", args.open)) if on]
    for flag, value in (("--kiali-port", args.kiali_port), ("--prometheus-port", args.prometheus_port)):
        if value is not None:
            options += [flag, value]
    return options


def cmd_diagnose(ctx: Context, stack: str) -> int:
    """Collect diagnostics for a stack and print where they are."""
    config = stack_config(ctx.paths.root, stack)
    if not may_be_up(ctx.paths, stack):
        raise _nothing_up(ctx, stack)
    _ensure_tools(ctx, [name for name in _tools_for(config) if name != "pulumi"])
    folder = _collect_diagnostics(ctx, config)
    # A folder of failures only (Docker down, the cluster gone) is not a success to report.
    if not any(line.startswith("ok ") for line in (folder / "summary.txt").read_text().splitlines()):
        raise LabError(f"Nothing could be collected for stack {stack}, every step failed (see above): start Docker or "
                       f"make the cluster reachable, then run `{LAB_SCRIPT} diagnose {stack}` again.")
    return 0


def cmd_pulumi(ctx: Context, pulumi_args: Sequence[str]) -> int:
    """Run pulumi itself with the lab's backend and passphrase, e.g. ``./lab.sh pulumi config set KEY VALUE``."""
    _ensure_tools(ctx, ["pulumi"])
    return _stream(["pulumi", *pulumi_args], pulumi_env(ctx.paths, ctx.env), ctx.paths.root)


# --- Hands on the cluster: kubeconfig, shell, kubectl, istioctl, tour ---------------------------------------------


def _quiet_progress(text: str) -> None:
    """Tool progress on stderr, and only when something is installed: stdout belongs to kubectl's output and to the
    export line that `eval` reads."""
    if ": using " not in text:
        print(leaks.redact(text), file=sys.stderr, flush=True)


def _access(ctx: Context, stack: str) -> tuple[lab_config.LabConfig, access.Access]:
    """The stack's config and a kubeconfig for its cluster, with kubectl (and kind for a kind target) at hand."""
    config = stack_config(ctx.paths.root, stack)
    if not may_be_up(ctx.paths, stack):  # before any download: a fresh clone has nothing to reach
        raise _nothing_up(ctx, stack)
    bootstrap.ensure_tools(ctx.paths.tools, [name for name in _tools_for(config) if name != "pulumi"], env=ctx.env,
                           run=ctx.host.run, platform_=ctx.platform, progress=_quiet_progress)
    return config, access.write_kubeconfig(ctx.paths.lab, stack, config, tool_env(ctx.paths, ctx.env))


def _istioctl(ctx: Context, config: lab_config.LabConfig) -> Path:
    return access.ensure_istioctl(ctx.paths.tools, config.istio_version, env=ctx.env, run=ctx.host.run,
                                  platform_=ctx.platform, progress=_quiet_progress)


def cmd_kubeconfig(ctx: Context, stack: str, into_user_config: bool) -> int:
    """Write the stack's kubeconfig (0600, under .lab/) and print the `export` line for `eval`; never its content."""
    config, reach = _access(ctx, stack)
    if into_user_config:
        if config.target != "kind":
            ctx.say(f"# Context {reach.context} is already in your own kubeconfig: nothing to add.")
        else:
            # kind's own merge: into $KUBECONFIG or ~/.kube/config, and it makes the cluster the current context.
            merged = ctx.host.run(["kind", "export", "kubeconfig", "--name", config.cluster_name],
                                  env=tool_env(ctx.paths, ctx.env), timeout=60)
            if merged.returncode != 0:
                raise LabError(f"`kind export kubeconfig --name {config.cluster_name}` failed "
                               f"({last_line(merged.stderr)}): start Docker, then run it again.")
            ctx.say(f"# Added context {reach.context} to your kubeconfig and made it the current one.")
        return 0
    ctx.say(f"# Stack {stack}: context {reach.context}. Apply with: eval \"$({LAB_SCRIPT} kubeconfig {stack})\"")
    ctx.say(reach.export_line)
    return 0


def cmd_shell(ctx: Context, stack: str) -> int:
    """Start the user's shell with KUBECONFIG on the stack and the lab's kubectl and istioctl first on PATH."""
    config, reach = _access(ctx, stack)
    folders = [str(ctx.paths.tools)]
    try:
        folders.insert(0, str(_istioctl(ctx, config).parent))
    except LabError as error:  # a shell without istioctl is still a shell: say why, and go on
        print(leaks.redact(f"No istioctl in this shell: {error}"), file=sys.stderr)
    env = reach.env({**ctx.env, "PATH": os.pathsep.join([*folders, ctx.env.get("PATH", "")])})
    shell = ctx.env.get("SHELL") or "/bin/sh"
    ctx.say(f"A shell on stack {stack} (context {reach.context}); `exit` leaves it. Your own kubeconfig is untouched.")
    return _stream([shell], env, ctx.paths.root)


def cmd_kubectl(ctx: Context, stack: str, args: Sequence[str]) -> int:
    """kubectl against the stack's cluster (KUBECONFIG set for this one command)."""
    _, reach = _access(ctx, stack)
    return _stream(["kubectl", *args], reach.env(tool_env(ctx.paths, ctx.env)), ctx.paths.root)


def cmd_istioctl(ctx: Context, stack: str, args: Sequence[str]) -> int:
    """istioctl of the stack's istioVersion against the stack's cluster."""
    config, reach = _access(ctx, stack)
    return _stream([str(_istioctl(ctx, config)), *args], reach.env(tool_env(ctx.paths, ctx.env)), ctx.paths.root)


def cmd_tour(ctx: Context, stack: str, list_only: bool) -> int:
    """Walk the seed tutorial's steps on the stack's cluster (``--list``: print them without a cluster)."""
    config = stack_config(ctx.paths.root, stack)
    if list_only:
        tour.list_steps(stack, config, ctx.out)
        return 0
    _, reach = _access(ctx, stack)
    executables, unavailable = {"kubectl": "kubectl"}, {}
    try:
        executables["istioctl"] = str(_istioctl(ctx, config))
    except LabError as error:  # no pinned digest yet, or no network: the kubectl steps still run
        unavailable["istioctl"] = str(error)
    walk = tour.Tour(stack, config, executables, reach.env(tool_env(ctx.paths, ctx.env)), ctx.host.run,
                     lambda argv, env: _stream(argv, env, ctx.paths.root), ctx.out, unavailable)
    return walk.run_all()


# --- Entry point ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    # No prefix matching anywhere (allow_abbrev=False): `up l7 --r` must not quietly mean --recreate.
    parser = argparse.ArgumentParser(prog=LAB_SCRIPT, description="Istio ambient lab on kind, driven by Pulumi.",
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_stack(name: str, text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=text, description=text, allow_abbrev=False)
        command.add_argument("stack", nargs="?", default=DEFAULT_STACK, help=f"stack name (default {DEFAULT_STACK})")
        return command

    up = with_stack("up", "bring a lab up (installs missing tools and runs the preflight checks first)")
    up.add_argument("--adopt", action="store_true", help="take over an existing kind cluster of the stack's name")
    up.add_argument("--recreate", action="store_true",
                    help="destroy and rebuild the lab when a node-shape setting (workers, nodeImage, ...) changed")
    up.add_argument("--new", action="store_true",
                    help="create a stack that has no stacks/Pulumi.STACK.yaml yet (with the defaults)")
    with_stack("destroy", "destroy a lab and check that nothing is left")
    with_stack("preflight", "check this machine before bringing a lab up")
    verify = with_stack("verify", "verify a lab that is up")
    verify.add_argument("--json", action="store_true", help="print the verification report as JSON")
    dashboard = with_stack("dashboard", "open Kiali (and Prometheus) on 127.0.0.1 until Ctrl-C")
    dashboard.add_argument("--prometheus", action="store_true", help="also forward Prometheus")
    dashboard.add_argument("--open", action="store_true", help="open the URLs in a browser")
    dashboard.add_argument("--kiali-port", metavar="PORT", help="local port for Kiali (default 20001)")
    dashboard.add_argument("--prometheus-port", metavar="PORT", help="local port for Prometheus (default 9090)")
    with_stack("diagnose", "collect logs and cluster state into .lab/diagnostics/")
    kubeconfig = with_stack("kubeconfig", "write the stack's kubeconfig into .lab/kube/ and print the export line "
                            "for eval")
    kubeconfig.add_argument("--into-user-config", action="store_true",
                            help="instead, add the kind cluster's context to your own kubeconfig (kind export)")
    with_stack("shell", "start your shell with kubectl and istioctl on the stack's cluster")
    for tool in ("kubectl", "istioctl"):
        passing = commands.add_parser(tool, help=f"run {tool} against a stack's cluster: {LAB_SCRIPT} {tool} STACK "
                                      "ARGS...", description=f"Run {tool} against a stack's cluster.",
                                      allow_abbrev=False)
        passing.add_argument("stack", help="stack name; every argument after it goes to " + tool)
    tour_command = with_stack("tour", "walk the tutorial's steps live on a stack's cluster")
    tour_command.add_argument("--list", action="store_true", help="print the steps and commands without running them")
    commands.add_parser("test", help="run the test suite (further arguments go to pytest)", add_help=False,
                        allow_abbrev=False)
    commands.add_parser("pulumi", help="run pulumi with the lab's state backend and passphrase", add_help=False,
                        allow_abbrev=False)
    return parser


def _stack_as_option(argv: Sequence[str]) -> str:
    """The sentence for `up --stack l7` (the stack is positional), or "" when the stack is not given as an option.

    Only the words the lab itself reads count: after `test`, `pulumi` and `kubectl STACK`, --stack is the tool's.
    """
    if not argv or argv[0] in ("test", "pulumi"):
        return ""
    words = list(argv[:2] if argv[0] in ("kubectl", "istioctl") and argv[1:2] != ["--stack"] else argv)
    for index, word in enumerate(words):
        if word == "--stack" or word.startswith("--stack="):
            value = word.partition("=")[2] or (argv[index + 1] if index + 1 < len(argv) else "STACK")
            rest = [w for i, w in enumerate(argv[1:], 1) if i != index and not (word == "--stack" and i == index + 1)]
            return (f"The stack is positional, not an option: run `{shlex.join([LAB_SCRIPT, argv[0], value, *rest])}`"
                    ".")
    return ""


STACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # what pulumi takes as a stack name, less org/project


def _require_known_stack(ctx: Context, stack: str, new: bool) -> None:
    """A stack needs its stack file (or a state here): a typo must not make a new stack and cluster. `up --new`
    writes the file first, with the project's defaults, so every later command knows the stack."""
    path = access.stack_file(ctx.paths.root, stack)
    if path.is_file() or may_be_up(ctx.paths, stack):
        return
    if not new:
        access.require_known_stack(ctx.paths.root, stack)
    if not STACK_NAME.match(stack):
        raise LabError(f"{stack!r} cannot name a stack: use letters, digits, '-', '_' and '.', starting with a letter "
                       "or digit.")
    path.write_text(f"# Made by `{LAB_SCRIPT} up {stack} --new`: Pulumi.yaml's defaults; add settings under config.\n"
                    "config: {}\n")
    ctx.say(f"New stack {stack}: wrote {path.relative_to(ctx.paths.root)} (the defaults).")


def main(argv: Sequence[str] | None = None, ctx: Context | None = None) -> int:
    """Run one ``./lab.sh`` command.

    Args:
        argv: The arguments after ``./lab.sh`` (None: ``sys.argv[1:]``).
        ctx: Paths, environment and machine boundary (None: this project and machine).

    Returns:
        The exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # test and pulumi hand everything after them over untouched, options included.
    passes_through = argv[:1] in (["test"], ["pulumi"])
    # kubectl and istioctl take a stack first, then hand the rest over the same way.
    head = 1 if passes_through else 2 if argv[:1] in (["kubectl"], ["istioctl"]) else len(argv)
    misplaced = _stack_as_option(argv)
    if misplaced:
        print(misplaced, file=sys.stderr)
        return 2
    args = _parser().parse_args(argv[:head])
    passthrough = argv[head:]
    if ctx is None:
        ctx = Context(Paths(Path(__file__).resolve().parent.parent))
        # Whatever this process starts (lab.kind_cluster's kind and kubectl included) finds the project's tools.
        os.environ["PATH"] = tool_env(ctx.paths, os.environ)["PATH"]
    handlers: dict[str, Callable[[], int]] = {
        "up": lambda: cmd_up(ctx, args.stack, args.adopt, args.recreate),  # args.new: checked above
        "destroy": lambda: cmd_destroy(ctx, args.stack),
        "preflight": lambda: cmd_preflight(ctx, args.stack),
        "test": lambda: cmd_test(ctx, passthrough),
        "verify": lambda: cmd_verify(ctx, args.stack, args.json),
        "dashboard": lambda: cmd_dashboard(ctx, args.stack, dashboard_options(args)),
        "diagnose": lambda: cmd_diagnose(ctx, args.stack),
        "pulumi": lambda: cmd_pulumi(ctx, passthrough),
        "kubeconfig": lambda: cmd_kubeconfig(ctx, args.stack, args.into_user_config),
        "shell": lambda: cmd_shell(ctx, args.stack),
        "kubectl": lambda: cmd_kubectl(ctx, args.stack, passthrough),
        "istioctl": lambda: cmd_istioctl(ctx, args.stack, passthrough),
        "tour": lambda: cmd_tour(ctx, args.stack, args.list),
    }
    try:
        with stack_files.salt_kept_out(ctx.paths.root / STACK_DIR):
            if args.command not in ("test", "pulumi"):
                _require_known_stack(ctx, args.stack, new=getattr(args, "new", False))
            return handlers[args.command]()
    except (LabError, private.NotPrivate) as error:  # its sentence may quote a tool's stderr: redacted like all
        print(leaks.redact(str(error)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: run the command again to carry on.", file=sys.stderr)
        return 130
    except Exception as error:  # the promise is a sentence, never a traceback; LAB_DEBUG=1 shows it
        if ctx.env.get("LAB_DEBUG") == "1":
            raise
        print(leaks.redact(f"Unexpected error ({type(error).__name__}: {error}): run it again with LAB_DEBUG=1 and "
                           "report the traceback."), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
