"""The lab foundation under mocks: cluster, provider, Istio releases, secrets, for both stacks."""

import os

import pytest
import yaml

from lab import catalog, outputs
from lab import images, kind_cluster
from lab.kind_cluster import OWNER_LABEL
from tests.harness import (
    FAKE_BUNDLE,
    FAKE_KUBECONFIG,
    FAKE_OWNER_TOKEN,
    STACKS,
    artifact_cache,
    fake_chart_bytes,
    run_program,
)

GATEWAY_API_CRDS = "istio-ambient-lab:index:GatewayApiCrds"

COMMAND = "command:local:Command"
RELEASE = "kubernetes:helm.sh/v3:Release"
PROVIDER = "pulumi:providers:kubernetes"
COMPONENT_PREFIX = "istio-ambient-lab:index:"


@pytest.mark.parametrize("stack", STACKS)
def test_components_and_their_children(runs, stack):
    run = runs[stack]
    components = {r.name: r.type.removeprefix(COMPONENT_PREFIX) for r in run.resources.values()
                  if r.type.startswith(COMPONENT_PREFIX)}
    assert components["cluster"] == "KindCluster"
    assert components["istio"] == "IstioAmbient"
    assert components["bookinfo"] == "Bookinfo"
    assert components["policies"] == "MeshPolicies"
    component_urns = {r.urn for r in run.resources.values() if r.type.startswith(COMPONENT_PREFIX)}
    for resource in run.resources.values():
        if not resource.type.startswith(COMPONENT_PREFIX):
            # parent=self everywhere: nothing but components hangs directly off the stack.
            assert resource.parent in component_urns, f"{resource.urn} has parent {resource.parent!r}"


@pytest.mark.parametrize("stack", STACKS)
def test_every_kubernetes_resource_uses_the_kind_provider_and_dies_with_the_cluster(runs, stack):
    run = runs[stack]
    provider = run.named(PROVIDER, "kind")
    cluster = run.named(COMMAND, "kind-cluster")
    for resource in run.kubernetes():
        assert resource.provider.startswith(provider.urn + "::"), f"{resource.urn} uses provider {resource.provider!r}"
        assert resource.deleted_with == cluster.urn, f"{resource.urn} is deleted one by one"
    assert len(run.kubernetes()) > 30


def test_urns_are_unique(runs, existing_run):
    for run in [*runs.values(), existing_run]:
        duplicates = {urn for urn in run.registered_urns if run.registered_urns.count(urn) > 1}
        assert not duplicates
        assert len(run.registered_urns) == len(run.resources) > 40


@pytest.mark.parametrize("stack", STACKS)
def test_kind_cluster_command_and_config(runs, stack):
    run = runs[stack]
    cluster = run.named(COMMAND, "kind-cluster")
    name = f"ambient-{stack}"
    owner = f"istio-ambient-lab.{stack}"
    assert cluster.inputs["create"] == f"venv/bin/python -m lab.kind_cluster create --name {name} --owner {owner}"
    assert cluster.inputs["delete"] == f"venv/bin/python -m lab.kind_cluster delete --name {name} --owner {owner}"
    assert cluster.delete_before_replace, "a new cluster of the same name needs the old one gone first"
    assert cluster.inputs["triggers"][:2] == [name, catalog.KIND_NODE_IMAGE]
    config = yaml.safe_load(cluster.inputs["stdin"])
    assert config["name"] == name
    assert config["networking"]["apiServerAddress"] == "127.0.0.1"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    assert {node["image"] for node in config["nodes"]} == {catalog.KIND_NODE_IMAGE}
    assert "@sha256:" in catalog.KIND_NODE_IMAGE
    mappings = [m for node in config["nodes"] for m in node.get("extraPortMappings", [])]
    assert mappings and all(m["listenAddress"] == "127.0.0.1" for m in mappings)
    host_port = 8080 if stack == "l4-only" else 8081
    assert mappings == [{"containerPort": catalog.INGRESS_NODE_PORT, "hostPort": host_port,
                         "listenAddress": "127.0.0.1", "protocol": "TCP"}]
    # The owner label is not in the program's config: the create adds it with a token unique to the state.
    assert "labels" not in config["nodes"][0]
    labelled = yaml.safe_load(kind_cluster.with_owner_label(cluster.inputs["stdin"], f"{owner}.0a1b2c3d"))
    assert labelled["nodes"][0]["labels"] == {OWNER_LABEL: f"{owner}.0a1b2c3d"}


