"""Every config error is one sentence naming the key, the bad value and what is allowed: asserted exactly."""

import re

import pytest

from lab import catalog
from lab.config import DEFAULTS, ConfigError, default_cluster_name, load

P = "istio-ambient-lab"


def test_defaults_give_the_tutorial_lab():
    cfg = load({}, "l4-only")
    assert cfg.mesh_mode == "l4-only" and not cfg.waypoint
    assert cfg.target == "kind" and cfg.owns_cluster
    assert cfg.cluster_name == "ambient-l4-only"
    assert cfg.workers == 2
    assert cfg.node_image == catalog.KIND_NODE_IMAGE
    assert cfg.istio_version == "1.31.1"
    assert cfg.apps_namespace == "default"
    assert cfg.observability and cfg.verify and cfg.fail_on_verification_error
    assert cfg.verification_timeout == catalog.VERIFICATION_TIMEOUT_S == 120


def test_l7_and_existing_target():
    cfg = load({"meshMode": "l7", "target": "existing", "kubeContext": "prod", "platform": "k3s"}, "l7")
    assert cfg.waypoint and not cfg.owns_cluster
    assert cfg.kube_context == "prod" and cfg.platform == "k3s"


def test_apps_go_to_a_namespace_of_the_labs_own_on_an_existing_cluster():
    """Enrolling `default` on someone's cluster would capture every pod already there; on kind it is the tutorial's."""
    existing = {"target": "existing", "kubeContext": "prod"}
    assert load(existing, "s").apps_namespace == "istio-ambient-lab"
    assert load({**existing, "appsNamespace": "team-lab"}, "s").apps_namespace == "team-lab"
    assert load({}, "s").apps_namespace == "default"


def test_workers_accepts_mock_floats():
    assert load({"workers": "3.0"}, "s").workers == 3


def test_cluster_name_derived_from_any_stack_name():
    assert default_cluster_name("Team_Lab.7") == "ambient-team-lab-7"
    assert load({}, "x" * 80).cluster_name == ("ambient-" + "x" * 80)[:49]


