"""Prometheus, Kiali and the traffic CronJob under mocks."""

import tarfile
from pathlib import Path

import pytest
import yaml

from components.observability import prometheus_values, traffic_job_spec
from lab import catalog, outputs
from tests.harness import STACKS, run_program

RELEASE = "kubernetes:helm.sh/v3:Release"
CRONJOB = "kubernetes:batch/v1:CronJob"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_is_istios_addon_shape(runs, stack):
    prometheus = runs[stack].named(RELEASE, "prometheus")
    assert prometheus.inputs["chart"].endswith("/charts/prometheus-28.13.0.tgz")
    assert prometheus.inputs["version"] == "28.13.0"
    assert not prometheus.inputs.get("repositoryOpts")
    assert prometheus.inputs["namespace"] == "istio-system"
    values = prometheus.inputs["values"]
    for subchart in ("alertmanager", "prometheus-pushgateway", "kube-state-metrics", "prometheus-node-exporter"):
        assert values[subchart] == {"enabled": False}, subchart
    server = values["server"]
    assert server["fullnameOverride"] == "prometheus"
    assert server["service"] == {"type": "ClusterIP", "servicePort": 9090}
    assert f'{server["image"]["repository"]}:{server["image"]["tag"]}' == catalog.PROMETHEUS_IMAGE.ref
    reloader = values["configmapReload"]["prometheus"]["image"]
    assert f'{reloader["repository"]}:{reloader["tag"]}' == catalog.PROMETHEUS_RELOADER_IMAGE.ref


@pytest.mark.parametrize("stack", STACKS)
def test_kiali_is_anonymous_view_only_and_reads_that_prometheus(runs, stack):
    run = runs[stack]
    kiali = run.named(RELEASE, "kiali")
    assert kiali.inputs["chart"].endswith("/charts/kiali-server-2.31.0.tgz")
    assert kiali.inputs["version"] == catalog.KIALI_VERSION
    version = lambda text: tuple(map(int, text.split(".")))  # noqa: E731
    assert version(catalog.KIALI_VERSION) >= version(catalog.KIALI_MINIMUM_VERSION)
    assert not kiali.inputs.get("repositoryOpts")
    assert "values" in kiali.secret_inputs, "the values carry Kiali's signing key"
    values = kiali.inputs["values"]
    assert values["auth"] == {"strategy": "anonymous"}
    assert values["deployment"]["view_only_mode"] is True
    assert values["deployment"]["service_type"] == "ClusterIP"
    assert values["external_services"]["prometheus"]["url"] == "http://prometheus.istio-system:9090"
    assert f'{values["deployment"]["image_name"]}:{values["deployment"]["image_version"]}' == catalog.KIALI_IMAGE.ref
    assert values["server"]["web_root"] == "/kiali"
    assert len(values["login_token"]["signing_key"]) == 32


@pytest.mark.parametrize("stack", STACKS)
def test_the_addons_install_beside_the_mesh_and_only_the_traffic_waits_for_the_apps(runs, stack):
    run = runs[stack]
    namespace = run.named("kubernetes:core/v1:Namespace", "istio-system")
    istiod = run.named(RELEASE, "istiod")
    assert run.named(RELEASE, "prometheus").dependencies == [namespace.urn]
    assert sorted(run.named(RELEASE, "kiali").dependencies) == sorted([namespace.urn, istiod.urn])
    account = run.named("kubernetes:core/v1:ServiceAccount", catalog.TRAFFIC_CRONJOB)
    for sent_to in (run.named("kubernetes:gateway.networking.k8s.io/v1:Gateway", catalog.INGRESS_GATEWAY_NAME),
                    run.named("kubernetes:apps/v1:Deployment", "productpage-v1"), run.named(RELEASE, "ztunnel")):
        assert run.depends_on(account, sent_to), sent_to.urn


def test_kiali_signing_key_is_stable_per_stack_and_differs_between_stacks(runs):
    again = run_program("l4-only")
    key = lambda run: run.named(RELEASE, "kiali").inputs["values"]["login_token"]["signing_key"]  # noqa: E731
    assert key(again) == key(runs["l4-only"]) != key(runs["l7"])


@pytest.mark.parametrize("stack", STACKS)
def test_traffic_goes_through_the_ingress_and_is_bounded(runs, stack):
    run = runs[stack]
    cron = run.named(CRONJOB, catalog.TRAFFIC_CRONJOB)
    assert cron.inputs["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron.inputs["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] < 60 and job["backoffLimit"] == 0
    container = job["template"]["spec"]["containers"][0]
    assert container["image"] == catalog.CURL_IMAGE.ref
    assert "http://bookinfo-gateway-istio.default.svc.cluster.local/productpage" in container["command"][2]
    assert job["template"]["spec"]["serviceAccountName"] == catalog.TRAFFIC_CRONJOB
    assert run.depends_on(cron, run.named("kubernetes:core/v1:ServiceAccount", catalog.TRAFFIC_CRONJOB))


