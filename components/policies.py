"""What the mesh allows: STRICT mTLS (mesh-wide on the lab's kind cluster, the lab's namespaces elsewhere), an L4
policy on productpage, and in l7 an L7 policy too."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.kube import TYPE_PREFIX, ClusterAccess
from lab import catalog

ISTIO_SECURITY = "security.istio.io/v1"


@dataclass(frozen=True)
class PolicyPlan:
    """Who may reach productpage, per mesh mode: plain data, so tests and the README read the same facts."""

    l4_principals: list[str]
    l7_principals: list[str] | None  # None: no L7 policy (l4-only)
    l7_methods: list[str]


def policy_plan(namespace: str, waypoint: str | None) -> PolicyPlan:
    sleep = catalog.principal(namespace, catalog.SLEEP)
    ingress = catalog.principal(namespace, catalog.INGRESS_GATEWAY_WORKLOAD)
    if waypoint is None:
        # ztunnel enforces: sleep and the ingress gateway get through, notsleep's connection is reset.
        return PolicyPlan(l4_principals=[sleep, ingress], l7_principals=None, l7_methods=[])
    # Through a waypoint, productpage's ztunnel sees the waypoint's identity, not the client's: the L4 policy
    # admits the waypoint, and the waypoint judges clients by identity and HTTP method. The ingress gateway skips
    # the waypoint (unless the Service says istio.io/ingress-use-waypoint), so it stays in the L4 policy only.
    return PolicyPlan(
        l4_principals=[catalog.principal(namespace, waypoint), ingress],
        l7_principals=[sleep],
        l7_methods=["GET"],
    )


@dataclass(frozen=True)
class MeshPoliciesArgs:
    access: ClusterAccess
    namespace: str
    waypoint: str | None
    depends_on: list[pulumi.Resource]
    # None: STRICT mesh-wide (the root namespace's policy), on the lab's own kind cluster. Else STRICT in just these
    # namespaces: on someone else's cluster a mesh-wide policy would refuse the plaintext clients of any workload
    # another team enrols.
    strict_namespaces: list[str] | None = None


class MeshPolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: MeshPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:MeshPolicies", name, None, opts)
        plan = policy_plan(args.namespace, args.waypoint)
        options = args.access.options(self, depends_on=args.depends_on)
        # HBONE alone still accepts plaintext into the mesh; STRICT in the root namespace refuses it mesh-wide, a
        # namespace's own (no selector) refuses it for that namespace's workloads. Either way istiod hands ztunnel the
        # same static DENY policy, istio-system/istio_converted_static_strict, for every workload whose effective
        # mode is STRICT (istio pilot ambient policies: effective PeerAuthentication keys), so the refusal reads alike.
        strict_in = [(None, catalog.ISTIO_NAMESPACE)] if args.strict_namespaces is None else [
            (namespace, namespace) for namespace in args.strict_namespaces]
        self.strict_mtls = [k8s.apiextensions.CustomResource(
            f"strict-mtls-{suffix}" if suffix else "strict-mtls",
            api_version=ISTIO_SECURITY,
            kind="PeerAuthentication",
            metadata={"name": "default", "namespace": namespace},
            spec={"mtls": {"mode": "STRICT"}},
            opts=options,
        ) for suffix, namespace in strict_in]
        self.l4 = k8s.apiextensions.CustomResource(
            "productpage-l4",
            api_version=ISTIO_SECURITY,
            kind="AuthorizationPolicy",
            metadata={"name": "productpage-l4", "namespace": args.namespace},
            spec={
                "selector": {"matchLabels": {"app": catalog.PRODUCTPAGE}},
                "action": "ALLOW",
                # Principals only: an HTTP field here, without a waypoint to enforce it, makes ztunnel deny all.
                "rules": [{"from": [{"source": {"principals": plan.l4_principals}}]}],
            },
            opts=options,
        )
        self.l7 = None
        if plan.l7_principals is not None:
            self.l7 = k8s.apiextensions.CustomResource(
                "productpage-l7",
                api_version=ISTIO_SECURITY,
                kind="AuthorizationPolicy",
                metadata={"name": "productpage-l7", "namespace": args.namespace},
                spec={
                    "targetRefs": [{"kind": "Service", "group": "", "name": catalog.PRODUCTPAGE}],
                    "action": "ALLOW",
                    "rules": [
                        {
                            "from": [{"source": {"principals": plan.l7_principals}}],
                            "to": [{"operation": {"methods": plan.l7_methods}}],
                        }
                    ],
                },
                opts=options,
            )
        self.resources: list[pulumi.Resource] = [*self.strict_mtls, self.l4, *([self.l7] if self.l7 else [])]
        self.in_force = [*[f"{namespace}/default (PeerAuthentication STRICT)" for _, namespace in strict_in],
                         f"{args.namespace}/productpage-l4 (AuthorizationPolicy, ztunnel)"]
        if self.l7 is not None:
            self.in_force.append(f"{args.namespace}/productpage-l7 (AuthorizationPolicy, waypoint)")
        self.register_outputs({"policies": self.in_force})