@pytest.mark.parametrize("stack", STACKS)
def test_the_cluster_owner_and_node_shape_are_exported_for_lab_sh(stack):
    run = run_program(stack)
    assert run.outputs["cluster_owner"] == f"istio-ambient-lab.{stack}.{FAKE_OWNER_TOKEN}"
    assert run.outputs["node_shape"] == {"clusterName": f"ambient-{stack}", "workers": 2,
                                         "nodeImage": catalog.KIND_NODE_IMAGE,
                                         "ingressHostPort": 8080 if stack == "l4-only" else 8081}


def test_worker_count_and_adoption_reach_the_cluster():
    run = run_program("l4-only", {"workers": "4", "adoptExistingCluster": "true", "clusterName": "mylab"})
    cluster = run.named(COMMAND, "kind-cluster")
    config = yaml.safe_load(cluster.inputs["stdin"])
    assert [n["role"] for n in config["nodes"]] == ["control-plane"] + ["worker"] * 4
    assert cluster.inputs["create"].endswith("--name mylab --owner istio-ambient-lab.l4-only --adopt")
    assert run.outputs[outputs.CLUSTER_NAME] == "mylab"


@pytest.mark.parametrize("stack", STACKS)
def test_kubeconfig_is_secret_everywhere_and_never_logged(runs, stack):
    run = runs[stack]
    provider = run.named(PROVIDER, "kind")
    assert "kubeconfig" in provider.secret_inputs
    assert provider.inputs["context"] == f"kind-ambient-{stack}"
    assert provider.inputs["clusterIdentifier"].startswith(f"kind-ambient-{stack}-")
    assert outputs.KUBECONFIG in run.secret_outputs
    [invoke] = [i for i in run.invokes if "lab.kind_cluster kubeconfig" in i.args.get("command", "")]
    assert invoke.token == "command:local:run"
    assert invoke.args["logging"] == "none"
    assert invoke.args["command"] == f"venv/bin/python -m lab.kind_cluster kubeconfig --name ambient-{stack}"
    # The key inside the kubeconfig appears nowhere but in the secret-wrapped inputs.
    for resource in run.resources.values():
        for key, value in resource.inputs.items():
            if key not in resource.secret_inputs:
                assert "RkFLRS1QUklWQVRFLUtFWQ" not in str(value), f"{resource.urn}.{key} carries the key in plain text"
    for name, value in run.outputs.items():
        if name not in run.secret_outputs:
            assert FAKE_KUBECONFIG not in str(value)


@pytest.mark.parametrize("stack", STACKS)
def test_istio_helm_releases(runs, stack):
    run = runs[stack]
    releases = {r.name: r for r in run.of_type(RELEASE) if r.name in {c.release for c in catalog.ISTIO_CHARTS}}
    assert set(releases) == {"istio-base", "istiod", "istio-cni", "ztunnel"}
    for chart in catalog.ISTIO_CHARTS:
        release = releases[chart.release]
        assert release.inputs["name"] == chart.release, "explicit release names, never generated ones"
        # From the lab's verified cache, fetched through the repository's index.yaml before anything was created.
        assert release.inputs["chart"] == os.path.join(artifact_cache(), "charts", f"{chart.chart}-1.31.1.tgz")
        assert open(release.inputs["chart"], "rb").read() == fake_chart_bytes(chart.chart, "1.31.1")
        assert release.inputs["version"] == "1.31.1"
        assert release.inputs["namespace"] == "istio-system"
        assert not release.inputs.get("repositoryOpts")
        assert release.inputs["timeout"] >= 600
        assert not release.inputs.get("skipAwait")
    assert releases["istiod"].inputs["values"] == {"profile": "ambient"}
    assert releases["istio-cni"].inputs["values"] == {"profile": "ambient"}
    assert releases["ztunnel"].inputs["values"] == {}, "profile ambient would switch ztunnel to distroless"
    assert releases["istio-base"].inputs["values"] == {}


