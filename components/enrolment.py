"""Ambient enrolment: the apps' namespace carries istio.io/dataplane-mode=ambient."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.kube import TYPE_PREFIX, ClusterAccess
from lab import catalog


@dataclass(frozen=True)
class AmbientNamespaceArgs:
    access: ClusterAccess
    name: str


class AmbientNamespace(pulumi.ComponentResource):
    """Enrols a namespace in the ambient mesh.

    `default` exists in every cluster and is not ours: it is patched (server-side apply owns only the label, and
    destroy removes just that). Any other namespace is created by the lab, and destroy removes it whole.
    """

    def __init__(self, name: str, args: AmbientNamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:AmbientNamespace", name, None, opts)
        metadata = {"name": args.name, "labels": {catalog.AMBIENT_LABEL: catalog.AMBIENT_LABEL_VALUE}}
        # Waits for nothing: a label captures no pod by itself. The pods wait for the data plane (see __main__).
        options = args.access.options(self)
        self.owned = args.name != "default"
        if self.owned:
            # Its own namespace says its level: `baseline`, as Istio's guide runs gateways, so a cluster-wide
            # `restricted` default cannot refuse the gateway, waypoint and bookinfo pods part-way through `up`.
            metadata["labels"][catalog.POD_SECURITY_ENFORCE] = "baseline"
            self.namespace = k8s.core.v1.Namespace(args.name, metadata=metadata, opts=options)
        else:
            self.namespace = k8s.core.v1.NamespacePatch(args.name, metadata=metadata, opts=options)
        self.name = args.name
        self.register_outputs({"name": args.name})