def test_traffic_burst_fits_in_its_deadline():
    spec = traffic_job_spec("http://x/productpage", requests=12, pause_seconds=4)
    assert "seq 1 12" in spec["template"]["spec"]["containers"][0]["command"][2]
    assert 12 * 4 < spec["activeDeadlineSeconds"]


@pytest.mark.parametrize("stack", STACKS)
def test_dashboard_outputs(runs, stack):
    assert runs[stack].outputs[outputs.KIALI_URL] == "http://127.0.0.1:20001/kiali"
    assert runs[stack].outputs[outputs.DASHBOARD_COMMAND] == f"./lab.sh dashboard {stack}"


def test_addons_absent_when_switched_off():
    run = run_program("l7", {"observability": "false"})
    assert {r.name for r in run.of_type(RELEASE)} == {"istio-base", "istiod", "istio-cni", "ztunnel"}
    assert not run.of_type(CRONJOB)
    assert not [r for r in run.resources.values() if r.type.endswith(":Observability")]
    assert outputs.KIALI_URL not in run.outputs and outputs.DASHBOARD_COMMAND not in run.outputs


def test_kiali_is_cluster_wide_only_on_the_labs_own_kind_cluster(runs, existing_run):
    kind_values = runs["l4-only"].named("kubernetes:helm.sh/v3:Release", "kiali").inputs["values"]
    assert "cluster_wide_access" not in kind_values["deployment"], "the chart's default: cluster-wide"
    kiali = existing_run.named("kubernetes:helm.sh/v3:Release", "kiali")
    deployment = kiali.inputs["values"]["deployment"]
    assert deployment["cluster_wide_access"] is False
    assert deployment["discovery_selectors"] == {"default": [{"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "In",
        "values": ["istio-system", "istio-ambient-lab", "mesh-outside"]}]}]}
    # The chart looks the namespaces up when it installs: they exist by then.
    for name in ("istio-ambient-lab", "mesh-outside"):
        assert existing_run.depends_on(kiali, existing_run.named("kubernetes:core/v1:Namespace", name)), name


def test_kiali_asks_for_a_token_off_the_labs_own_kind_cluster(runs, existing_run):
    for stack in STACKS:
        assert runs[stack].named(RELEASE, "kiali").inputs["values"]["auth"] == {"strategy": "anonymous"}
        assert not runs[stack].of_type(NETWORK_POLICY), "kind: as today, no policy"
    values = existing_run.named(RELEASE, "kiali").inputs["values"]
    assert values["auth"] == {"strategy": "token"}
    assert values["deployment"]["view_only_mode"] is True, "the token of its own SA must stay read-only"
    assert values["deployment"]["network_policy"] == {"enabled": False}, "the chart's admits everyone: ours instead"


def test_on_an_existing_cluster_only_prometheus_reaches_kiali_over_the_pod_network(existing_run):
    policy = existing_run.named(NETWORK_POLICY, "kiali")
    assert policy.inputs["metadata"] == {"name": "kiali", "namespace": "istio-system"}
    spec = policy.inputs["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kiali",
                                                   "app.kubernetes.io/instance": "kiali"}}
    assert spec["policyTypes"] == ["Ingress"]
    # One rule: the lab's Prometheus server, on Kiali's metrics port only; not the UI port, not the API server.
    [rule] = spec["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "prometheus", "app.kubernetes.io/instance": "prometheus",
        "app.kubernetes.io/component": "server"}}}]
    assert [port["port"] for port in rule["ports"]] == [9090] and catalog.KIALI_PORT != 9090
    # In force before Kiali starts.
    assert existing_run.depends_on(existing_run.named(RELEASE, "kiali"), policy)


def test_a_mode_switch_restarts_kiali_so_its_waypoint_cache_starts_over():
    """Kiali caches which workloads are waypoints for minutes; the uncached graph query does not refresh that."""
    annotations = {}
    for stack in ("l4-only", "l7"):
        kiali = run_program(stack).named(RELEASE, "kiali")
        annotations[stack] = kiali.inputs["values"]["deployment"]["pod_annotations"]
    assert annotations["l4-only"] == {"istio-ambient-lab/mesh-mode": "l4-only"}
    assert annotations["l7"] == {"istio-ambient-lab/mesh-mode": "l7"}


