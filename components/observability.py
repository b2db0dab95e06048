"""Prometheus and Kiali, set up as Istio's own addons are, plus a little steady traffic so the graph is never empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.kube import PROJECT_ROOT, TYPE_PREFIX, ClusterAccess, helm_release
from components.workload import CONTAINER_SECURITY, pod_security
from lab import catalog, local_secrets

HELM_TIMEOUT_SECONDS = 600


# The chart's scrape jobs that discover targets through the Kubernetes API, by the role each lists. On someone else's
# cluster the ones that read namespaced objects are held to the lab's namespaces; the ones that list nodes (a
# cluster-wide kind) or the API server's endpoints in `default` are off.
_NAMESPACED_SCRAPE_JOBS = {"kubernetes-pods": "pod", "kubernetes-pods-slow": "pod",
                           "kubernetes-service-endpoints": "endpoints", "kubernetes-service-endpoints-slow": "endpoints",
                           "kubernetes-services": "service", "prometheus-pushgateway": "service"}
_CLUSTER_SCRAPE_JOBS = ("kubernetes-api-servers", "kubernetes-nodes", "kubernetes-nodes-cadvisor")


def prometheus_values(namespaces: list[str] | None = None) -> dict:
    """Server only, named `prometheus`, on 9090, scraping every pod annotated prometheus.io/scrape (ztunnel,
    waypoints and gateways carry those annotations), every 15 s.

    ``namespaces``: None on the lab's own kind cluster (the chart's ClusterRole, every namespace). Else Prometheus
    reads and scrapes only these: the chart binds the lab's reader role (``prometheus_reader_rules``) in each of them
    instead of creating its ClusterRole, and every discovering scrape job names them (the chart leaves that to its
    values: a job without ``namespaces`` would list the whole cluster, and be refused).
    """
    values: dict = {
        "alertmanager": {"enabled": False},
        "prometheus-pushgateway": {"enabled": False},
        "kube-state-metrics": {"enabled": False},
        "prometheus-node-exporter": {"enabled": False},
        "server": {
            "fullnameOverride": catalog.PROMETHEUS_SERVICE,
            "persistentVolume": {"enabled": False},
            "service": {"type": "ClusterIP", "servicePort": catalog.PROMETHEUS_PORT},
            "global": {"scrape_interval": f"{catalog.PROMETHEUS_SCRAPE_INTERVAL_S}s"},
            "readinessProbeInitialDelay": 0,
            "image": {"repository": catalog.PROMETHEUS_IMAGE.name, "tag": catalog.PROMETHEUS_IMAGE.tag},
        },
        "configmapReload": {
            "prometheus": {
                "image": {
                    "repository": catalog.PROMETHEUS_RELOADER_IMAGE.name,
                    "tag": catalog.PROMETHEUS_RELOADER_IMAGE.tag,
                }
            }
        },
    }
    if namespaces is not None:
        values["server"]["namespaces"] = list(namespaces)
        values["server"]["useExistingClusterRoleName"] = catalog.PROMETHEUS_READER_ROLE
        # Helm merges maps and replaces lists: each job keeps the chart's relabelling, with its discovery scoped.
        values["scrapeConfigs"] = {
            **{job: {"kubernetes_sd_configs": [{"role": role, "namespaces": {"names": list(namespaces)}}]}
               for job, role in _NAMESPACED_SCRAPE_JOBS.items()},
            **{job: {"enabled": False} for job in _CLUSTER_SCRAPE_JOBS},
        }
    return values


def prometheus_reader_rules() -> list[dict]:
    """What the scoped Prometheus may read in each of the lab's namespaces: what its discovery roles list and watch
    (pod, endpoints, service; endpoints also reads EndpointSlices). Nothing cluster-wide, no Secrets."""
    return [
        {"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    ]


def prometheus_url() -> str:
    return f"http://{catalog.PROMETHEUS_SERVICE}.{catalog.ISTIO_NAMESPACE}:{catalog.PROMETHEUS_PORT}"


def kiali_values(signing_key: str, namespaces: list[str] | None = None, anonymous: bool = True,
                 mesh_mode: str = "l4-only") -> dict:
    """View-only (nobody can change the mesh from it), ClusterIP only, reading the Prometheus above.

    Anonymous on the lab's own kind cluster (a lab dashboard anyone on the machine may look at); elsewhere the
    chart's ``token`` strategy: whoever opens it signs in with a Kubernetes token and sees what that token may read.
    """
    values: dict = {
        "auth": {"strategy": "anonymous" if anonymous else "token"},
        "deployment": {
            "view_only_mode": True,
            "service_type": "ClusterIP",
            "ingress": {"enabled": False},
            "image_name": catalog.KIALI_IMAGE.name,
            "image_version": catalog.KIALI_IMAGE.tag,
            "image_pull_policy": "IfNotPresent",
            # Off, as in Istio's addon: the chart's policy lists ports but no `from:`, so it admits every client on
            # Kiali's port and would protect nothing the ClusterIP Service does not. On an existing cluster the lab
            # adds its own (`kiali_network_policy`).
            "network_policy": {"enabled": False},
            # A mode switch restarts Kiali: it keeps which workloads are waypoints in a cache of its own (4 minutes,
            # kiali business/workloads GetWaypoints) that the uncached graph query does not refresh, so right after an
            # l4-only -> l7 switch its graph would not route through the new waypoint. Helm merges this map with the
            # chart's own pod annotations.
            "pod_annotations": {"istio-ambient-lab/mesh-mode": mesh_mode},
        },
        "server": {"web_root": catalog.KIALI_WEB_ROOT, "port": catalog.KIALI_PORT},
        "external_services": {
            "prometheus": {"url": prometheus_url()},
            "tracing": {"enabled": False},
            "grafana": {"enabled": False},
        },
        # The chart draws a random key on every render when none is given, which would make every `up` a change.
        # Anonymous Kiali issues no sessions; with the token strategy this key seals the session cookie that holds
        # the user's token in their browser (kiali handlers/authentication: cookie session persistor).
        "login_token": {"signing_key": signing_key},
    }
    if namespaces is not None:
        # Someone else's cluster: Roles in the lab's namespaces instead of a ClusterRole. The kiali-server chart
        # (deployment.cluster_wide_access false) looks the namespaces up at install time with these discovery
        # selectors and always adds its own; so they must exist before Kiali is installed.
        values["deployment"]["cluster_wide_access"] = False
        values["deployment"]["discovery_selectors"] = {"default": [{"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}]}
    return values


# The kiali-server chart's pod selector labels (deployment.instance_name "kiali") and the prometheus chart's for its
# server (release "prometheus", component "server").
KIALI_POD_LABELS = {"app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": catalog.KIALI_RELEASE}
PROMETHEUS_SERVER_LABELS = {"app.kubernetes.io/name": "prometheus",
                            "app.kubernetes.io/instance": catalog.PROMETHEUS_RELEASE,
                            "app.kubernetes.io/component": "server"}


def kiali_network_policy() -> dict:
    """The spec of a NetworkPolicy that admits to Kiali only what must reach it over the pod network.

    People reach Kiali through ``kubectl port-forward`` (``./lab.sh dashboard``, the verification's Kiali check): the
    kubelet connects inside the pod's own network namespace, which NetworkPolicy does not filter, so that needs no
    rule. The one in-cluster client is the lab's Prometheus, which scrapes Kiali's metrics port (the chart annotates
    the pod for it). Everything else, the API server's service proxy included, is refused.
    """
    return {
        "podSelector": {"matchLabels": KIALI_POD_LABELS},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": PROMETHEUS_SERVER_LABELS}}],
            "ports": [{"protocol": "TCP", "port": catalog.KIALI_METRICS_PORT}],
        }],
    }


def prometheus_network_policy() -> dict:
    """The spec of a NetworkPolicy that admits to Prometheus only Kiali, its one in-cluster reader.

    People query it through ``kubectl port-forward`` (``./lab.sh dashboard --prometheus``; the verification falls back
    to one when the API server's service proxy is refused), which NetworkPolicy does not filter. Its own scraping is
    egress, which this leaves alone.
    """
    return {
        "podSelector": {"matchLabels": PROMETHEUS_SERVER_LABELS},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": KIALI_POD_LABELS}}],
            "ports": [{"protocol": "TCP", "port": catalog.PROMETHEUS_PORT}],
        }],
    }


def signing_key_for(stack: str) -> str:
    """Kiali's session signing key for the stack: random, kept on this machine (lab.local_secrets)."""
    return local_secrets.kiali_signing_key(stack, Path(PROJECT_ROOT))


def traffic_job_spec(target_url: str, requests: int = 12, pause_seconds: int = 4) -> dict:
    """One bounded burst of requests through the ingress gateway: it ends on its own well inside a minute."""
    script = (
        f"for i in $(seq 1 {requests}); do "
        f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 5 {target_url}; sleep {pause_seconds}; done"
    )
    return {
        "activeDeadlineSeconds": 55,
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 300,
        "template": {
            "metadata": {"labels": {"app": catalog.TRAFFIC_CRONJOB}},
            "spec": {
                "serviceAccountName": catalog.TRAFFIC_CRONJOB,
                "restartPolicy": "Never",
                "securityContext": pod_security(catalog.CLIENT_UID),
                "containers": [{
                    "name": "curl",
                    "image": catalog.CURL_IMAGE.ref,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "securityContext": CONTAINER_SECURITY,
                }],
            },
        },
    }


@dataclass(frozen=True)
class ObservabilityArgs:
    access: ClusterAccess
    apps_namespace: str
    signing_key: str
    namespace: pulumi.Resource  # istio-system, where both releases go: all Prometheus needs
    istiod: pulumi.Resource  # Kiali reads istiod's mesh config and status from its start
    traffic_after: list[pulumi.Resource]  # what the CronJob's requests go to: the ingress and the apps behind it
    # None: both addons see the whole cluster (the lab's own kind cluster). Else only these namespaces: Kiali's and
    # Prometheus' roles are bound there alone, Prometheus scrapes nothing else, and NetworkPolicies keep the pod
    # network out of both.
    namespaces: list[str] | None = None
    # The lab's own kind cluster: Kiali anonymous, no NetworkPolicy. Else a login (token) and a NetworkPolicy.
    kiali_anonymous: bool = True
    # The namespaces behind `namespaces` the lab creates: both charts bind roles in each when they install.
    namespace_resources: list[pulumi.Resource] = field(default_factory=list)
    mesh_mode: str = "l4-only"  # a switch restarts Kiali (see kiali_values)


class Observability(pulumi.ComponentResource):
    """Prometheus and Kiali in istio-system, and a CronJob that keeps traffic flowing through the ingress."""

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Observability", name, None, opts)
        scoped: list[pulumi.Resource] = []  # someone else's cluster: what limits Prometheus, in place before it starts
        if args.namespaces is not None:
            scoped.append(k8s.rbac.v1.ClusterRole(
                catalog.PROMETHEUS_READER_ROLE,
                metadata={"name": catalog.PROMETHEUS_READER_ROLE},
                rules=prometheus_reader_rules(),
                # Grants nothing by itself: the chart's RoleBindings grant it in the lab's namespaces only.
                opts=args.access.options(self),
            ))
            scoped.append(k8s.networking.v1.NetworkPolicy(
                catalog.PROMETHEUS_SERVICE,
                metadata={"name": catalog.PROMETHEUS_SERVICE, "namespace": catalog.ISTIO_NAMESPACE},
                spec=prometheus_network_policy(),
                opts=args.access.options(self, depends_on=[args.namespace]),
            ))
        self.prometheus = helm_release(
            catalog.PROMETHEUS_RELEASE,
            chart=catalog.PROMETHEUS_CHART,
            version=catalog.PROMETHEUS_CHART_VERSION,
            repository=catalog.PROMETHEUS_CHART_REPOSITORY,
            namespace=catalog.ISTIO_NAMESPACE,
            values=prometheus_values(args.namespaces),
            access=args.access,
            parent=self,
            # Its namespace: it scrapes whatever carries the scrape annotations whenever it appears. Scoped, also
            # the namespaces its chart binds its role in, and the role and policy that limit it.
            depends_on=[args.namespace, *scoped, *(args.namespace_resources if args.namespaces is not None else [])],
            timeout_seconds=HELM_TIMEOUT_SECONDS,
        )
        kiali_policy: list[pulumi.Resource] = []
        if not args.kiali_anonymous:
            # Someone else's cluster: in place before Kiali starts, so Kiali is never open to the pod network.
            kiali_policy.append(k8s.networking.v1.NetworkPolicy(
                catalog.KIALI_SERVICE,
                metadata={"name": catalog.KIALI_SERVICE, "namespace": catalog.ISTIO_NAMESPACE},
                spec=kiali_network_policy(),
                opts=args.access.options(self, depends_on=[args.namespace]),
            ))
        self.kiali = helm_release(
            catalog.KIALI_RELEASE,
            chart=catalog.KIALI_CHART,
            version=catalog.KIALI_VERSION,
            repository=catalog.KIALI_CHART_REPOSITORY,
            namespace=catalog.ISTIO_NAMESPACE,
            values=pulumi.Output.secret(kiali_values(args.signing_key, args.namespaces, args.kiali_anonymous,
                                                            args.mesh_mode)),
            access=args.access,
            parent=self,
            # Not Prometheus: Kiali queries it per request, so the two install side by side. Scoped to some
            # namespaces (an existing cluster), the chart looks each one up: those must exist first.
            depends_on=[args.namespace, args.istiod, *kiali_policy,
                        *(args.namespace_resources if args.namespaces is not None else [])],
            timeout_seconds=HELM_TIMEOUT_SECONDS,
        )
        self._create_traffic(args)
        self.resources: list[pulumi.Resource] = [self.prometheus, self.kiali, self.traffic, *kiali_policy, *scoped]
        self.kiali_url = f"http://127.0.0.1:{catalog.KIALI_PORT}{catalog.KIALI_WEB_ROOT}"
        self.register_outputs({"kiali_url": self.kiali_url})

    def _create_traffic(self, args: ObservabilityArgs) -> None:
        # Its own identity: the L4 policy does not admit it to productpage, so it goes through the front door.
        account = k8s.core.v1.ServiceAccount(
            catalog.TRAFFIC_CRONJOB,
            metadata={"name": catalog.TRAFFIC_CRONJOB, "namespace": args.apps_namespace},
            opts=args.access.options(self, depends_on=args.traffic_after),
        )
        target = f"http://{catalog.INGRESS_GATEWAY_WORKLOAD}.{args.apps_namespace}.svc.cluster.local/productpage"
        self.traffic = k8s.batch.v1.CronJob(
            catalog.TRAFFIC_CRONJOB,
            metadata={"name": catalog.TRAFFIC_CRONJOB, "namespace": args.apps_namespace},
            spec={
                "schedule": "* * * * *",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 1,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": {"spec": traffic_job_spec(target)},
            },
            opts=args.access.options(self, depends_on=[account]),  # its pods run as that account
        )
