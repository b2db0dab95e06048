"""The tutorial's curl clients: sleep and notsleep in the mesh, and one client outside it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.kube import TYPE_PREFIX, ClusterAccess
from components.workload import WorkloadSpec, create_deployment, create_service, create_service_account
from lab import catalog


def away_from(app: str) -> dict:
    """Prefer a node without `app`'s pods, so this client's traffic crosses nodes (two ztunnels in the path)."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": app}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


@dataclass(frozen=True)
class MeshClientArgs:
    access: ClusterAccess
    namespace: str
    depends_on: list[pulumi.Resource]
    avoid_app: str | None = None  # an app whose node this client should not share
    with_service: bool = True


class MeshClient(pulumi.ComponentResource):
    """A curl pod that sleeps until the lab (or a user) execs a request from it; its own SA, Service, Deployment."""

    def __init__(self, name: str, args: MeshClientArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:MeshClient", name, None, opts)
        spec = WorkloadSpec(
            deployment=name, app=name, version="v1", service_account=name, image=catalog.CURL_IMAGE,
            port=catalog.CLIENT_PORT, command=["/bin/sleep", "infinity"], readiness=False,
            affinity=away_from(args.avoid_app) if args.avoid_app else None, run_as_user=catalog.CLIENT_UID,
        )
        self.service_account = create_service_account(name, args.namespace, args.access, self, args.depends_on)
        if args.with_service:
            create_service(name, args.namespace, catalog.CLIENT_PORT, {"app": name}, args.access, self, args.depends_on)
        self.deployment = create_deployment(spec, args.namespace, args.access, self, args.depends_on)
        self.resources: list[pulumi.Resource] = [self.deployment]
        self.register_outputs({"name": name, "namespace": args.namespace})


@dataclass(frozen=True)
class OutsideClientArgs:
    access: ClusterAccess


class OutsideClient(pulumi.ComponentResource):
    """A curl client in a namespace of its own that is not enrolled: what STRICT mTLS must refuse."""

    def __init__(self, name: str, args: OutsideClientArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:OutsideClient", name, None, opts)
        self.namespace = k8s.core.v1.Namespace(
            catalog.OUTSIDE_NAMESPACE,
            # Said explicitly, so that enrolling the whole cluster later cannot silently pull it into the mesh.
            metadata={"name": catalog.OUTSIDE_NAMESPACE, "labels": {
                catalog.AMBIENT_LABEL: "none", catalog.POD_SECURITY_ENFORCE: "baseline"}},
            opts=args.access.options(self),  # outside the mesh: it waits for no part of it
        )
        self.client = MeshClient(
            catalog.OUTSIDE_CLIENT,
            MeshClientArgs(args.access, catalog.OUTSIDE_NAMESPACE, [self.namespace], with_service=False),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.resources: list[pulumi.Resource] = self.client.resources
        self.register_outputs({"namespace": catalog.OUTSIDE_NAMESPACE})
