"""istio-ambient-lab: the Istio ambient-mode tutorial as one Pulumi program.

Reads like the tutorial's table of contents; each step is a component under components/.
"""

import os

import pulumi

from components.bookinfo import Bookinfo, BookinfoArgs
from components.clients import MeshClient, MeshClientArgs, OutsideClient, OutsideClientArgs
from components.cluster import ExistingCluster, ExistingClusterArgs, KindCluster, KindClusterArgs
from components.enrolment import AmbientNamespace, AmbientNamespaceArgs
from components.failures import exit_quietly_when_cancelled
from components.ingress import BookinfoIngress, BookinfoIngressArgs
from components.istio_ambient import IstioAmbient, IstioAmbientArgs
from components.observability import Observability, ObservabilityArgs, signing_key_for
from components.policies import MeshPolicies, MeshPoliciesArgs
from components.settings import fetch_artifacts, read_lab_config
from components.verification import Verification, VerificationArgs, cluster_arguments
from components.waypoint import Waypoint, WaypointArgs, WaypointBinding, WaypointBindingArgs
from lab import catalog, images, kind_cluster, kubeconfigs, outputs

exit_quietly_when_cancelled()  # a failed resource stops the update with its sentence, not a Python traceback
cfg = read_lab_config()
fetch_artifacts(cfg)  # the charts and the Gateway API bundle, verified, before anything is created

# Requirements: a cluster. kind by default (one control plane, two workers), or one the user already has.
if cfg.target == "kind":
    cluster = KindCluster("cluster", KindClusterArgs(
        name=cfg.cluster_name, workers=cfg.workers, node_image=cfg.node_image,
        ingress_host_port=cfg.ingress_host_port, adopt_existing=cfg.adopt_existing_cluster,
        owner=kind_cluster.owner_label_value(pulumi.get_project(), pulumi.get_stack()),
        preload_images=images.preload_arguments(cfg.istio_version, cfg.observability) if cfg.preload_images else None,
        registry_mirror=cfg.registry_mirror,
    ))
    pulumi.export(outputs.KUBECONFIG, cluster.kubeconfig)
    pulumi.export(outputs.CLUSTER_OWNER, cluster.owner)
    # What shapes the nodes: ./lab.sh compares it with the config before an up, since a change needs a new cluster.
    pulumi.export(outputs.NODE_SHAPE, kind_cluster.node_shape(cfg))
else:
    cluster = ExistingCluster("cluster", ExistingClusterArgs(context=cfg.kube_context, kubeconfig_path=cfg.kubeconfig_path))
access = cluster.access

# Installation: Istio in ambient mode.
istio = IstioAmbient("istio", IstioAmbientArgs(
    access=access, version=cfg.istio_version, chart_repository=cfg.chart_repository,
    gateway_api_version=cfg.gateway_api_version, install_gateway_api_crds=cfg.install_gateway_api_crds,
    platform=cfg.platform,
))

# Deploying the demo apps, enrolled in ambient before any of them starts.
# Every `depends_on` below says why in a comment; anything not named may start as soon as the cluster answers.
apps_namespace = AmbientNamespace("apps-namespace", AmbientNamespaceArgs(access, cfg.apps_namespace))
# A pod that starts before istio-cni runs on its node, or in a namespace not yet labelled, escapes ambient capture.
in_mesh = [apps_namespace.namespace, *istio.ready]
bookinfo = Bookinfo("bookinfo", BookinfoArgs(access, cfg.apps_namespace, in_mesh))
sleep = MeshClient(catalog.SLEEP, MeshClientArgs(access, cfg.apps_namespace, in_mesh))
notsleep = MeshClient(catalog.NOTSLEEP, MeshClientArgs(access, cfg.apps_namespace, in_mesh, avoid_app=catalog.PRODUCTPAGE))
outside = OutsideClient("outside", OutsideClientArgs(access))
# istiod deploys and programs the Gateway (after the Gateway API CRDs, which istiod waits for); its Envoy is not
# captured (istiod labels it dataplane-mode none), so it need not wait for the data plane or the apps.
ingress = BookinfoIngress("ingress", BookinfoIngressArgs(
    access, cfg.apps_namespace, depends_on=[istio.istiod, apps_namespace.namespace],
    node_port=catalog.INGRESS_NODE_PORT if cfg.target == "kind" else None, host_port=cfg.ingress_host_port,
    kubectl=(kubeconfigs.kubectl_command(cfg.kube_context, cfg.kubeconfig_path, os.environ) if cfg.kube_context
             else "kubectl"),
))

