"""A waypoint proxy for productpage: the L7 hop (HTTP routing, L7 policy, HTTP metrics) of ambient mode."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.ingress import GATEWAY_API, WAIT_FOR_PROGRAMMED
from components.kube import TYPE_PREFIX, ClusterAccess
from lab import catalog


@dataclass(frozen=True)
class WaypointArgs:
    access: ClusterAccess
    namespace: str
    service: str  # the Service whose traffic the waypoint processes
    depends_on: list[pulumi.Resource]


class Waypoint(pulumi.ComponentResource):
    """Gateway of class istio-waypoint (istiod deploys the Envoy), bound to one Service by label.

    The binding is a patch of its own rather than a label in the Service's definition, so switching a stack between
    l4-only and l7 adds or removes exactly these resources and leaves the Service untouched.
    """

    def __init__(self, name: str, args: WaypointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Waypoint", name, None, opts)
        self.name = name
        self.gateway = k8s.apiextensions.CustomResource(
            name,
            api_version=GATEWAY_API,
            kind="Gateway",
            metadata={
                "name": name,
                "namespace": args.namespace,
                "labels": {catalog.WAYPOINT_FOR_LABEL: "service"},
                "annotations": WAIT_FOR_PROGRAMMED,
            },
            spec={
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
            opts=args.access.options(self, depends_on=args.depends_on),
        )
        self.binding = k8s.core.v1.ServicePatch(
            f"{args.service}-use-waypoint",
            metadata={"name": args.service, "namespace": args.namespace, "labels": {catalog.USE_WAYPOINT_LABEL: name}},
            opts=args.access.options(self, depends_on=[self.gateway]),
        )
        self.resources: list[pulumi.Resource] = [self.gateway, self.binding]
        self.register_outputs({"name": name})