@pytest.mark.parametrize("stack", STACKS)
def test_istio_dependency_graph(runs, stack):
    run = runs[stack]
    base, istiod = run.named(RELEASE, "istio-base"), run.named(RELEASE, "istiod")
    cni, ztunnel = run.named(RELEASE, "istio-cni"), run.named(RELEASE, "ztunnel")
    crds = run.named(GATEWAY_API_CRDS, "gateway-api-crds")
    namespace = run.named("kubernetes:core/v1:Namespace", "istio-system")
    objects = [r for r in run.resources.values() if r.parent == crds.urn]
    # The bundle's objects one by one (no ConfigFile component for the provider to construct), as in the file.
    assert sorted(f"{r.inputs['kind']}/{r.inputs['metadata']['name']}" for r in objects) == sorted(
        f"{doc['kind']}/{doc['metadata']['name']}" for doc in yaml.safe_load_all(open(FAKE_BUNDLE)) if doc)
    assert all("status" not in r.inputs and r.deleted_with for r in objects)
    assert run.depends_on(base, namespace)
    assert run.depends_on(istiod, base) and all(run.depends_on(istiod, r) for r in objects)
    assert run.depends_on(cni, namespace) and not run.depends_on(cni, base) and not run.depends_on(cni, istiod)
    assert run.depends_on(ztunnel, istiod)


def test_chart_repository_and_versions_come_from_config():
    run = run_program("l4-only", {"istioVersion": "1.30.5", "chartRepository": "oci://ghcr.io/istio/release/charts",
                                  "gatewayApiVersion": "v1.6.0"})
    istiod = run.named(RELEASE, "istiod")
    assert istiod.inputs["chart"] == "oci://ghcr.io/istio/release/charts/istiod"
    assert "repositoryOpts" not in istiod.inputs or not istiod.inputs["repositoryOpts"]
    assert istiod.inputs["version"] == "1.30.5"
    assert os.path.exists(os.path.join(artifact_cache(), "gateway-api", "standard-install-v1.6.0.yaml"))
    assert run.outputs[outputs.ISTIO_VERSION] == "1.30.5"


@pytest.mark.parametrize("stack", STACKS)
def test_foundation_outputs(runs, stack):
    out = runs[stack].outputs
    assert out[outputs.CLUSTER_NAME] == f"ambient-{stack}"
    assert out[outputs.TARGET] == "kind"
    assert out[outputs.KUBE_CONTEXT] == f"kind-ambient-{stack}"
    assert out[outputs.ISTIO_VERSION] == "1.31.1"
    assert out[outputs.MESH_MODE] == stack
    assert out[outputs.HELM_RELEASES] == {
        "istio-base": "deployed", "istiod": "deployed", "istio-cni": "deployed", "ztunnel": "deployed",
    }


