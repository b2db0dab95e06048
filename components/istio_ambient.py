"""Istio in ambient mode from the official Helm charts: base, istiod, the CNI agent and ztunnel.

Dependency graph (istio.io ambient Helm install, each release waited for):

    istio-system namespace ─┬─> istio-base ──> istiod ──> ztunnel
                            └─> istio-cni
    Gateway API CRDs ─────────────────────────> istiod

- base carries Istio's CRDs and the validation webhook that istiod and every later Istio object rely on.
- istiod does not need the Gateway API CRDs to start (it begins watching a kind when its CRD appears); installing
  them first means the waypoint and ingress Gateways are served from istiod's first sync, not after a later watch.
- ztunnel gets its workload certificates from istiod, so it cannot become ready before istiod.
- istio-cni needs neither base, istiod nor ztunnel (its chart holds no Istio custom resource, and the node agent
  talks to the Kubernetes API and to ztunnel's local socket), so it installs beside them; apps wait for both cni and
  ztunnel (`ready`), because a pod started before the CNI agent runs on its node escapes ambient capture.

Real Helm releases (helm.v3.Release), not client-side rendering: istiod edits its own webhook configuration, which
a server-side-applied render would fight over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.kube import PROJECT_ROOT, TYPE_PREFIX, ClusterAccess, helm_release
from lab import artifacts, catalog
from lab import config as lab_config

HELM_TIMEOUT_SECONDS = 900  # image pulls on a fresh kind cluster can take minutes


@dataclass(frozen=True)
class IstioAmbientArgs:
    access: ClusterAccess
    version: str
    chart_repository: str
    gateway_api_version: str
    install_gateway_api_crds: bool
    platform: str | None = None  # global.platform for existing clusters that need it (gke, eks, k3s, ...)


def chart_values(chart: catalog.IstioChart, platform: str | None) -> dict:
    """The values each chart gets: the ambient profile where Istio requires it, the platform where one is set."""
    values: dict = {}
    profile = catalog.ISTIO_CHART_PROFILES.get(chart)
    if profile:
        # istiod: PILOT_ENABLE_AMBIENT; cni: cni.ambient.enabled. The profile also selects the distroless images,
        # which catalog.istio_images lists. Not on ztunnel, which needs no profile and keeps its plain image (with
        # a shell, for debugging).
        values["profile"] = profile
    if platform in lab_config.CHART_PLATFORMS and chart is not catalog.ISTIO_BASE:
        values["global"] = {"platform": platform}
    return values


class GatewayApiCrds(pulumi.ComponentResource):
    """The Gateway API standard-channel bundle (its CRDs and admission policy), one resource per object.

    From the verified file in the lab's cache (lab.artifacts), not through a yaml ConfigFile: the v2 ConfigFile is a
    component the provider constructs against the cluster, whose failure the engine reports to the program as an
    error the Python SDK prints with a traceback; objects registered one by one fail with the provider's sentence.
    """

    def __init__(self, name: str, bundle: list[dict], access: ClusterAccess, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:GatewayApiCrds", name, None, opts)
        # An existing cluster: deleting the CRDs would delete everyone's Gateways and HTTPRoutes, so destroy keeps
        # them (and the bundle's admission policy). On the lab's own kind cluster they go with the cluster.
        keep = {"retain_on_delete": True} if access.owner is None else {}
        # Stacks brought up before this component registered these objects as children of a yaml/v2 ConfigFile
        # named like it (pulumi-kubernetes names a cluster-scoped child `<config file>:<name>`): the alias makes the
        # engine take them as the same objects, instead of creating them again (AlreadyExists) and deleting the old.
        was = f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{TYPE_PREFIX}:IstioAmbient$kubernetes:yaml/v2:ConfigFile::{name}"
        self.objects = [
            k8s.apiextensions.CustomResource(
                f"{obj['kind']}-{obj['metadata']['name']}",
                api_version=obj["apiVersion"],
                kind=obj["kind"],
                metadata=obj["metadata"],
                spec=obj.get("spec"),
                opts=access.options(self, aliases=[pulumi.Alias(name=f"{name}:{obj['metadata']['name']}", parent=was)],
                                    **keep),
            )
            for obj in bundle
        ]
        self.register_outputs({"objects": len(self.objects)})


class IstioAmbient(pulumi.ComponentResource):
    """The Istio control plane and ambient data plane (istio-cni + ztunnel) in istio-system."""

    def __init__(self, name: str, args: IstioAmbientArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:IstioAmbient", name, None, opts)
        self._args = args
        self.namespace = k8s.core.v1.Namespace(
            catalog.ISTIO_NAMESPACE,
            # Istio's Pod Security guide: istio-cni needs hostPath volumes (and ztunnel more), which only the
            # `privileged` level admits; said here so a cluster-wide `baseline` or `restricted` default cannot
            # refuse them.
            metadata={"name": catalog.ISTIO_NAMESPACE, "labels": {
                "pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/enforce-version": "latest",
            }},
            opts=args.access.options(self),
        )
        self.gateway_api_crds = self._create_gateway_api_crds()
        crds = [self.gateway_api_crds] if self.gateway_api_crds else []

        # Why each waits (see the module docstring): a release needs its namespace; istiod needs base's CRDs and
        # webhook, and serves the lab's Gateways from its first sync with the Gateway API CRDs in place; ztunnel
        # gets its certificates from istiod. istio-cni uses none of them, so it installs beside base and istiod.
        self.base = self._release(catalog.ISTIO_BASE, depends_on=[self.namespace])
        self.istiod = self._release(catalog.ISTIOD, depends_on=[self.base, *crds])
        self.cni = self._release(catalog.ISTIO_CNI, depends_on=[self.namespace])
        self.ztunnel = self._release(catalog.ZTUNNEL, depends_on=[self.istiod])
        self.releases = {
            catalog.ISTIO_BASE.release: self.base,
            catalog.ISTIOD.release: self.istiod,
            catalog.ISTIO_CNI.release: self.cni,
            catalog.ZTUNNEL.release: self.ztunnel,
        }
        # What workloads must wait for before they start: the whole data plane on every node.
        self.ready: list[pulumi.Resource] = [self.cni, self.ztunnel]
        self.release_statuses = pulumi.Output.all(
            **{name: release.status.apply(lambda s: s.status if s else None) for name, release in self.releases.items()}
        )
        self.register_outputs({"version": args.version, "releases": self.release_statuses})

    def _create_gateway_api_crds(self) -> GatewayApiCrds | None:
        if not self._args.install_gateway_api_crds:
            return None
        bundle = artifacts.bundle_objects(artifacts.gateway_api_bundle(self._args.gateway_api_version, Path(PROJECT_ROOT)))
        return GatewayApiCrds("gateway-api-crds", bundle, self._args.access, pulumi.ResourceOptions(parent=self))

    def _release(self, chart: catalog.IstioChart, depends_on: list[pulumi.Resource]) -> k8s.helm.v3.Release:
        return helm_release(
            chart.release,
            chart=chart.chart,
            version=self._args.version,
            repository=self._args.chart_repository,
            namespace=catalog.ISTIO_NAMESPACE,
            values=chart_values(chart, self._args.platform),
            access=self._args.access,
            parent=self,
            depends_on=depends_on,
            timeout_seconds=HELM_TIMEOUT_SECONDS,
        )
