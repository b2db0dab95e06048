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
    """Gateway of class istio-waypoint: istiod deploys the Envoy. `WaypointBinding` points the Service at it."""

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
        self.resources: list[pulumi.Resource] = [self.gateway]
        self.register_outputs({"name": name})


# Istio's value for "no waypoint", even where the namespace names one.
NO_WAYPOINT = "none"


@dataclass(frozen=True)
class WaypointBindingArgs:
    access: ClusterAccess
    namespace: str
    service: str
    waypoint: Waypoint | None  # None: the Service's traffic goes straight from ztunnel to ztunnel
    depends_on: list[pulumi.Resource]


class WaypointBinding(pulumi.ComponentResource):
    """The Service's `istio.io/use-waypoint` label, present in both modes: the waypoint's name in l7, `none` in
    l4-only.

    Pulumi deletes what left the program only after the program (and so the verification) has finished. A binding
    that disappeared with the l7 resources would leave productpage bound to the waypoint while the l4-only checks run;
    a binding that changes value is updated during the program, before them. It is a patch rather than part of the
    Service's own definition, so the Service itself never changes.
    """

    def __init__(self, name: str, args: WaypointBindingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:WaypointBinding", name, None, opts)
        target = args.waypoint.name if args.waypoint else NO_WAYPOINT
        depends_on = [*args.depends_on, *(args.waypoint.resources if args.waypoint else [])]
        self.patch = k8s.core.v1.ServicePatch(
            f"{args.service}-use-waypoint",
            metadata={"name": args.service, "namespace": args.namespace, "labels": {catalog.USE_WAYPOINT_LABEL: target}},
            opts=args.access.options(self, depends_on=depends_on),
        )
        self.resources: list[pulumi.Resource] = [self.patch]
        self.register_outputs({"waypoint": target})
