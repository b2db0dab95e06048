"""Mesh workloads and policy under mocks: bookinfo, clients, enrolment, ingress, waypoint, policies."""

import pytest

from components.policies import policy_plan
from lab import catalog, outputs
from tests.harness import STACKS, run_program

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
AUTHZ = "kubernetes:security.istio.io/v1:AuthorizationPolicy"
RELEASE = "kubernetes:helm.sh/v3:Release"
PRINCIPAL = "cluster.local/ns/default/sa/{}"


def pod_spec(deployment):
    return deployment.inputs["spec"]["template"]["spec"]


@pytest.mark.parametrize("stack", STACKS)
def test_every_image_comes_from_the_image_list_pinned(runs, stack):
    known = {image.ref for image in catalog.all_images()}
    deployments = runs[stack].of_type(DEPLOYMENT)
    assert len(deployments) >= 9
    for deployment in deployments:
        for container in pod_spec(deployment)["containers"]:
            image = container["image"]
            assert image in known, f"{deployment.urn}: {image} is not in lab/catalog.py"
            assert not image.endswith(":latest") and ":" in image.rsplit("/", 1)[-1], f"{deployment.urn}: {image}"
            assert image.startswith("docker.io/"), f"{deployment.urn}: {image} is not from a kept registry"


@pytest.mark.parametrize("stack", STACKS)
def test_no_load_balancers(runs, stack):
    for service in runs[stack].of_type(SERVICE):
        assert service.inputs["spec"].get("type") != "LoadBalancer", service.urn
    for gateway in runs[stack].of_type(GATEWAY):
        if gateway.inputs["spec"]["gatewayClassName"] == "istio":
            assert gateway.inputs["metadata"]["annotations"]["networking.istio.io/service-type"] == "ClusterIP"


@pytest.mark.parametrize("stack", STACKS)
def test_each_app_has_its_own_service_account(runs, stack):
    run = runs[stack]
    accounts = {sa.inputs["metadata"]["name"] for sa in run.of_type(SERVICE_ACCOUNT)}
    used = {}
    for deployment in run.of_type(DEPLOYMENT):
        app = deployment.inputs["spec"]["template"]["metadata"]["labels"]["app"]
        sa = pod_spec(deployment)["serviceAccountName"]
        assert sa in accounts, f"{deployment.urn} runs as {sa}, which the lab does not create"
        used.setdefault(sa, set()).add(app)
    # One identity per app (the three reviews versions are one app, as in Istio's sample).
    assert all(len(apps) == 1 for apps in used.values()), used
    assert used["bookinfo-reviews"] == {"reviews"} and used["sleep"] == {"sleep"} and used["notsleep"] == {"notsleep"}


@pytest.mark.parametrize("stack", STACKS)
def test_bookinfo_shape(runs, stack):
    run = runs[stack]
    for app in catalog.BOOKINFO_SERVICES:
        service = run.named(SERVICE, app)
        assert service.inputs["spec"]["ports"] == [{"name": "http", "port": 9080, "targetPort": 9080}]
        assert service.inputs["spec"]["selector"] == {"app": app}
    for name, app, version in catalog.BOOKINFO_WORKLOADS:
        deployment = run.named(DEPLOYMENT, name)
        labels = deployment.inputs["spec"]["template"]["metadata"]["labels"]
        assert labels == {"app": app, "version": version}
        container = pod_spec(deployment)["containers"][0]
        assert container["readinessProbe"]["tcpSocket"]["port"] == 9080
        assert container["resources"]["requests"]["cpu"] == "10m"
    reviews = pod_spec(run.named(DEPLOYMENT, "reviews-v2"))
    assert reviews["containers"][0]["env"] == [{"name": "LOG_DIR", "value": "/tmp/logs"}]
    assert {m["mountPath"] for m in reviews["containers"][0]["volumeMounts"]} == {"/tmp", "/opt/ibm/wlp/output"}
    productpage = run.named(DEPLOYMENT, "productpage-v1")
    annotations = productpage.inputs["spec"]["template"]["metadata"].get("annotations") or {}
    assert "prometheus.io/scrape" not in annotations, "STRICT mTLS refuses Prometheus's plaintext scrape"


