"""The one place for the lab's facts: versions, chart coordinates, images and object names.

Every component, check and script reads these constants instead of repeating a literal, so a version bump or a
rename is a one-line change. Plain Python: no Pulumi import, so the verification and bootstrap code can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Versions --------------------------------------------------------------------------------------------------

ISTIO_VERSION = "1.31.1"
# 1.30.5 and 1.31.1 fix istio-cni flipping between iptables backends across restarts (istio/istio#61020).
ISTIO_MINIMUM_VERSION = "1.30.5"
ISTIO_CHART_REPOSITORY = "https://blob.istio.io/istio-release/charts"

GATEWAY_API_VERSION = "v1.6.1"
# The lab's Gateways and HTTPRoute are gateway.networking.k8s.io/v1, which the standard channel serves from v1.0.0.
# istiod itself has minimum bundle versions only for kinds the lab does not use (GRPCRoute, BackendTLSPolicy,
# TLSRoute, TCPRoute), none for Gateway or HTTPRoute.
GATEWAY_API_MINIMUM_VERSION = "v1.0.0"

# kind v0.32.0's own default node image (Kubernetes 1.36), by tag and digest as kind's docs ask.
KIND_NODE_IMAGE = (
    "kindest/node:v1.36.1@sha256:3489c7674813ba5d8b1a9977baea8a6e553784dab7b84759d1014dbd78f7ebd5"
)
KUBERNETES_MINOR_RANGE = (32, 36)  # what Istio 1.30/1.31 support: 1.32 to 1.36

KIALI_VERSION = "2.31.0"
KIALI_MINIMUM_VERSION = "2.27.0"  # first Kiali whose graph understands ambient waypoints well
KIALI_CHART_REPOSITORY = "https://kiali.org/helm-charts"
KIALI_CHART = "kiali-server"
PROMETHEUS_CHART = "prometheus"
PROMETHEUS_CHART_VERSION = "28.13.0"
PROMETHEUS_CHART_REPOSITORY = "https://prometheus-community.github.io/helm-charts"


def gateway_api_crds_url(version: str) -> str:
    """The standard-channel Gateway API CRD bundle published with a release."""
    return f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{version}/standard-install.yaml"


# --- Names -----------------------------------------------------------------------------------------------------

ISTIO_NAMESPACE = "istio-system"
DEFAULT_APPS_NAMESPACE = "default"  # on kind, as in the tutorial
# On someone else's cluster the apps get a namespace of the lab's own: enrolling `default` would capture every pod
# already there, and mesh-wide STRICT mTLS would then refuse their plaintext clients.
EXISTING_APPS_NAMESPACE = "istio-ambient-lab"


@dataclass(frozen=True)
class IstioChart:
    chart: str  # the chart's name in the Istio repository
    release: str  # the Helm release name the Istio docs use


ISTIO_BASE = IstioChart(chart="base", release="istio-base")
ISTIOD = IstioChart(chart="istiod", release="istiod")
ISTIO_CNI = IstioChart(chart="cni", release="istio-cni")
ZTUNNEL = IstioChart(chart="ztunnel", release="ztunnel")
ISTIO_CHARTS = (ISTIO_BASE, ISTIOD, ISTIO_CNI, ZTUNNEL)

# Objects Istio's charts create that the checks look for.
ZTUNNEL_POD_LABEL = "app=ztunnel"  # ztunnel's resources are always named ztunnel
ZTUNNEL_ADMIN_PORT = 15000  # /config_dump; binds localhost only
ISTIOD_POD_LABEL = "app=istiod"
ISTIO_CNI_POD_LABEL = "k8s-app=istio-cni-node"  # the cni chart's DaemonSet istio-cni-node

AMBIENT_LABEL = "istio.io/dataplane-mode"
AMBIENT_LABEL_VALUE = "ambient"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"

BOOKINFO_SERVICES = ("details", "ratings", "reviews", "productpage")
BOOKINFO_PORT = 9080
PRODUCTPAGE = "productpage"
SLEEP = "sleep"
NOTSLEEP = "notsleep"
CLIENT_PORT = 80
# A curl pod in a namespace outside the mesh: the client STRICT mTLS must refuse.
OUTSIDE_NAMESPACE = "mesh-outside"
OUTSIDE_CLIENT = "outside-client"
# What the outside client asks for: a service no ALLOW policy covers, so only STRICT mTLS can refuse it.
STRICT_PROBE_SERVICE = "details"
STRICT_PROBE_PATH = "/details/0"


def lab_namespaces(apps_namespace: str) -> tuple[str, ...]:
    """Every namespace the lab installs into or creates: on someone else's cluster, all it may look at or change."""
    return (ISTIO_NAMESPACE, apps_namespace, OUTSIDE_NAMESPACE)

WAYPOINT_NAME = "productpage-waypoint"  # istiod names the waypoint's Deployment, Service and SA after the Gateway
INGRESS_GATEWAY_NAME = "bookinfo-gateway"
INGRESS_GATEWAY_WORKLOAD = "bookinfo-gateway-istio"  # istiod appends -istio for class "istio"
INGRESS_NODE_PORT = 30080
INGRESS_HOST_PORT = 8080  # kind maps 127.0.0.1:8080 to the node port above

