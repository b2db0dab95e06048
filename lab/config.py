"""The lab's configuration: read once, validated once, before any resource exists.

`load()` takes the raw strings Pulumi hands the program (project defaults from `Pulumi.yaml` merged with the stack's
file) and returns a frozen `LabConfig`, or raises `ConfigError` whose message is one sentence naming the key, the bad
value and what is allowed. Plain Python: no Pulumi import, so tests and the CLI use it too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lab import catalog, images

PROJECT = "istio-ambient-lab"

MESH_MODES = ("l4-only", "l7")
TARGETS = ("kind", "existing")
PLATFORMS = ("gke", "eks", "k3d", "k3s", "microk8s", "minikube")
# Istio's charts have platform profiles for these; EKS needs none (its prerequisites are VPC CNI settings), and
# passing `eks` to the charts would fail with "unknown platform".
CHART_PLATFORMS = ("gke", "k3d", "k3s", "microk8s", "minikube")
# Istio's OpenShift profile sets trustedZtunnelNamespace: kube-system, so istiod would issue workload certificates
# only to a ztunnel in kube-system; the lab keeps istio-cni and ztunnel in istio-system, where every check looks.
UNSUPPORTED_PLATFORMS = {
    "openshift": "the lab does not support OpenShift: Istio's OpenShift profile trusts only a ztunnel in kube-system, "
                 "while the lab installs istio-cni and ztunnel in istio-system, so ambient mTLS would not work there",
}
WORKERS_RANGE = (1, 5)
# kind appends "-control-plane" (14 characters) to name the node, which must stay a 63-character DNS label.
CLUSTER_NAME_MAX = 49

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NODE_TAG = re.compile(r"^v1\.(\d+)\.(\d+)$")


class ConfigError(ValueError):
    """A configuration value the lab cannot use; the message says what to change."""


@dataclass(frozen=True)
class LabConfig:
    mesh_mode: str
    target: str
    cluster_name: str
    workers: int
    node_image: str
    istio_version: str
    chart_repository: str
    gateway_api_version: str
    install_gateway_api_crds: bool
    platform: str | None
    kube_context: str | None
    kubeconfig_path: str | None
    adopt_existing_cluster: bool
    apps_namespace: str
    ingress_host_port: int
    observability: bool
    verify: bool
    fail_on_verification_error: bool
    verification_timeout: int  # seconds each check may retry before it fails (verify --timeout)
    preload_images: bool
    registry_mirror: str | None

    @property
    def waypoint(self) -> bool:
        """Whether L7 processing (a waypoint for productpage) is on."""
        return self.mesh_mode == "l7"

    @property
    def owns_cluster(self) -> bool:
        """Whether the stack creates, and so also destroys, the cluster."""
        return self.target == "kind"


# Every key, its default and its one-line description: Pulumi.yaml's `config:` block must say the same (a test
# holds the two together), so a user sees the same defaults in `pulumi config` and here.
DEFAULTS: dict[str, str] = {
    "meshMode": "l4-only",
    "target": "kind",
    "clusterName": "",
    "workers": "2",
    "nodeImage": catalog.KIND_NODE_IMAGE,
    "istioVersion": catalog.ISTIO_VERSION,
    "chartRepository": catalog.ISTIO_CHART_REPOSITORY,
    "gatewayApiVersion": catalog.GATEWAY_API_VERSION,
    "installGatewayApiCrds": "true",
    "platform": "",
    "kubeContext": "",
    "kubeconfigPath": "",
    "adoptExistingCluster": "false",
    "appsNamespace": "",  # empty: default on kind, the lab's own namespace on an existing cluster
    "ingressHostPort": str(catalog.INGRESS_HOST_PORT),
    "observability": "true",
    "verify": "true",
    "failOnVerificationError": "true",
    "verificationTimeout": str(catalog.VERIFICATION_TIMEOUT_S),
    "preloadImages": "false",
    "registryMirror": "",
}


def _fail(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{PROJECT}:{key} is {value!r}, but {allowed}.")


def _version_tuple(text: str) -> tuple[int, int, int]:
    match = _SEMVER.match(text.removeprefix("v"))
    assert match, text  # callers validate the format first
    return int(match[1]), int(match[2]), int(match[3])


def _bool(raw: Mapping[str, str], key: str) -> bool:
    value = raw[key].strip().lower()
    if value not in ("true", "false"):
        raise _fail(key, raw[key], "it must be true or false")
    return value == "true"


def _int(raw: Mapping[str, str], key: str, low: int, high: int) -> int:
    text = raw[key].strip()
    # Pulumi hands integers over as strings; under mocks they can arrive as "2.0".
    if re.fullmatch(r"\d+(\.0)?", text):
        value = int(float(text))
        if low <= value <= high:
            return value
    raise _fail(key, raw[key], f"it must be a whole number from {low} to {high}")


def _one_of(raw: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str:
    value = raw[key].strip()
    if value not in allowed:
        raise _fail(key, raw[key], f"it must be one of: {', '.join(allowed)}")
    return value


def _dns_label(raw: Mapping[str, str], key: str, value: str, max_length: int = 63) -> str:
    if not _DNS_LABEL.match(value) or len(value) > max_length:
        raise _fail(
            key, value, f"it must be a DNS label: at most {max_length} lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _node_image(raw: Mapping[str, str], key: str) -> str:
    value = raw[key].strip()
    ref, _, digest = value.partition("@")
    if not _DIGEST.match(digest):
        raise _fail(key, value, "it must be pinned by digest, as in kindest/node:v1.36.1@sha256:<64 hex digits>")
    repository, _, tag = ref.rpartition(":")
    tag_match = _NODE_TAG.match(tag)
    low, high = catalog.KUBERNETES_MINOR_RANGE
    if not repository or "/" in tag or not tag_match or not low <= int(tag_match[1]) <= high:
        raise _fail(key, value, f"its tag must be a Kubernetes version from v1.{low} to v1.{high}, as in v1.36.1")
    return value


def _minimum_version(raw: Mapping[str, str], key: str, minimum: str, why: str, prefix: str = "") -> str:
    value = raw[key].strip()
    bare = value.removeprefix(prefix) if prefix else value
    if not _SEMVER.match(bare) or (prefix and not value.startswith(prefix)):
        raise _fail(key, value, f"it must be a release version such as {prefix}{minimum.removeprefix(prefix)}")
    if _version_tuple(bare) < _version_tuple(minimum.removeprefix(prefix)):
        raise _fail(key, value, f"it must be {minimum} or newer, because {why}")
    return value


def _chart_repository(raw: Mapping[str, str], key: str) -> str:
    value = raw[key].strip().rstrip("/")
    if not re.match(r"^(https|oci)://[^\s/]+(/[^\s]*)?$", value):
        raise _fail(key, raw[key], "it must be an https:// or oci:// chart repository URL")
    if "istio-release.storage.googleapis.com" in value:
        raise _fail(key, raw[key], f"that repository has no 1.31 charts and is being retired: use {catalog.ISTIO_CHART_REPOSITORY}")
    return value


def default_cluster_name(stack: str) -> str:
    """Each stack owns its own kind cluster, named after the stack so two stacks never share one."""
    return f"ambient-{re.sub(r'[^a-z0-9-]', '-', stack.lower())}"[:CLUSTER_NAME_MAX].strip("-")


def load(raw_config: Mapping[str, str], stack: str) -> LabConfig:
    """Validates the merged raw configuration of one stack.

    Args:
        raw_config: key (without the project prefix) to string value; missing keys take `DEFAULTS`.
        stack: the stack's name, used to derive the cluster name when none is set.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the first bad value, as one sentence naming the key, the value and what is allowed.
    """
    unknown = sorted(set(raw_config) - set(DEFAULTS))
    if unknown:
        raise _fail(unknown[0], raw_config[unknown[0]], f"the lab has no such key; known keys are {', '.join(DEFAULTS)}")
    raw = {**DEFAULTS, **{k: str(v) for k, v in raw_config.items()}}

    mesh_mode = _one_of(raw, "meshMode", MESH_MODES)
    target = _one_of(raw, "target", TARGETS)
    cluster_name = raw["clusterName"].strip() or default_cluster_name(stack)
    _dns_label(raw, "clusterName", cluster_name, CLUSTER_NAME_MAX)
    workers = _int(raw, "workers", *WORKERS_RANGE)
    node_image = _node_image(raw, "nodeImage")
    istio_version = _minimum_version(
        raw, "istioVersion", catalog.ISTIO_MINIMUM_VERSION,
        "older releases let istio-cni flip iptables backends and duplicate rules in enrolled pods (istio/istio#61020)",
    )
    chart_repository = _chart_repository(raw, "chartRepository")
    gateway_api_version = _minimum_version(
        raw, "gatewayApiVersion", catalog.GATEWAY_API_MINIMUM_VERSION,
        "the lab's Gateway and HTTPRoute objects use gateway.networking.k8s.io/v1, which older bundles do not serve",
        prefix="v",
    )
    install_crds = _bool(raw, "installGatewayApiCrds")
    adopt = _bool(raw, "adoptExistingCluster")
    apps_namespace = raw["appsNamespace"].strip() or (
        catalog.DEFAULT_APPS_NAMESPACE if target == "kind" else catalog.EXISTING_APPS_NAMESPACE)
    _dns_label(raw, "appsNamespace", apps_namespace)
    if apps_namespace in (catalog.ISTIO_NAMESPACE, catalog.OUTSIDE_NAMESPACE, "kube-system"):
        raise _fail("appsNamespace", apps_namespace, "the apps need a namespace of their own, such as default")
    ingress_host_port = _int(raw, "ingressHostPort", 1024, 65535)

    preload_images = _bool(raw, "preloadImages")
    registry_mirror = raw["registryMirror"].strip() or None
    if registry_mirror:
        try:
            registry_mirror = images.validate_mirror_url(registry_mirror)
        except images.ImagesError as error:
            raise ConfigError(f"{PROJECT}:registryMirror is {raw['registryMirror']!r}, but {error}") from None

    platform = raw["platform"].strip() or None
    kube_context = raw["kubeContext"].strip() or None
    # Absolute, ~ expanded: the provider and kubectl (which expands no ~) must read the same file.
    kubeconfig_path = os.path.abspath(os.path.expanduser(raw["kubeconfigPath"].strip())) if raw["kubeconfigPath"].strip() else None
    if target == "kind":
        for key, value in (("platform", platform), ("kubeContext", kube_context), ("kubeconfigPath", kubeconfig_path)):
            if value:
                raise _fail(key, value, "it applies only to target existing; unset it for a kind cluster")
    else:
        if platform in UNSUPPORTED_PLATFORMS:
            raise _fail("platform", platform, UNSUPPORTED_PLATFORMS[platform])
        if platform is not None and platform not in PLATFORMS:
            raise _fail("platform", platform, f"it must be empty or one of: {', '.join(PLATFORMS)}")
        if not kube_context:
            raise _fail("kubeContext", "", "target existing needs the kubeconfig context of the cluster to use")
        for key, value in (("adoptExistingCluster", adopt), ("preloadImages", preload_images),
                           ("registryMirror", registry_mirror)):
            if value:
                raise _fail(key, raw[key], "it applies only to target kind")

    return LabConfig(
        mesh_mode=mesh_mode,
        target=target,
        cluster_name=cluster_name,
        workers=workers,
        node_image=node_image,
        istio_version=istio_version,
        chart_repository=chart_repository,
        gateway_api_version=gateway_api_version,
        install_gateway_api_crds=install_crds,
        platform=platform,
        kube_context=kube_context,
        kubeconfig_path=kubeconfig_path,
        adopt_existing_cluster=adopt,
        apps_namespace=apps_namespace,
        ingress_host_port=ingress_host_port,
        observability=_bool(raw, "observability"),
        verify=_bool(raw, "verify"),
        fail_on_verification_error=_bool(raw, "failOnVerificationError"),
        verification_timeout=_int(raw, "verificationTimeout", *catalog.VERIFICATION_TIMEOUT_RANGE),
        preload_images=preload_images,
        registry_mirror=registry_mirror,
    )