BAD = [
    ({"meshMode": "l8"}, f"{P}:meshMode is 'l8', but it must be one of: l4-only, l7."),
    ({"target": "minikube"}, f"{P}:target is 'minikube', but it must be one of: kind, existing."),
    ({"clusterName": "My_Lab"}, f"{P}:clusterName is 'My_Lab', but it must be a DNS label: at most 49 lowercase "
     "letters, digits and '-', starting and ending with a letter or digit."),
    ({"clusterName": "a" * 50}, f"{P}:clusterName is '{'a' * 50}', but it must be a DNS label: at most 49 lowercase "
     "letters, digits and '-', starting and ending with a letter or digit."),
    ({"workers": "0"}, f"{P}:workers is '0', but it must be a whole number from 1 to 5."),
    ({"workers": "6"}, f"{P}:workers is '6', but it must be a whole number from 1 to 5."),
    ({"workers": "two"}, f"{P}:workers is 'two', but it must be a whole number from 1 to 5."),
    ({"nodeImage": "kindest/node:v1.36.1"}, f"{P}:nodeImage is 'kindest/node:v1.36.1', but it must be pinned by "
     "digest, as in kindest/node:v1.36.1@sha256:<64 hex digits>."),
    ({"nodeImage": "kindest/node:v1.31.4@sha256:" + "a" * 64}, f"{P}:nodeImage is 'kindest/node:v1.31.4@sha256:"
     + "a" * 64 + "', but its tag must be a Kubernetes version from v1.32 to v1.36, as in v1.36.1."),
    ({"nodeImage": "kindest/node:latest@sha256:" + "a" * 64}, f"{P}:nodeImage is 'kindest/node:latest@sha256:"
     + "a" * 64 + "', but its tag must be a Kubernetes version from v1.32 to v1.36, as in v1.36.1."),
    ({"istioVersion": "1.29.3"}, f"{P}:istioVersion is '1.29.3', but it must be 1.30.5 or newer, because older "
     "releases let istio-cni flip iptables backends and duplicate rules in enrolled pods (istio/istio#61020)."),
    ({"istioVersion": "1.30.4"}, f"{P}:istioVersion is '1.30.4', but it must be 1.30.5 or newer, because older "
     "releases let istio-cni flip iptables backends and duplicate rules in enrolled pods (istio/istio#61020)."),
    ({"istioVersion": "1.31"}, f"{P}:istioVersion is '1.31', but it must be a release version such as 1.30.5."),
    ({"chartRepository": "ftp://charts"}, f"{P}:chartRepository is 'ftp://charts', but it must be an https:// or "
     "oci:// chart repository URL."),
    ({"chartRepository": "https://istio-release.storage.googleapis.com/charts"}, f"{P}:chartRepository is "
     "'https://istio-release.storage.googleapis.com/charts', but that repository has no 1.31 charts and is being "
     "retired: use https://blob.istio.io/istio-release/charts."),
    ({"gatewayApiVersion": "1.6.1"}, f"{P}:gatewayApiVersion is '1.6.1', but it must be a release version such as "
     "v1.0.0."),
    ({"gatewayApiVersion": "v0.8.1"}, f"{P}:gatewayApiVersion is 'v0.8.1', but it must be v1.0.0 or newer, because "
     "the lab's Gateway and HTTPRoute objects use gateway.networking.k8s.io/v1, which older bundles do not serve."),
    ({"installGatewayApiCrds": "yes"}, f"{P}:installGatewayApiCrds is 'yes', but it must be true or false."),
    ({"verificationTimeout": "5"}, f"{P}:verificationTimeout is '5', but it must be a whole number from 10 to 3600."),
    ({"verificationTimeout": "2m"}, f"{P}:verificationTimeout is '2m', but it must be a whole number from 10 to 3600."),
    ({"appsNamespace": "istio-system"}, f"{P}:appsNamespace is 'istio-system', but the apps need a namespace of "
     "their own, such as default."),
    ({"ingressHostPort": "80"}, f"{P}:ingressHostPort is '80', but it must be a whole number from 1024 to 65535."),
    ({"platform": "gke"}, f"{P}:platform is 'gke', but it applies only to target existing; unset it for a kind "
     "cluster."),
    ({"target": "existing"}, f"{P}:kubeContext is '', but target existing needs the kubeconfig context of the "
     "cluster to use."),
    ({"target": "existing", "kubeContext": "c", "platform": "aks"}, f"{P}:platform is 'aks', but it must be empty "
     "or one of: gke, eks, k3d, k3s, microk8s, minikube."),
    ({"target": "existing", "kubeContext": "c", "platform": "openshift"}, f"{P}:platform is 'openshift', but the lab "
     "does not support OpenShift: Istio's OpenShift profile trusts only a ztunnel in kube-system, while the lab "
     "installs istio-cni and ztunnel in istio-system, so ambient mTLS would not work there."),
    ({"target": "existing", "kubeContext": "c", "adoptExistingCluster": "true"}, f"{P}:adoptExistingCluster is "
     "'true', but it applies only to target kind."),
    ({"target": "existing", "kubeContext": "c", "preloadImages": "true"}, f"{P}:preloadImages is "
     "'true', but it applies only to target kind."),
    ({"registryMirror": "ftp://mirror"}, f"{P}:registryMirror is 'ftp://mirror', but registry mirror 'ftp://mirror' "
     "is not a URL of the form http(s)://host[:port][/path], e.g. http://kind-registry:5000 or "
     "https://mirror.example.com."),
    ({"meshmode": "l7"}, f"{P}:meshmode is 'l7', but the lab has no such key; known keys are "
     + ", ".join(DEFAULTS) + "."),
]


@pytest.mark.parametrize("raw,message", BAD, ids=[next(iter(raw)) + "=" + str(next(iter(raw.values())))[:20] for raw, _ in BAD])
def test_bad_values_are_refused_with_one_sentence(raw, message):
    with pytest.raises(ConfigError) as caught:
        load(raw, "l4-only")
    assert str(caught.value) == message
    assert not re.search(r"[.!?] [A-Z]", str(caught.value)), "one sentence"


def test_kubeconfig_path_is_made_absolute_for_provider_and_kubectl_alike(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    cfg = load({"target": "existing", "kubeContext": "c", "kubeconfigPath": "~/.kube/prod.yaml"}, "s")
    assert cfg.kubeconfig_path == "/home/me/.kube/prod.yaml"