def test_kiali_signing_key_is_random_private_and_not_derived_from_names(tmp_path, monkeypatch):
    """It seals the session cookie holding a user's Kubernetes token: nothing anyone could compute."""
    import hashlib
    import stat

    from lab import local_secrets

    monkeypatch.setenv(local_secrets.SECRETS_ENV, str(tmp_path / "secrets"))
    first = local_secrets.kiali_signing_key("l7", tmp_path)
    assert len(first) == 32 and first != hashlib.sha256(b"istio-ambient-lab/l7/kiali").hexdigest()[:32]
    assert local_secrets.kiali_signing_key("l7", tmp_path) == first, "kept: a second up changes nothing"
    path = tmp_path / "secrets" / "kiali-signing-key-l7"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv(local_secrets.SECRETS_ENV, str(tmp_path / "fresh"))
    assert local_secrets.kiali_signing_key("l7", tmp_path) != first, "drawn at random, not computed"


LAB_NAMESPACES = ["istio-system", "istio-ambient-lab", "mesh-outside"]


def test_prometheus_is_cluster_wide_only_on_the_labs_own_kind_cluster(runs):
    for stack in STACKS:
        values = runs[stack].named(RELEASE, "prometheus").inputs["values"]
        assert "namespaces" not in values["server"] and "scrapeConfigs" not in values, "the chart's own: every namespace"
        assert not runs[stack].of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")


def test_on_an_existing_cluster_prometheus_reads_and_scrapes_only_the_labs_namespaces(existing_run):
    prometheus = existing_run.named(RELEASE, "prometheus")
    values = prometheus.inputs["values"]
    # The chart then binds this role by a RoleBinding in each namespace, and makes no ClusterRole(Binding) of its own.
    assert values["server"]["namespaces"] == LAB_NAMESPACES
    assert values["server"]["useExistingClusterRoleName"] == "istio-ambient-lab-prometheus"
    role = existing_run.named("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole", "istio-ambient-lab-prometheus")
    assert role.inputs["metadata"] == {"name": "istio-ambient-lab-prometheus"}
    granted = {(group, resource, verb) for rule in role.inputs["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert {resource for _, resource, _ in granted} == {"pods", "services", "endpoints", "endpointslices"}
    assert {verb for _, _, verb in granted} == {"get", "list", "watch"}
    assert "nonResourceURLs" not in str(role.inputs["rules"])
    # Every job that discovers through the API names the lab's namespaces; the node and API-server jobs are off.
    jobs = values["scrapeConfigs"]
    for job in ("kubernetes-pods", "kubernetes-pods-slow", "kubernetes-service-endpoints",
                "kubernetes-service-endpoints-slow", "kubernetes-services", "prometheus-pushgateway"):
        [discovery] = jobs[job]["kubernetes_sd_configs"]
        assert discovery["namespaces"] == {"names": LAB_NAMESPACES}, job
    for job in ("kubernetes-api-servers", "kubernetes-nodes", "kubernetes-nodes-cadvisor"):
        assert jobs[job] == {"enabled": False}, job
    # The namespaces, the role and the policy are in place when the chart installs and Prometheus starts.
    for name in ("istio-ambient-lab", "mesh-outside"):
        assert existing_run.depends_on(prometheus, existing_run.named("kubernetes:core/v1:Namespace", name)), name
    assert existing_run.depends_on(prometheus, role)
    assert existing_run.depends_on(prometheus, existing_run.named(NETWORK_POLICY, "prometheus"))


def test_on_an_existing_cluster_only_kiali_reaches_prometheus_over_the_pod_network(existing_run):
    policy = existing_run.named(NETWORK_POLICY, "prometheus")
    assert policy.inputs["metadata"] == {"name": "prometheus", "namespace": "istio-system"}
    spec = policy.inputs["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus",
                                                   "app.kubernetes.io/instance": "prometheus",
                                                   "app.kubernetes.io/component": "server"}}
    assert spec["policyTypes"] == ["Ingress"], "its own scraping (egress) is left alone"
    [rule] = spec["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kiali",
                                                             "app.kubernetes.io/instance": "kiali"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]


def test_the_scoped_scrape_jobs_cover_every_job_of_the_chart_that_lists_through_the_api():
    """Against the pinned chart's own defaults, when this machine has it: a job left unscoped would list the whole
    cluster, which the namespaced role refuses."""
    chart = Path("/work/shared/upstream/charts/prometheus-28.13.0.tgz")
    if not chart.exists():
        pytest.skip("the upstream chart is not on this machine")
    with tarfile.open(chart) as archive:
        defaults = yaml.safe_load(archive.extractfile("prometheus/values.yaml").read())
    scoped = prometheus_values(["lab"])["scrapeConfigs"]
    for job, config in defaults["scrapeConfigs"].items():
        if "kubernetes_sd_configs" not in config:
            continue
        assert scoped[job] == {"enabled": False} or all(
            discovery["namespaces"] == {"names": ["lab"]} and discovery["role"] == default["role"]
            for discovery, default in zip(scoped[job]["kubernetes_sd_configs"], config["kubernetes_sd_configs"],
                                          strict=True)), job