@pytest.mark.parametrize("stack", STACKS)
def test_clients(runs, stack):
    run = runs[stack]
    for client in (catalog.SLEEP, catalog.NOTSLEEP):
        deployment = run.named(DEPLOYMENT, client)
        container = pod_spec(deployment)["containers"][0]
        assert container["command"] == ["/bin/sleep", "infinity"]
        assert container["image"] == catalog.CURL_IMAGE.ref
        assert run.named(SERVICE, client).inputs["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 80}]
    affinity = pod_spec(run.named(DEPLOYMENT, catalog.NOTSLEEP))["affinity"]["podAntiAffinity"]
    term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term == {"labelSelector": {"matchLabels": {"app": "productpage"}}, "topologyKey": "kubernetes.io/hostname"}
    assert "affinity" not in pod_spec(run.named(DEPLOYMENT, catalog.SLEEP))
    outside = run.named(DEPLOYMENT, catalog.OUTSIDE_CLIENT)
    assert outside.inputs["metadata"]["namespace"] == catalog.OUTSIDE_NAMESPACE
    namespace = run.named("kubernetes:core/v1:Namespace", catalog.OUTSIDE_NAMESPACE)
    assert namespace.inputs["metadata"]["labels"] == {"istio.io/dataplane-mode": "none",
                                                      "pod-security.kubernetes.io/enforce": "baseline"}


@pytest.mark.parametrize("stack", STACKS)
def test_namespace_enrolled_and_apps_wait_for_the_data_plane(runs, stack):
    run = runs[stack]
    patch = run.named("kubernetes:core/v1:NamespacePatch", "default")
    assert patch.inputs["metadata"] == {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}}
    ztunnel, cni = run.named(RELEASE, "ztunnel"), run.named(RELEASE, "istio-cni")
    for deployment in run.of_type(DEPLOYMENT):
        if deployment.inputs["metadata"]["namespace"] == catalog.OUTSIDE_NAMESPACE:
            # Not in the mesh: it waits for no part of it.
            assert not run.depends_on(deployment, ztunnel) and not run.depends_on(deployment, cni), deployment.urn
            continue
        assert run.depends_on(deployment, ztunnel) and run.depends_on(deployment, cni), deployment.urn
        assert run.depends_on(deployment, patch), f"{deployment.urn} could start before its namespace is enrolled"
    assert patch.dependencies == [], "a label captures no pod by itself: it waits for nothing"


def test_a_namespace_of_our_own_is_created_not_patched():
    run = run_program("l4-only", {"appsNamespace": "bookinfo"})
    namespace = run.named("kubernetes:core/v1:Namespace", "bookinfo")
    assert namespace.inputs["metadata"]["labels"] == {"istio.io/dataplane-mode": "ambient",
                                                   "pod-security.kubernetes.io/enforce": "baseline"}
    assert not run.of_type("kubernetes:core/v1:NamespacePatch")
    assert run.named(DEPLOYMENT, "productpage-v1").inputs["metadata"]["namespace"] == "bookinfo"
    l4 = run.named(AUTHZ, "productpage-l4")
    assert l4.inputs["spec"]["rules"][0]["from"][0]["source"]["principals"][0] == "cluster.local/ns/bookinfo/sa/sleep"


@pytest.mark.parametrize("stack", STACKS)
def test_strict_mtls_mesh_wide(runs, stack):
    peer = runs[stack].named("kubernetes:security.istio.io/v1:PeerAuthentication", "strict-mtls")
    assert peer.inputs["metadata"] == {"name": "default", "namespace": "istio-system"}
    assert peer.inputs["spec"] == {"mtls": {"mode": "STRICT"}}
    # istiod: base's CRDs come before it, and it serves the webhook that validates the policy.
    assert runs[stack].depends_on(peer, runs[stack].named(RELEASE, "istiod"))
    assert not [r for r in runs[stack].of_type(DEPLOYMENT) if runs[stack].depends_on(peer, r)]