def test_existing_cluster_creates_no_cluster_and_pins_the_context(existing_run):
    run = existing_run
    assert [command.name for command in run.of_type(COMMAND)] == ["cluster-identity"], "no cluster is created"
    assert not [r for r in run.resources.values() if r.type.endswith(":KindCluster")]
    provider = run.named(PROVIDER, "existing")
    assert provider.inputs["context"] == "gke_proj_europe-west1_lab"
    assert provider.inputs["clusterIdentifier"] == "existing-gke_proj_europe-west1_lab"
    # No KUBECONFIG: kubectl's default file, named absolutely, so a later shell's KUBECONFIG cannot redirect destroy.
    default = os.path.join(os.path.expanduser("~"), ".kube", "config")
    assert "kubeconfig" not in provider.secret_inputs and provider.inputs["kubeconfig"] == default
    for resource in run.kubernetes():
        assert resource.provider.startswith(provider.urn + "::"), resource.urn
        assert not resource.deleted_with, f"{resource.urn} must be deleted one by one on an existing cluster"
    assert run.named(RELEASE, "istiod").inputs["values"] == {"profile": "ambient", "global": {"platform": "gke"}}
    assert run.named(RELEASE, "ztunnel").inputs["values"] == {"global": {"platform": "gke"}}
    assert run.named(RELEASE, "istio-base").inputs["values"] == {}
    assert run.outputs[outputs.KUBE_CONTEXT] == "gke_proj_europe-west1_lab"
    assert outputs.KUBECONFIG not in run.outputs


def test_an_existing_clusters_identity_is_recorded_before_anything_reaches_it(existing_run, monkeypatch, tmp_path):
    """The record ./lab.sh compares before every up and destroy: taken through the kubeconfig files the provider
    reads, named absolutely, before the provider may touch the cluster."""
    identity = existing_run.named(COMMAND, "cluster-identity")
    assert identity.inputs["create"] == "venv/bin/python -m lab.cluster_identity --context gke_proj_europe-west1_lab"
    assert identity.inputs["environment"] == {"KUBECONFIG": os.path.join(os.path.expanduser("~"), ".kube", "config")}
    assert "delete" not in identity.inputs and "triggers" not in identity.inputs, "recorded once, at the first up"
    assert existing_run.depends_on(existing_run.named(PROVIDER, "existing"), identity)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBECONFIG", "prod.yaml")  # relative: the state keeps what it meant at this up
    run = run_program("l4-only", {"target": "existing", "kubeContext": "minikube"})
    assert run.named(COMMAND, "cluster-identity").inputs["environment"] == {"KUBECONFIG": str(tmp_path / "prod.yaml")}
    assert run.named(PROVIDER, "existing").inputs["kubeconfig"] == str(tmp_path / "prod.yaml")


@pytest.mark.parametrize("overrides", [{}, {"target": "existing", "kubeContext": "lab"}])
def test_the_environment_cannot_make_a_provider_adopt_objects_it_did_not_create(monkeypatch, overrides):
    """PULUMI_K8S_UPSERT_EXISTING_OBJECTS / _ENABLE_PATCH_FORCE apply only when the provider is given no value: the
    SDK then sends the environment's, and the provider falls back to it (pulumi-kubernetes provider.go Configure).
    A provider's config reaches the engine as strings."""
    monkeypatch.setenv("PULUMI_K8S_UPSERT_EXISTING_OBJECTS", "true")
    monkeypatch.setenv("PULUMI_K8S_ENABLE_PATCH_FORCE", "true")
    providers = run_program("l4-only", overrides).of_type(PROVIDER)
    assert providers
    for provider in providers:
        assert provider.inputs["upsertExistingObjects"] == "false", provider.urn
        assert provider.inputs["enablePatchForce"] == "false", provider.urn


def test_existing_cluster_apps_get_a_namespace_of_their_own_never_default(existing_run):
    namespace = existing_run.named("kubernetes:core/v1:Namespace", "istio-ambient-lab")
    assert namespace.inputs["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient", "pod-security.kubernetes.io/enforce": "baseline"}
    assert not existing_run.of_type("kubernetes:core/v1:NamespacePatch"), "default is left alone"
    assert existing_run.outputs[outputs.APPS_NAMESPACE] == "istio-ambient-lab"
    for deployment in existing_run.of_type("kubernetes:apps/v1:Deployment"):
        assert deployment.inputs["metadata"]["namespace"] in ("istio-ambient-lab", "mesh-outside"), deployment.urn


