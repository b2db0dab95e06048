"""How every Kubernetes resource reaches its cluster: one explicit provider, and what the resource dies with."""

from __future__ import annotations

from dataclasses import dataclass

import os
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from lab import artifacts

TYPE_PREFIX = "istio-ambient-lab:index"
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

    A chart from an https:// repository is installed from the lab's verified cache (lab.artifacts; the program
    fetched it before creating anything); one from an oci:// repository is left to Helm.
    """
    local = artifacts.chart(artifacts.Chart(repository, chart, version), Path(PROJECT_ROOT))
    return k8s.helm.v3.Release(
        name,
        name=name,
        chart=str(local) if local else f"{repository}/{chart}",
        version=version,
        namespace=namespace,
        values=values,
        timeout=timeout_seconds,
        # A failed upgrade deletes what it newly created; a failed install stays, and the next `up` upgrades it.
        cleanup_on_fail=True,
        opts=access.options(parent, depends_on=depends_on),
    )
