"""kind cluster lifecycle for the KindCluster component: create, delete and kubeconfig, each idempotent.

The component runs `python -m lab.kind_cluster <action> ...` through pulumi-command, so everything that decides
(is the cluster there, is it ours, may we delete it) lives here, in plain Python that tests drive with a fake `kind`
and `kubectl` on PATH.

Ownership is a label on the control-plane node, written by kind itself at creation (or by `create --adopt`): a
cluster of the same name that carries another owner, or none, is never reused or deleted without the user's say.
kind is always given a throwaway `--kubeconfig` so the user's kubeconfig and current context are never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from lab import catalog, leaks, logged_lines, private

OWNER_LABEL = "istio-ambient-lab/owner"
LAB_SCRIPT = catalog.LAB_SCRIPT
KIND_TOOL = ".lab/tools/kind"  # where ./lab.sh installs kind: the one a message can name and know it exists
START_TIMEOUT_S = 120
KEEP_FAILED_ENV = "LAB_KEEP_FAILED_CLUSTER"  # set to 1 to keep a half-created cluster for debugging


class KindError(RuntimeError):
    """A lifecycle step that cannot go on; the message says what to do."""


# `./lab.sh up --adopt` is a choice for that one up, not a setting: it leaves a marker named after the cluster here
# (relative to the project root, where the create runs), the create consumes it, and the up removes it when done. A
# stored `adoptExistingCluster: true` would stay in the stack file and silently adopt the next cluster of that name.
ADOPT_ONCE_DIR = os.path.join(".lab", "adopt-once")
# The marker holds a random nonce that only the `pulumi up` of the run that asked carries, in this variable
# (pulumi-command hands the provider's environment to the create). A process id would not do: a marker left by a
# killed run would name a pid the system may since have given to another process, which would make it count again.
ADOPT_NONCE_ENV = "LAB_ADOPT_NONCE"


def request_adoption(root: str | os.PathLike, name: str) -> str:
    """Marks kind cluster `name` for adoption by the create of this run alone; returns the nonce that run's
    `pulumi up` must carry in `ADOPT_NONCE_ENV`."""
    nonce = secrets.token_hex(16)
    private.write_private(Path(root) / ADOPT_ONCE_DIR / name, f"{name} {nonce}\n")
    return nonce


def consume_adoption(root: str | os.PathLike, name: str, nonce: str | None = None) -> bool:
    """Takes the marker for `name` away; whether it was left by the run this create belongs to, whose nonce
    (default: `ADOPT_NONCE_ENV` of this process) it holds."""
    nonce = os.environ.get(ADOPT_NONCE_ENV, "") if nonce is None else nonce
    path = os.path.join(root, ADOPT_ONCE_DIR, name)
    try:
        words = Path(path).read_text().split()
    except (FileNotFoundError, IsADirectoryError):
        return False
    os.remove(path)
    return len(words) == 2 and bool(nonce) and secrets.compare_digest(words[1], nonce)


def withdraw_adoption(root: str | os.PathLike, name: str) -> bool:
    """Removes an adoption marker the create did not consume (no create ran); whether there was one."""
    try:
        os.remove(os.path.join(root, ADOPT_ONCE_DIR, name))
    except FileNotFoundError:
        return False
    return True


PREVIOUS_OUTPUT_ENV = "PULUMI_COMMAND_STDOUT"  # pulumi-command hands a Command's stored stdout to its update and delete
_OWNER_IN_OUTPUT = re.compile(r"\(owner ([A-Za-z0-9._-]+)\)")
TOKEN_HEX = 8


def owner_label_value(project: str, stack: str) -> str:
    """Which project and stack a cluster is for: the first part of its owner label (the rest is the state's token)."""
    return f"{project}.{stack}"[: 63 - TOKEN_HEX - 1].strip("-_.")


def owner_in(output: str | None) -> str | None:
    """The owner label a create recorded in its output (the Command's stdout in the state), if any."""
    found = _OWNER_IN_OUTPUT.search(output or "")
    return found.group(1) if found else None


def new_owner(stack_id: str) -> str:
    """An owner label unique to one stack's state: two checkouts or backends with the same stack name differ."""
    return f"{stack_id}.{secrets.token_hex(TOKEN_HEX // 2)}"


def with_owner_label(config_yaml: str, owner: str) -> str:
    """The kind config with the owner label on the control-plane node, where kind writes it at creation."""
    config = yaml.safe_load(config_yaml)
    config["nodes"][0].setdefault("labels", {})[OWNER_LABEL] = owner
    return render_config(config)


def node_shape(cfg) -> dict:
    """The config values that shape the kind nodes (a lab.config.LabConfig): changing any needs a new cluster."""
    return {"clusterName": cfg.cluster_name, "workers": cfg.workers, "nodeImage": cfg.node_image,
            "ingressHostPort": cfg.ingress_host_port}


def kind_config(name: str, workers: int, node_image: str, ingress_host_port: int) -> dict:
    """The kind cluster configuration: everything listens on 127.0.0.1, every node runs the pinned image.

    The ingress node port is mapped from the control-plane node only; kube-proxy answers a NodePort on every node.
    """
    control_plane = {
        "role": "control-plane",
        "image": node_image,
        "extraPortMappings": [
            {
                "containerPort": catalog.INGRESS_NODE_PORT,
                "hostPort": ingress_host_port,
                "listenAddress": "127.0.0.1",
                "protocol": "TCP",
            }
        ],
    }
    return {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "name": name,
        "networking": {"apiServerAddress": "127.0.0.1"},
        "nodes": [control_plane] + [{"role": "worker", "image": node_image} for _ in range(workers)],
    }


def _run(args: Sequence[str], *, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, input=input_text)
    except FileNotFoundError:
        raise KindError(f"`{args[0]}` was not found on PATH; install it or run the lab through ./lab.sh up.") from None
    if check and result.returncode != 0:
        # stderr only: the stdout of `kind get kubeconfig` is the kubeconfig itself, keys and all.
        detail = leaks.redact(result.stderr).strip().splitlines()
        raise KindError(f"`{' '.join(args[:3])}` failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}")
    return result


def existing_clusters() -> list[str]:
    """Names of the kind clusters on this machine: whole lines of `kind get clusters`, never substrings."""
    out = _run(["kind", "get", "clusters"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("No kind clusters")]


class OwnerUnknown(KindError):
    """The cluster exists but its owner label cannot be read (a stopped cluster, an API server that does not answer)."""


def cluster_owner(name: str) -> str | None:
    """The owner label of the cluster's control-plane node, or None when the node has none.

    Raises:
        OwnerUnknown: the label cannot be read, which is not the same as a cluster without one.
    """
    try:
        with _temporary_kubeconfig(name) as kubeconfig:
            result = _run(
                ["kubectl", "--kubeconfig", kubeconfig, "get", "node", f"{name}-control-plane", "-o", "json"],
                check=False,
            )
    except KindError as error:
        raise OwnerUnknown(str(error)) from None
    if result.returncode != 0:
        detail = leaks.redact(result.stderr or result.stdout).strip().splitlines()
        raise OwnerUnknown(detail[-1] if detail else f"kubectl exit {result.returncode}")
    try:
        return json.loads(result.stdout)["metadata"].get("labels", {}).get(OWNER_LABEL)
    except (ValueError, KeyError, TypeError):
        raise OwnerUnknown("the node's description is not JSON") from None


class _temporary_kubeconfig:
    """A kubeconfig for one cluster in a 0600 temp file, removed on exit; its content is never printed.

    kind is asked first and the file made only once it answered, so a failed `kind get kubeconfig` leaves no file.
    """

    def __init__(self, name: str):
        self.name = name
        self.path = ""

    def __enter__(self) -> str:
        content = _run(["kind", "get", "kubeconfig", "--name", self.name]).stdout
        fd, self.path = tempfile.mkstemp(prefix="lab-kubeconfig-", suffix=".yaml")  # mkstemp creates it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        return self.path

    def __exit__(self, *_exc: object) -> None:
        if self.path and os.path.exists(self.path):
            os.remove(self.path)


def stopped_nodes(name: str) -> list[str]:
    """The cluster's node containers that are not running (after a Docker or host restart), by name."""
    out = _run(["docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={name}",
                "--format", "{{.Names}} {{.State}}"]).stdout
    return sorted(words[0] for words in (line.split() for line in out.splitlines()) if len(words) == 2
                  and words[1] != "running")


def start(name: str) -> str:
    """Starts a stopped cluster's node containers and waits until its API server answers again."""
    nodes = stopped_nodes(name)
    if not nodes:
        return f"kind cluster '{name}' is running."
    _run(["docker", "start", *nodes])
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with _temporary_kubeconfig(name) as kubeconfig:
                if _run(["kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"], check=False).returncode == 0:
                    return f"started kind cluster '{name}' ({len(nodes)} node(s))."
        except KindError:
            pass
        if time.monotonic() > deadline:
            raise KindError(f"kind cluster '{name}' was started but its API server did not answer within "
                            f"{START_TIMEOUT_S} s; run `{LAB_SCRIPT} diagnose` and look at the node containers' logs.")
        time.sleep(2)


def _stack_of(stack_id: str) -> str:
    return stack_id.split(".", 1)[1] if "." in stack_id else stack_id


def _clash_message(name: str, owner: str | None, stack_id: str) -> str:
    stack = _stack_of(stack_id)
    if owner and owner.startswith(stack_id + "."):
        # Adopting would meet the Helm releases the other state installed, which a new state cannot install over.
        return (f"kind cluster '{name}' already exists and was made by stack {stack} from another state (a deleted "
                f".lab/ or another checkout; owner label {owner}); if that lab is no longer needed, remove it with "
                f"`{KIND_TOOL} delete cluster --name {name}`, then run `{LAB_SCRIPT} up {stack}` again.")
    whose = f"belongs to {owner}" if owner else "was not created by this stack"
    return (
        f"kind cluster '{name}' already exists and {whose}; adopt it with `{LAB_SCRIPT} up {stack} --adopt` "
        f"or, if nobody needs it, remove it with `{KIND_TOOL} delete cluster --name {name}`, then run "
        f"`{LAB_SCRIPT} up {stack}` again."
    )


def create(name: str, stack_id: str, config_yaml: str, adopt: bool = False, previous_output: str | None = None) -> str:
    """Creates the cluster, or reuses it when this stack's state already owns it. Returns what was done, ending with
    the owner label in brackets: pulumi keeps that output in the state and hands it to the update and the delete.

    The owner label is the stack's id and a token made once per state; a re-run (an update of the Command) reuses
    the token it finds in `previous_output`, so only the state that created a cluster ever matches it.
    """
    owner = owner_in(previous_output) or new_owner(stack_id)
    # Consumed whatever happens next: the marker was for this create only.
    adopt = consume_adoption(".", name) or adopt
    if name in existing_clusters():
        try:
            current = cluster_owner(name)
        except OwnerUnknown as error:
            raise KindError(
                f"kind cluster '{name}' already exists but does not say who owns it ({error}); start it with "
                f"`{LAB_SCRIPT} up {_stack_of(stack_id)}` if it is this stack's, or check whose it is before removing "
                f"it with `{KIND_TOOL} delete cluster --name {name}`."
            ) from None
        if current == owner:
            return f"kind cluster '{name}' already exists and belongs to this stack; reusing it (owner {owner})."
        if not adopt:
            raise KindError(_clash_message(name, current, stack_id))
        with _temporary_kubeconfig(name) as kubeconfig:
            _run(["kubectl", "--kubeconfig", kubeconfig, "label", "node", f"{name}-control-plane",
                  f"{OWNER_LABEL}={owner}", "--overwrite"])
        return f"adopted kind cluster '{name}'; `{LAB_SCRIPT} destroy {_stack_of(stack_id)}` will delete it (owner {owner})."

    with tempfile.TemporaryDirectory(prefix="lab-kind-") as scratch:
        config_path = os.path.join(scratch, "kind-config.yaml")
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(with_owner_label(config_yaml, owner))
        # A throwaway kubeconfig: kind would otherwise add a context to the user's and switch to it.
        throwaway = os.path.join(scratch, "kubeconfig")
        # A failed create is kind's to clean up: it removes the nodes it made (unless --retain), and it refuses
        # before making any when nodes of that name exist, which may be someone else's. So the lab never deletes
        # after a failed create: that would remove a cluster whose ownership it has not proven.
        retain = ["--retain"] if os.environ.get(KEEP_FAILED_ENV) == "1" else []
        result = _run(
            ["kind", "create", "cluster", "--name", name, "--config", config_path, "--kubeconfig", throwaway,
             "--wait", "180s", *retain],
            check=False,
        )
        if result.returncode != 0:
            tail = leaks.redact(result.stderr or result.stdout).strip().splitlines()
            raise KindError(
                f"kind could not create cluster '{name}' ({tail[-1] if tail else 'no output'}); "
                f"run `{LAB_SCRIPT} preflight {_stack_of(stack_id)}` to check Docker and the host, then "
                f"`{LAB_SCRIPT} up {_stack_of(stack_id)}` again."
            )
    return f"created kind cluster '{name}' (owner {owner})."


def delete(name: str, stack_id: str, previous_output: str | None = None) -> str:
    """Deletes the cluster if it carries the owner label this state's create recorded; a cluster already gone is
    fine; one with another owner, or none (re-created by hand), is left alone; one whose label cannot be read stops
    the destroy. A state from before owner tokens recorded no owner: its label is the bare stack id."""
    owner = owner_in(previous_output) or stack_id
    if name not in existing_clusters():
        return f"kind cluster '{name}' is already gone."
    try:
        current = cluster_owner(name)
    except OwnerUnknown as error:
        raise KindError(
            f"kind cluster '{name}' exists but its owner cannot be read ({error}); start it with "
            f"`{LAB_SCRIPT} up {_stack_of(stack_id)}` and destroy again, or, if it is this stack's, delete it with "
            f"`{KIND_TOOL} delete cluster --name {name}` and destroy again."
        ) from None
    if current != owner:
        return f"kind cluster '{name}' {'now belongs to ' + current if current else 'was not made by this stack'}; left it alone."
    with tempfile.TemporaryDirectory(prefix="lab-kind-") as scratch:
        _run(["kind", "delete", "cluster", "--name", name, "--kubeconfig", os.path.join(scratch, "kubeconfig")])
    return f"deleted kind cluster '{name}'."


def kubeconfig(name: str) -> str:
    """The cluster's kubeconfig, for the Kubernetes provider only; the caller keeps it secret."""
    if name not in existing_clusters():
        raise KindError(
            f"kind cluster '{name}' is recorded in the stack but no longer exists; run `{LAB_SCRIPT} up` for the "
            f"stack, which creates it again (`{LAB_SCRIPT} destroy` removes what is left of it)."
        )
    stopped = stopped_nodes(name)
    if stopped:
        raise KindError(
            f"kind cluster '{name}' is stopped (Docker or the host restarted); run `{LAB_SCRIPT} up` for the stack, "
            f"which starts it, or start it yourself with `docker start {' '.join(stopped)}`."
        )
    return _run(["kind", "get", "kubeconfig", "--name", name]).stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.kind_cluster", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("action", choices=("create", "delete", "kubeconfig", "start"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--owner", default="")
    parser.add_argument("--adopt", action="store_true")
    args = parser.parse_args(argv)
    # The cluster Command's create and delete are logged by pulumi-command, and their errors quote kind: short lines.
    # The kubeconfig is data for the provider (never logged): left whole.
    with logged_lines.folded(stdout=args.action != "kubeconfig"):
        try:
            previous = os.environ.get(PREVIOUS_OUTPUT_ENV)
            if args.action == "create":
                # The config arrives on stdin so that the command line stays short and stable in the state.
                print(create(args.name, args.owner, sys.stdin.read(), adopt=args.adopt, previous_output=previous))
            elif args.action == "delete":
                print(delete(args.name, args.owner, previous_output=previous))
            elif args.action == "start":
                print(start(args.name))
            else:
                sys.stdout.write(kubeconfig(args.name))
        except KindError as error:
            print(f"error: {leaks.redact(str(error))}", file=sys.stderr)
            return 1
    return 0


def render_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


if __name__ == "__main__":
    sys.exit(main())