def test_eks_needs_no_chart_platform():
    run = run_program("l4-only", {"target": "existing", "kubeContext": "eks-lab", "platform": "eks"})
    assert run.named(RELEASE, "istiod").inputs["values"] == {"profile": "ambient"}


def test_gateway_api_crds_can_be_left_to_the_cluster():
    run = run_program("l4-only", {"installGatewayApiCrds": "false"})
    assert not run.of_type(GATEWAY_API_CRDS)
    assert run.named(RELEASE, "istiod").dependencies == [run.named(RELEASE, "istio-base").urn]


def test_bad_config_stops_the_program_before_any_resource():
    with pytest.raises(Exception, match=r"istio-ambient-lab:meshMode is 'l8', but it must be one of: l4-only, l7\."):
        run_program("l4-only", {"meshMode": "l8"})


def test_preload_and_mirror_run_inside_the_nodes_before_anything_reaches_the_cluster():
    run = run_program("l4-only", {"preloadImages": "true", "registryMirror": "http://kind-registry:5000",
                                  "observability": "false"})
    cluster = run.named(COMMAND, "kind-cluster")
    preload = run.named(COMMAND, "preload-images")
    mirror = run.named(COMMAND, "registry-mirror")
    assert preload.inputs["create"] == (
        "venv/bin/python -m lab.images preload --cluster ambient-l4-only --istio-version 1.31.1 --no-observability")
    assert mirror.inputs["create"] == (
        "venv/bin/python -m lab.images mirror-apply --cluster ambient-l4-only --mirror http://kind-registry:5000")
    for step in (preload, mirror):
        assert run.depends_on(step, cluster)
        assert step.inputs["triggers"][0] == cluster.urn.rsplit("::", 1)[1] + "-id", "a new cluster runs it again"
    provider = run.named(PROVIDER, "kind")
    assert run.depends_on(provider, preload) and run.depends_on(provider, mirror)


def test_pulling_the_images_starts_beside_the_cluster_and_only_loading_waits_for_it():
    run = run_program("l7", {"preloadImages": "true"})
    pull = run.named(COMMAND, "pull-images")
    assert pull.inputs["create"] == "venv/bin/python -m lab.images pull --istio-version 1.31.1"
    assert pull.dependencies == [], "the pull needs no cluster: it runs while kind creates one"
    assert pull.inputs["triggers"] == ["--istio-version", "1.31.1"], "a new cluster does not pull again"
    load = run.named(COMMAND, "preload-images")
    assert run.depends_on(load, run.named(COMMAND, "kind-cluster")) and run.depends_on(load, pull)


def test_preload_arguments_are_quoted_like_every_other_shell_word(monkeypatch):
    """The arguments reach a shell: a word with a space or a `;` must arrive as one argument, never as a command."""
    monkeypatch.setattr(images, "preload_arguments", lambda version, observability: ["--istio-version", "1.31.1; id"])
    run = run_program("l4-only", {"preloadImages": "true"})
    assert run.named(COMMAND, "pull-images").inputs["create"].endswith(" pull --istio-version '1.31.1; id'")
    assert run.named(COMMAND, "preload-images").inputs["create"].endswith(
        " preload --cluster ambient-l4-only --istio-version '1.31.1; id'")


def test_no_preload_or_mirror_by_default(runs):
    names = {r.name for r in runs["l4-only"].of_type(COMMAND)}
    assert names == {"kind-cluster"}


