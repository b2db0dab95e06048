"""Stack output names, shared by the program, the CLI and the tests so they cannot drift apart."""

CLUSTER_NAME = "cluster_name"
TARGET = "target"
KUBE_CONTEXT = "kube_context"
KUBECONFIG = "kubeconfig"
ISTIO_VERSION = "istio_version"
MESH_MODE = "mesh_mode"
HELM_RELEASES = "helm_releases"
APPS_NAMESPACE = "apps_namespace"
BOOKINFO_URL = "bookinfo_url"
BOOKINFO_PORT_FORWARD = "bookinfo_port_forward"
WAYPOINT = "waypoint"
POLICIES = "policies"
CERTIFICATE_SAN = "certificate_san"
ZTUNNEL_EVIDENCE = "ztunnel_evidence"
VERIFICATION = "verification"
DASHBOARD_COMMAND = "dashboard_command"
KIALI_URL = "kiali_url"
CLUSTER_OWNER = "cluster_owner"
NODE_SHAPE = "node_shape"
GATEWAY_API_CRDS = "gateway_api_crds"  # the bundle version the lab installed, or None: preflight tells its own

# Not stack outputs: what lab.cli reads from an existing cluster's records in the state itself (kept there from the
# first up, failed or not), beside the outputs above.
CLUSTER_IDENTITY = "cluster_identity"  # lab.cluster_identity's record: kube-system UID and API server URL
KUBECONFIG_FILES = "kubeconfig_files"  # the absolute kubeconfig files the state reaches the cluster through
