"""How every Kubernetes resource reaches its cluster: one explicit provider, and what the resource dies with."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

TYPE_PREFIX = "istio-ambient-lab:index"


@dataclass(frozen=True)
class ClusterAccess:
    """The provider bound to the lab's cluster, and the resource whose deletion removes the whole cluster.

    `owner` is the kind cluster when the stack owns it: resources inside it are then not deleted one by one on
    destroy (they die with the cluster). On an existing cluster `owner` is None and destroy removes each resource.
    """

    provider: k8s.Provider
    owner: pulumi.Resource | None

    def options(
        self, parent: pulumi.Resource, depends_on: list[pulumi.Resource] | None = None, **extra
    ) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(
            parent=parent, provider=self.provider, depends_on=depends_on or [], deleted_with=self.owner, **extra
        )


def helm_release(
    name: str,
    *,
    chart: str,
    version: str,
    repository: str,
    namespace: str,
    values: pulumi.Input[dict],
    access: ClusterAccess,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
    timeout_seconds: int,
) -> k8s.helm.v3.Release:
    """A real Helm release (hooks run, istiod may edit its own webhooks), named explicitly, waited for.

    An oci:// repository is addressed through the chart reference; an https:// one through repository options.
    """
    oci = repository.startswith("oci://")
    return k8s.helm.v3.Release(
        name,
        name=name,
        chart=f"{repository}/{chart}" if oci else chart,
        repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=repository),
        version=version,
        namespace=namespace,
        values=values,
        timeout=timeout_seconds,
        # A failed upgrade deletes what it newly created; a failed install stays, and the next `up` upgrades it.
        cleanup_on_fail=True,
        opts=access.options(parent, depends_on=depends_on),
    )