def test_strict_mtls_covers_only_the_labs_namespace_on_an_existing_cluster(existing_run):
    """Mesh-wide STRICT would refuse the plaintext clients of any workload another team enrols in the lab's mesh."""
    peers = existing_run.of_type("kubernetes:security.istio.io/v1:PeerAuthentication")
    assert [(peer.name, peer.inputs["metadata"]) for peer in peers] == [
        ("strict-mtls-istio-ambient-lab", {"name": "default", "namespace": "istio-ambient-lab"})]
    assert peers[0].inputs["spec"] == {"mtls": {"mode": "STRICT"}}
    assert existing_run.depends_on(peers[0], existing_run.named("kubernetes:core/v1:Namespace", "istio-ambient-lab"))
    assert "istio-ambient-lab/default (PeerAuthentication STRICT)" in existing_run.outputs[outputs.POLICIES]
    assert not [p for p in existing_run.outputs[outputs.POLICIES] if p.startswith("istio-system/")]


def test_l4_policy_in_l4_only_allows_sleep_and_the_ingress_gateway_only(runs):
    l4 = runs["l4-only"].named(AUTHZ, "productpage-l4")
    assert l4.inputs["spec"] == {
        "selector": {"matchLabels": {"app": "productpage"}},
        "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [PRINCIPAL.format("sleep"), PRINCIPAL.format("bookinfo-gateway-istio")]}}]}],
    }


