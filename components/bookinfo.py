"""Istio's bookinfo sample, authored here as typed resources: details, ratings, reviews v1-v3, productpage."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.kube import TYPE_PREFIX, ClusterAccess
from components.workload import WorkloadSpec, create_deployment, create_service, create_service_account
from lab import catalog


def bookinfo_workloads() -> list[WorkloadSpec]:
    """The six Deployments; the three reviews versions share the reviews ServiceAccount, as in the sample."""
    specs = []
    for deployment, app, version in catalog.BOOKINFO_WORKLOADS:
        extra: dict = {}
        if app == "reviews":
            # The Liberty server writes logs and work files; the sample gives it scratch space.
            extra = {
                "env": {"LOG_DIR": "/tmp/logs"},
                "scratch_dirs": {"tmp": "/tmp", "wlp-output": "/opt/ibm/wlp/output"},
                "memory": "256Mi",
            }
        elif app == catalog.PRODUCTPAGE:
            # Istio's sample also asks Prometheus to scrape productpage's /metrics. Not here: Prometheus is outside
            # the mesh, so under STRICT mTLS every scrape would be refused (a target forever down, denials in the
            # ztunnel log). The mesh's own metrics come from ztunnel and the waypoint.
            extra = {"scratch_dirs": {"tmp": "/tmp"}}
        specs.append(
            WorkloadSpec(
                deployment=deployment, app=app, version=version, service_account=f"bookinfo-{app}",
                image=catalog.bookinfo_image(app, version), port=catalog.BOOKINFO_PORT, **extra,
            )
        )
    return specs


@dataclass(frozen=True)
class BookinfoArgs:
    access: ClusterAccess
    namespace: str
    depends_on: list[pulumi.Resource]


class Bookinfo(pulumi.ComponentResource):
    """The four bookinfo services, each with its own ServiceAccount, a Service on 9080 and its Deployments."""

    def __init__(self, name: str, args: BookinfoArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Bookinfo", name, None, opts)
        self.services = {}
        self.deployments = {}
        for app in catalog.BOOKINFO_SERVICES:
            create_service_account(f"bookinfo-{app}", args.namespace, args.access, self, args.depends_on)
            self.services[app] = create_service(
                app, args.namespace, catalog.BOOKINFO_PORT, {"app": app}, args.access, self, args.depends_on
            )
        for spec in bookinfo_workloads():
            self.deployments[spec.deployment] = create_deployment(
                spec, args.namespace, args.access, self, args.depends_on
            )
        self.productpage = self.services[catalog.PRODUCTPAGE]
        self.resources: list[pulumi.Resource] = list(self.deployments.values())  # what the verification waits for
        self.register_outputs({"services": list(self.services)})