KIALI_SERVICE = "kiali"
KIALI_PORT = 20001
KIALI_WEB_ROOT = "/kiali"
# The kiali-server chart names its ServiceAccount after deployment.instance_name (default "kiali"); with
# view_only_mode it binds it to the chart's read-only viewer role only.
KIALI_SERVICE_ACCOUNT = "kiali"
KIALI_METRICS_PORT = 9090  # the chart's server.observability.metrics.port, annotated for Prometheus to scrape
PROMETHEUS_SERVICE = "prometheus"  # the chart's server.fullnameOverride: Deployment, Service and SA
PROMETHEUS_PORT = 9090  # its Service's port, and the port the chart's server listens on (its prometheus.port)
# On someone else's cluster: what Prometheus may read, bound by a RoleBinding in each of the lab's namespaces only.
PROMETHEUS_READER_ROLE = "istio-ambient-lab-prometheus"
# How often the lab's Prometheus scrapes ztunnel, the waypoint and the gateways; the addon checks' waits follow it.
PROMETHEUS_SCRAPE_INTERVAL_S = 15
PROMETHEUS_RELEASE = "prometheus"
KIALI_RELEASE = "kiali"
TRAFFIC_CRONJOB = "bookinfo-traffic"

TRUST_DOMAIN = "cluster.local"

# How long each verification check may keep retrying before it fails: the verify CLI's default, and the default of
# the stack setting verificationTimeout.
VERIFICATION_TIMEOUT_S = 120
VERIFICATION_TIMEOUT_RANGE = (10, 3600)


def spiffe_id(namespace: str, service_account: str) -> str:
    """The SPIFFE identity Istio's CA writes into a workload's certificate."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def principal(namespace: str, service_account: str) -> str:
    """The same identity as AuthorizationPolicy spells it (no scheme)."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


# --- Images ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str  # repository, registry included
    tag: str
    digest: str | None = None  # sha256:..., where a digest has been checked against the registry

    @property
    def ref(self) -> str:
        """The reference a pod spec uses: by digest where known, else by tag."""
        return f"{self.name}:{self.tag}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


BOOKINFO_IMAGE_TAG = "1.20.3"
CURL_IMAGE = Image("docker.io/curlimages/curl", "8.16.0")
# curl needs no particular user or home: the clients and the traffic job run it as this non-root uid, which Pod
# Security `restricted` requires to be numeric where the image names its user by name.
CLIENT_UID = 65532

# Bookinfo workloads: (deployment, service, version); the three reviews versions share one ServiceAccount.
BOOKINFO_WORKLOADS = (
    ("details-v1", "details", "v1"),
    ("ratings-v1", "ratings", "v1"),
    ("reviews-v1", "reviews", "v1"),
    ("reviews-v2", "reviews", "v2"),
    ("reviews-v3", "reviews", "v3"),
    ("productpage-v1", "productpage", "v1"),
)


def bookinfo_image(service: str, version: str) -> Image:
    return Image(f"docker.io/istio/examples-bookinfo-{service}-{version}", BOOKINFO_IMAGE_TAG)


# The Helm profile each Istio chart is installed with (components/istio_ambient.py passes it as `profile`).
# istiod needs it for PILOT_ENABLE_AMBIENT, the CNI agent for cni.ambient.enabled; ztunnel needs none.
ISTIO_CHART_PROFILES = {ISTIOD: "ambient", ISTIO_CNI: "ambient"}
# The `global.variant` a profile sets, which the charts append to the image tag (`<version>-<variant>`): the ambient
# profile (chart files/profile-ambient.yaml) sets `distroless`.
PROFILE_IMAGE_VARIANTS = {"ambient": "distroless"}


def istio_image_tag(chart: IstioChart, version: str) -> str:
    """The tag of the image a chart runs under the profile the lab gives it: ``1.31.1`` or ``1.31.1-distroless``."""
    variant = PROFILE_IMAGE_VARIANTS.get(ISTIO_CHART_PROFILES.get(chart, ""))
    return f"{version}-{variant}" if variant else version


def istio_images(version: str = ISTIO_VERSION) -> list[Image]:
    """The images Istio runs in the lab, with the tags the charts really render.

    istiod and the CNI agent get the ambient profile and so the distroless variant; ztunnel gets no profile and
    runs the plain image. Waypoints and gateways are not rendered by a chart but by istiod's injector, which takes
    istiod's own `global.variant`: proxyv2 carries istiod's tag.
    """
    return [
        Image("docker.io/istio/pilot", istio_image_tag(ISTIOD, version)),
        Image("docker.io/istio/install-cni", istio_image_tag(ISTIO_CNI, version)),
        Image("docker.io/istio/ztunnel", istio_image_tag(ZTUNNEL, version)),
        Image("docker.io/istio/proxyv2", istio_image_tag(ISTIOD, version)),
    ]


KIALI_IMAGE = Image("quay.io/kiali/kiali", f"v{KIALI_VERSION}")
# What prometheus chart 28.13.0 runs, from docker.io/ghcr.io as Istio's addon does (quay.io is its default).
PROMETHEUS_IMAGE = Image("docker.io/prom/prometheus", "v3.10.0")
PROMETHEUS_RELOADER_IMAGE = Image("ghcr.io/prometheus-operator/prometheus-config-reloader", "v0.89.0")


def all_images(istio_version: str = ISTIO_VERSION, observability: bool = True) -> list[Image]:
    """Every image a lab runs: what the offline preload pulls and what the tests hold pods to."""
    images = istio_images(istio_version)
    images += [bookinfo_image(service, version) for _, service, version in BOOKINFO_WORKLOADS]
    images.append(CURL_IMAGE)
    if observability:
        images += [PROMETHEUS_IMAGE, PROMETHEUS_RELOADER_IMAGE, KIALI_IMAGE]
    return images

# The Pod Security admission label that sets a namespace's enforced level.
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"

# What the user types to drive the lab; named in every sentence that tells them what to do.
LAB_SCRIPT = "./lab.sh"
