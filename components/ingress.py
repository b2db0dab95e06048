"""Bookinfo's front door: a Gateway API Gateway (class istio) and HTTPRoute, reachable from the host on loopback."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.kube import TYPE_PREFIX, ClusterAccess
from lab import catalog

GATEWAY_API = "gateway.networking.k8s.io/v1"
# pulumi-kubernetes waits on custom resources only when told what to wait for.
WAIT_FOR_PROGRAMMED = {"pulumi.com/waitFor": "condition=Programmed"}

# The paths bookinfo's own gateway sample routes to productpage: (match type, path).
BOOKINFO_ROUTES = (
    ("Exact", "/productpage"),
    ("PathPrefix", "/static"),
    ("Exact", "/login"),
    ("Exact", "/logout"),
    ("PathPrefix", "/api/v1/products"),
)


@dataclass(frozen=True)
class BookinfoIngressArgs:
    access: ClusterAccess
    namespace: str
    depends_on: list[pulumi.Resource]
    node_port: int | None  # kind: expose the gateway on this node port, which kind maps to 127.0.0.1
    host_port: int
    kubectl: str = "kubectl"  # existing cluster: kubectl naming the lab's context and kubeconfig, never the current


class BookinfoIngress(pulumi.ComponentResource):
    """Gateway `bookinfo-gateway` + HTTPRoute `bookinfo`; istiod deploys the gateway's Envoy itself."""

    def __init__(self, name: str, args: BookinfoIngressArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:BookinfoIngress", name, None, opts)
        self.gateway = k8s.apiextensions.CustomResource(
            catalog.INGRESS_GATEWAY_NAME,
            api_version=GATEWAY_API,
            kind="Gateway",
            metadata={
                "name": catalog.INGRESS_GATEWAY_NAME,
                "namespace": args.namespace,
                # A LoadBalancer never gets an address on kind, and the lab wants none anywhere.
                "annotations": {"networking.istio.io/service-type": "ClusterIP", **WAIT_FOR_PROGRAMMED},
            },
            spec={
                "gatewayClassName": "istio",
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}],
            },
            opts=args.access.options(self, depends_on=args.depends_on),
        )
        self.route = k8s.apiextensions.CustomResource(
            "bookinfo",
            api_version=GATEWAY_API,
            kind="HTTPRoute",
            metadata={"name": "bookinfo", "namespace": args.namespace},
            spec={
                "parentRefs": [{"name": catalog.INGRESS_GATEWAY_NAME}],
                "rules": [
                    {
                        "matches": [{"path": {"type": kind, "value": path}} for kind, path in BOOKINFO_ROUTES],
                        "backendRefs": [{"name": catalog.PRODUCTPAGE, "port": catalog.BOOKINFO_PORT}],
                    }
                ],
            },
            # Attached once the Gateway is Programmed, so the front door is whole when this component is done.
            opts=args.access.options(self, depends_on=[self.gateway]),
        )
        self.url = f"http://127.0.0.1:{args.host_port}/productpage"
        self.node_port_service = None
        self.port_forward = None
        if args.node_port is not None:
            # Our own NodePort Service in front of the gateway's pods: the node port is fixed, so kind's port
            # mapping (127.0.0.1:<host port> -> node port) is known before the cluster exists.
            self.node_port_service = k8s.core.v1.Service(
                f"{catalog.INGRESS_GATEWAY_NAME}-nodeport",
                metadata={"name": f"{catalog.INGRESS_GATEWAY_NAME}-nodeport", "namespace": args.namespace},
                spec={
                    "type": "NodePort",
                    "selector": {"gateway.networking.k8s.io/gateway-name": catalog.INGRESS_GATEWAY_NAME},
                    "ports": [{"name": "http", "port": 80, "targetPort": 80, "nodePort": args.node_port}],
                },
                # A selector on the gateway's pods: it needs no Gateway, only the namespace among `depends_on`.
                opts=args.access.options(self, depends_on=args.depends_on),
            )
        else:
            # No host port mapping on an existing cluster: the user forwards one.
            self.port_forward = (
                f"{args.kubectl} port-forward -n {args.namespace} svc/{catalog.INGRESS_GATEWAY_WORKLOAD} "
                f"--address 127.0.0.1 {args.host_port}:80"
            )
        self.resources: list[pulumi.Resource] = [self.gateway, self.route]
        self.register_outputs({"url": self.url})