def test_l7_policies_admit_the_waypoint_at_l4_and_judge_methods_at_l7(runs):
    run = runs["l7"]
    l4 = run.named(AUTHZ, "productpage-l4")
    assert l4.inputs["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        PRINCIPAL.format(catalog.WAYPOINT_NAME), PRINCIPAL.format("bookinfo-gateway-istio")]
    l7 = run.named(AUTHZ, "productpage-l7")
    assert l7.inputs["spec"] == {
        "targetRefs": [{"kind": "Service", "group": "", "name": "productpage"}],
        "action": "ALLOW",
        "rules": [{
            "from": [{"source": {"principals": [PRINCIPAL.format("sleep")]}}],
            "to": [{"operation": {"methods": ["GET"]}}],
        }],
    }
    assert "notsleep" not in str(l7.inputs) and "notsleep" not in str(l4.inputs)


def test_policy_plan_is_plain_data():
    assert policy_plan("ns", None).l7_principals is None
    assert policy_plan("ns", "wp").l4_principals[0] == "cluster.local/ns/ns/sa/wp"


def test_waypoint_only_in_l7(runs):
    assert not [g for g in runs["l4-only"].of_type(GATEWAY) if g.inputs["spec"]["gatewayClassName"] == "istio-waypoint"]
    run = runs["l7"]
    waypoint = run.named(GATEWAY, catalog.WAYPOINT_NAME)
    assert waypoint.inputs["spec"] == {
        "gatewayClassName": "istio-waypoint",
        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
    }
    assert waypoint.inputs["metadata"]["labels"] == {"istio.io/waypoint-for": "service"}
    assert waypoint.inputs["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Programmed"}
    assert run.depends_on(waypoint, run.named(RELEASE, "istiod"))
    # istiod deploys it; no app needs to exist first (the binding waits for the Service).
    assert not run.depends_on(waypoint, run.named(SERVICE, "productpage"))
    assert not run.depends_on(waypoint, run.named(RELEASE, "ztunnel"))


@pytest.mark.parametrize("stack,target", [("l4-only", "none"), ("l7", catalog.WAYPOINT_NAME)])
def test_productpage_is_bound_to_the_waypoint_or_to_none(runs, stack, target):
    """In both modes, so that leaving l7 unbinds productpage while the program runs, before the checks."""
    run = runs[stack]
    binding = run.named("kubernetes:core/v1:ServicePatch", "productpage-use-waypoint")
    assert binding.inputs["metadata"] == {
        "name": "productpage", "namespace": "default", "labels": {"istio.io/use-waypoint": target}}
    assert run.depends_on(binding, run.named(SERVICE, "productpage"))
    if stack == "l7":
        assert run.depends_on(binding, run.named(GATEWAY, catalog.WAYPOINT_NAME))


@pytest.mark.parametrize("stack", STACKS)
def test_ingress(runs, stack):
    run = runs[stack]
    gateway = run.named(GATEWAY, "bookinfo-gateway")
    assert gateway.inputs["spec"]["gatewayClassName"] == "istio"
    assert gateway.inputs["spec"]["listeners"][0]["port"] == 80
    assert gateway.inputs["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Programmed"
    route = run.named("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "bookinfo")
    [rule] = route.inputs["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "productpage", "port": 9080}]
    assert {"path": {"type": "Exact", "value": "/productpage"}} in rule["matches"]
    node_port = run.named(SERVICE, "bookinfo-gateway-nodeport")
    assert node_port.inputs["spec"]["ports"][0]["nodePort"] == catalog.INGRESS_NODE_PORT
    assert node_port.inputs["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "bookinfo-gateway"}
    port = 8080 if stack == "l4-only" else 8081
    assert run.outputs[outputs.BOOKINFO_URL] == f"http://127.0.0.1:{port}/productpage"


def test_existing_cluster_ingress_is_a_port_forward_on_the_labs_context_and_kubeconfig(monkeypatch, tmp_path):
    """Never the current context: the command names the stack's context, and its kubeconfig file or files."""
    existing = {"target": "existing", "kubeContext": "gke_proj_europe-west1_lab"}
    monkeypatch.delenv("KUBECONFIG", raising=False)
    run = run_program("l7", existing)
    assert not [s for s in run.of_type(SERVICE) if s.inputs["spec"].get("type") == "NodePort"]
    assert run.outputs[outputs.BOOKINFO_PORT_FORWARD] == (
        "kubectl --context gke_proj_europe-west1_lab port-forward -n istio-ambient-lab svc/bookinfo-gateway-istio "
        "--address 127.0.0.1 8081:80")
    with_file = run_program("l7", {**existing, "kubeconfigPath": "/home/me/.kube/prod"})
    assert with_file.outputs[outputs.BOOKINFO_PORT_FORWARD].startswith(
        "kubectl --context gke_proj_europe-west1_lab --kubeconfig /home/me/.kube/prod port-forward -n ")
    first, second = tmp_path / "a b.yaml", tmp_path / "c.yaml"
    first.write_text("contexts:\n- name: gke_proj_europe-west1_lab\n  context: {cluster: c, user: u}\n")
    second.write_text("clusters:\n- name: c\n  cluster: {server: 'https://x'}\nusers:\n- name: u\n  user: {}\n")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    from_env = run_program("l7", existing)
    assert from_env.outputs[outputs.BOOKINFO_PORT_FORWARD].startswith(
        f"KUBECONFIG='{first}:{second}' kubectl --context gke_proj_europe-west1_lab port-forward ")


def test_mesh_outputs(runs):
    assert runs["l4-only"].outputs[outputs.WAYPOINT] is None
    assert runs["l7"].outputs[outputs.WAYPOINT] == catalog.WAYPOINT_NAME
    assert runs["l4-only"].outputs[outputs.APPS_NAMESPACE] == "default"
    assert len(runs["l4-only"].outputs[outputs.POLICIES]) == 2
    assert "default/productpage-l7 (AuthorizationPolicy, waypoint)" in runs["l7"].outputs[outputs.POLICIES]


def test_the_two_stacks_differ_by_exactly_the_mode_specific_resources(runs):
    def identities(run):
        # The URN without the stack name: what `pulumi up` would compare when a stack switches mode in place.
        return {r.urn.split("::", 2)[2] for r in run.resources.values()}

    l4, l7 = identities(runs["l4-only"]), identities(runs["l7"])
    assert l4 - l7 == set()
    assert {urn.rsplit("::", 1)[1] for urn in l7 - l4} == {
        catalog.WAYPOINT_NAME,  # the Waypoint component and its Gateway
        "productpage-l7",
    }
    assert len(l7 - l4) == 3


def test_switching_mode_in_place_changes_only_mode_specific_inputs():
    """Same stack, mode flipped by config (as `pulumi config set meshMode l7` does): every shared resource keeps its
    inputs except the L4 policy, whose principals move from sleep to the waypoint, and productpage's waypoint label,
    which moves from none to the waypoint."""
    before = run_program("l4-only")
    after = run_program("l4-only", {"meshMode": "l7"})
    changed = sorted(
        urn.rsplit("::", 1)[1] for urn, resource in before.resources.items()
        if urn in after.resources and after.resources[urn].inputs != resource.inputs
    )
    # Kiali too: a switch restarts it, so its waypoint cache starts over (components/observability.py).
    assert changed == ["kiali", "productpage-l4", "productpage-use-waypoint"]
    assert set(after.resources) - set(before.resources) and set(before.resources) <= set(after.resources)