# L7 processing: a waypoint for productpage (l7 stack only), and productpage bound to it (or to none).
waypoint = None
if cfg.waypoint:
    waypoint = Waypoint(catalog.WAYPOINT_NAME, WaypointArgs(
        # Like the ingress: istiod deploys it. It needs no app: the binding below points productpage at it.
        access, cfg.apps_namespace, catalog.PRODUCTPAGE, depends_on=[istio.istiod, apps_namespace.namespace],
    ))
binding = WaypointBinding("productpage-waypoint-binding", WaypointBindingArgs(
    # The patch needs the Service it labels (and, inside, a Programmed waypoint to send traffic to).
    access, cfg.apps_namespace, catalog.PRODUCTPAGE, waypoint, depends_on=[bookinfo.productpage],
))

# L4 and L7 authorization, STRICT mTLS.
policies = MeshPolicies("policies", MeshPoliciesArgs(
    # Istio's CRDs (base) and the validation webhook istiod serves; the checks, which run after everything, see them.
    access, cfg.apps_namespace, waypoint=waypoint.name if waypoint else None,
    depends_on=[istio.istiod, apps_namespace.namespace],
    # Mesh-wide on the lab's own kind cluster; elsewhere only the lab's namespace in the mesh (the apps').
    strict_namespaces=None if cfg.target == "kind" else [cfg.apps_namespace],
))

# Installing the addons: Prometheus and Kiali, with traffic to look at.
observability = None
if cfg.observability:
    observability = Observability("observability", ObservabilityArgs(
        access, cfg.apps_namespace, signing_key=signing_key_for(pulumi.get_stack()),
        # Prometheus and Kiali install beside the mesh; only the traffic CronJob waits for what it sends to.
        namespace=istio.namespace, istiod=istio.istiod,
        traffic_after=[*in_mesh, *ingress.resources, *bookinfo.resources],
        # On someone else's cluster Kiali and Prometheus see only the lab's namespaces; cluster-wide only on the
        # lab's own kind.
        namespaces=None if cfg.target == "kind" else list(catalog.lab_namespaces(cfg.apps_namespace)),
        namespace_resources=[apps_namespace.namespace, outside.namespace],
        mesh_mode=cfg.mesh_mode,
        # Anonymous only there too: elsewhere Kiali asks for a token and a NetworkPolicy keeps the pod network out.
        kiali_anonymous=cfg.target == "kind",
    ))
    pulumi.export(outputs.KIALI_URL, observability.kiali_url)
    pulumi.export(outputs.DASHBOARD_COMMAND, f"./lab.sh dashboard {pulumi.get_stack()}")

# Verification: prove the mesh works (identities, certificates, ztunnel logs, policy effects), after every up.
if cfg.verify:
    # The checks read every one of these: they run once all are ready.
    tested = [bookinfo, sleep, notsleep, outside, ingress, binding, policies, waypoint, observability]
    verification = Verification("verification", VerificationArgs(
        mode=cfg.mesh_mode, namespace=cfg.apps_namespace,
        cluster_arguments=cluster_arguments(cfg.target, cfg.cluster_name, cfg.kube_context, cfg.kubeconfig_path),
        report_file=f".lab/reports/{pulumi.get_stack()}.json", fail_on_error=cfg.fail_on_verification_error,
        timeout_s=cfg.verification_timeout,
        depends_on=[resource for part in tested if part for resource in part.resources], addons=cfg.observability,
        kiali_login=cfg.observability and cfg.target != "kind",
    ))
    pulumi.export(outputs.VERIFICATION, verification.report)
    pulumi.export(outputs.CERTIFICATE_SAN, verification.certificate_san)
    pulumi.export(outputs.ZTUNNEL_EVIDENCE, verification.ztunnel_evidence)

pulumi.export(outputs.CLUSTER_NAME, cluster.cluster_name)
pulumi.export(outputs.TARGET, cfg.target)
pulumi.export(outputs.KUBE_CONTEXT, cfg.kube_context or f"kind-{cfg.cluster_name}")
pulumi.export(outputs.ISTIO_VERSION, cfg.istio_version)
pulumi.export(outputs.MESH_MODE, cfg.mesh_mode)
pulumi.export(outputs.HELM_RELEASES, istio.release_statuses)
pulumi.export(outputs.APPS_NAMESPACE, cfg.apps_namespace)
# Which Gateway API bundle this stack installed: the preflight tells these CRDs from a cluster's own.
pulumi.export(outputs.GATEWAY_API_CRDS, cfg.gateway_api_version if cfg.install_gateway_api_crds else None)
pulumi.export(outputs.BOOKINFO_URL, ingress.url)
if ingress.port_forward:
    pulumi.export(outputs.BOOKINFO_PORT_FORWARD, ingress.port_forward)
pulumi.export(outputs.WAYPOINT, waypoint.name if waypoint else None)
pulumi.export(outputs.POLICIES, policies.in_force)