def test_a_kubeconfig_of_several_files_reaches_the_provider_resolved_never_as_the_raw_list(monkeypatch, tmp_path):
    """The provider parses any string that is not one file's path as kubeconfig content: `a:b` would not parse."""
    existing = {"target": "existing", "kubeContext": "lab"}
    contexts, credentials = tmp_path / "contexts.yaml", tmp_path / "credentials.yaml"
    contexts.write_text("contexts:\n- name: lab\n  context: {cluster: c, user: u}\n")
    credentials.write_text("clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n"
                           "  user: {token: s3cr3t}\n")
    monkeypatch.setenv("KUBECONFIG", f"{contexts}:{credentials}")
    provider = run_program("l4-only", existing).named(PROVIDER, "existing")
    assert "kubeconfig" in provider.secret_inputs, "a merged config holds credentials"
    merged = yaml.safe_load(provider.inputs["kubeconfig"])
    assert merged["current-context"] == "lab" and merged["users"] == [{"name": "u", "user": {"token": "s3cr3t"}}]

    contexts.write_text(contexts.read_text() + credentials.read_text())  # the first file now holds everything
    provider = run_program("l4-only", existing).named(PROVIDER, "existing")
    assert provider.inputs["kubeconfig"] == str(contexts) and "kubeconfig" not in provider.secret_inputs


def test_gateway_api_crds_stay_on_an_existing_cluster_and_die_with_kind(runs, existing_run):
    """Deleting the CRDs on someone's cluster would delete every Gateway and HTTPRoute on it."""

    def objects(run):
        crds = run.named(GATEWAY_API_CRDS, "gateway-api-crds")
        return [r for r in run.resources.values() if r.parent == crds.urn]

    assert objects(existing_run) and all(r.retain_on_delete and not r.deleted_with for r in objects(existing_run))
    on_kind = objects(runs["l4-only"])
    assert on_kind and all(not r.retain_on_delete and r.deleted_with for r in on_kind)


def _passes_restricted(pod_spec: dict) -> bool:
    """Pod Security `restricted` on the fields the lab sets: non-root uid, RuntimeDefault seccomp, no escalation,
    every capability dropped."""
    pod = pod_spec.get("securityContext", {})
    return (pod.get("runAsNonRoot") is True and (pod.get("runAsUser") or 0) > 0
            and pod.get("seccompProfile") == {"type": "RuntimeDefault"}
            and all(c.get("securityContext", {}).get("allowPrivilegeEscalation") is False
                    and c.get("securityContext", {}).get("capabilities") == {"drop": ["ALL"]}
                    for c in pod_spec["containers"]))


def test_the_labs_own_pods_pass_pod_security_restricted_and_istio_system_is_privileged(existing_run):
    deployments = {d.name: d.inputs["spec"]["template"]["spec"] for d in existing_run.of_type(
        "kubernetes:apps/v1:Deployment")}
    for client in ("sleep", "notsleep", "outside-client"):
        assert _passes_restricted(deployments[client]), client
    cronjob = existing_run.named("kubernetes:batch/v1:CronJob", "bookinfo-traffic")
    assert _passes_restricted(cronjob.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    # Bookinfo: everything restricted asks but the uid, which the lab does not know for those images.
    for name in ("details-v1", "productpage-v1", "reviews-v2"):
        spec = deployments[name]
        assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
        assert spec["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}
    istio_system = existing_run.named("kubernetes:core/v1:Namespace", "istio-system")
    assert istio_system.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_gateway_api_objects_keep_the_identity_they_had_under_the_old_config_file(runs):
    """Stacks brought up before registered these objects inside a yaml/v2 ConfigFile: aliases carry them over."""
    run = runs["l4-only"]
    crds = run.named(GATEWAY_API_CRDS, "gateway-api-crds")
    was = ("urn:pulumi:l4-only::istio-ambient-lab::istio-ambient-lab:index:IstioAmbient$kubernetes:yaml/v2:ConfigFile"
           "::gateway-api-crds")
    objects = [r for r in run.resources.values() if r.parent == crds.urn]
    assert objects and all(r.aliases == [(f"gateway-api-crds:{r.inputs['metadata']['name']}", was)] for r in objects)
