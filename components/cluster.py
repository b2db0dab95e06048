"""Where the lab runs: a kind cluster the stack owns, or an existing cluster named by kubeconfig context."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from components.failures import fail_with_sentence
from components.kube import PROJECT_ROOT, TYPE_PREFIX, ClusterAccess
from lab import kind_cluster, kubeconfigs

# Said explicitly, so a PULUMI_K8S_UPSERT_EXISTING_OBJECTS or PULUMI_K8S_ENABLE_PATCH_FORCE in the user's environment
# cannot make the lab take over (and on destroy delete) objects it did not create: the provider reads its own
# setting first and the environment only when the setting is absent (pulumi-kubernetes provider.go, Configure).
NEVER_ADOPT = {"upsert_existing_objects": False, "enable_patch_force": False}
IDENTITY_RESOURCE = "cluster-identity"  # lab.cli finds the record in the state by this name


def lab_python() -> str:
    """The interpreter the lifecycle commands run with, relative to the project when it lives there.

    Relative keeps the command text short and the same wherever the checkout lives. The commands' `dir` is the
    checkout's absolute path, kept in the state: after moving the checkout, run `up` once (it re-runs the idempotent
    create with the new path) before `destroy`, which runs from the stored path.
    """
    executable = sys.executable
    if executable.startswith(PROJECT_ROOT + os.sep):
        executable = os.path.relpath(executable, PROJECT_ROOT)
    return shlex.quote(executable)


@dataclass(frozen=True)
class KindClusterArgs:
    name: str
    workers: int
    node_image: str
    ingress_host_port: int
    owner: str  # which project and stack the cluster is for; the create adds a token unique to this stack's state
    adopt_existing: bool = False
    preload_images: list[str] | None = None  # `lab.images preload` arguments; None: nodes pull from registries
    registry_mirror: str | None = None


class KindCluster(pulumi.ComponentResource):
    """A local kind cluster (one control plane + N workers) and the Kubernetes provider bound to it."""

    def __init__(self, name: str, args: KindClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:KindCluster", name, None, opts)
        self.cluster_name = args.name
        config = kind_cluster.kind_config(args.name, args.workers, args.node_image, args.ingress_host_port)
        self.config_yaml = kind_cluster.render_config(config)
        self.cluster = self._create_cluster(args)
        # The owner label the create wrote (stack id and the state's token), for ./lab.sh's checks before an up.
        self.owner = self.cluster.stdout.apply(kind_cluster.owner_in)
        node_setup = self._set_up_nodes(args)
        kubeconfig = self._read_kubeconfig(args)
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.provider = k8s.Provider(
            "kind",
            kubeconfig=self.kubeconfig,
            context=f"kind-{args.name}",
            # Stable across kubeconfig changes (new certificates), new when the cluster itself is new.
            cluster_identifier=pulumi.Output.concat("kind-", args.name, "-", self.cluster.id),
            **NEVER_ADOPT,
            # Nothing reaches the cluster before its nodes know the mirror and hold the preloaded images.
            opts=pulumi.ResourceOptions(parent=self, depends_on=node_setup),
        )
        self.access = ClusterAccess(provider=self.provider, owner=self.cluster)
        self.register_outputs({"cluster_name": args.name, "kubeconfig": self.kubeconfig, "owner": self.owner})

    def _create_cluster(self, args: KindClusterArgs) -> command.local.Command:
        base = f"{lab_python()} -m lab.kind_cluster"
        name_and_owner = f"--name {shlex.quote(args.name)} --owner {shlex.quote(args.owner)}"
        adopt = " --adopt" if args.adopt_existing else ""
        return command.local.Command(
            "kind-cluster",
            create=f"{base} create {name_and_owner}{adopt}",
            delete=f"{base} delete {name_and_owner}",
            stdin=self.config_yaml,
            dir=PROJECT_ROOT,
            # Anything that shapes the nodes needs a new cluster; the old one goes first (same name, same port).
            triggers=[args.name, args.node_image, args.workers, args.ingress_host_port],
            opts=pulumi.ResourceOptions(
                parent=self,
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create="15m", delete="5m"),
            ),
        )

    def _set_up_nodes(self, args: KindClusterArgs) -> list[pulumi.Resource]:
        """Optional steps inside the fresh nodes; each runs again with a new cluster (its id is a trigger)."""
        steps: list[pulumi.Resource] = []
        base = f"{lab_python()} -m lab.images"
        cluster = f"--cluster {shlex.quote(args.name)}"
        if args.registry_mirror:
            steps.append(command.local.Command(
                "registry-mirror",
                create=f"{base} mirror-apply {cluster} --mirror {shlex.quote(args.registry_mirror)}",
                dir=PROJECT_ROOT,
                triggers=[self.cluster.id, args.registry_mirror],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]),  # writes into the nodes
            ))
        if args.preload_images is not None:
            choice = shlex.join(args.preload_images)  # a shell runs it: every word quoted, like the cluster's name
            # Pulling into the local Docker needs no cluster: it starts at once, beside `kind create cluster`.
            pulled = command.local.Command(
                "pull-images",
                create=f"{base} pull {choice}".rstrip(),
                dir=PROJECT_ROOT,
                triggers=list(args.preload_images),
                opts=pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(create="30m")),
            )
            steps.append(command.local.Command(
                "preload-images",
                create=f"{base} preload {cluster} {choice}".rstrip(),
                dir=PROJECT_ROOT,
                triggers=[self.cluster.id, *args.preload_images],
                # Loading needs the nodes, and goes faster once Docker holds every image (it still pulls what the
                # pull step could not, say after a `docker image prune` on a later up).
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.cluster, pulled], custom_timeouts=pulumi.CustomTimeouts(create="30m")
                ),
            ))
        return steps

    def _read_kubeconfig(self, args: KindClusterArgs) -> pulumi.Output[str]:
        # An invoke, not a resource: read on every up (certificates can change), never stored in plain text, and
        # never logged. It is issued from the cluster Command's stdout, not after `depends_on` the Command: in a
        # preview that will create the cluster, pulumi-command already returns an ID (it runs nothing), and the
        # engine runs an invoke once its dependencies have IDs, so it would look for a cluster that does not exist
        # yet. stdout stays unknown until the create has really run, and an apply on an unknown value never runs.
        # A preview of a stack whose cluster exists knows stdout from the state, so it reads the kubeconfig and
        # shows the real diffs inside the cluster.
        def read(_created: str) -> pulumi.Output[str]:
            result = command.local.run_output(
                command=f"{lab_python()} -m lab.kind_cluster kubeconfig --name {shlex.quote(args.name)}",
                dir=PROJECT_ROOT,
                logging=command.local.Logging.NONE,
                opts=pulumi.InvokeOutputOptions(parent=self),
            )
            return result.recover(fail_with_sentence("Reading the kind cluster's kubeconfig")).stdout

        return self.cluster.stdout.apply(read)


@dataclass(frozen=True)
class ExistingClusterArgs:
    context: str
    kubeconfig_path: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))  # KUBECONFIG, as the program sees it


class ExistingCluster(pulumi.ComponentResource):
    """A cluster the user already has: nothing is created, the provider is pinned to the named context."""

    def __init__(self, name: str, args: ExistingClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:ExistingCluster", name, None, opts)
        self.cluster_name = args.context
        self.kubeconfig_path = args.kubeconfig_path  # absolute already: lab.config expands it
        try:
            # A path where one file holds the context, its cluster and user: nothing secret enters the state. A
            # KUBECONFIG of several files would reach the provider as one unparsable string: resolve it here.
            chosen = kubeconfigs.for_provider(args.context, args.kubeconfig_path, args.env)
        except kubeconfigs.KubeconfigError as error:
            raise pulumi.RunError(str(error)) from None
        # The cluster's identity, recorded at the first up: ./lab.sh compares it with the cluster the context
        # reaches before every up and destroy. A change of kubeconfig or context runs it again, and that run keeps
        # the record or fails on another cluster, never re-records (lab.cluster_identity).
        self.identity = command.local.Command(
            IDENTITY_RESOURCE,
            create=f"{lab_python()} -m lab.cluster_identity --context {shlex.quote(args.context)}",
            environment={"KUBECONFIG": os.pathsep.join(kubeconfigs.absolute_files(args.kubeconfig_path, args.env))},
            dir=PROJECT_ROOT,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.provider = k8s.Provider(
            "existing",
            # Always a file (or a merged config): never empty, which would make a later destroy use the KUBECONFIG
            # of whatever shell runs it.
            kubeconfig=pulumi.Output.secret(chosen.content) if chosen.content else chosen.path,
            context=args.context,
            cluster_identifier=f"existing-{args.context}",
            **NEVER_ADOPT,
            # Nothing reaches the cluster before its identity is on record.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.identity]),
        )
        self.access = ClusterAccess(provider=self.provider, owner=None)
        self.register_outputs({"cluster_name": args.context})
