"""Building blocks shared by the lab's workloads: one ServiceAccount, Service and Deployment per app."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.kube import ClusterAccess
from lab import catalog


@dataclass(frozen=True)
class WorkloadSpec:
    deployment: str  # Deployment name, e.g. reviews-v2
    app: str  # the `app` label and Service name
    version: str
    service_account: str
    image: catalog.Image
    port: int
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    scratch_dirs: dict[str, str] = field(default_factory=dict)  # emptyDir volume name -> mount path
    pod_annotations: dict[str, str] = field(default_factory=dict)
    memory: str = "64Mi"
    affinity: dict | None = None
    readiness: bool = True  # clients that only sleep have nothing to probe
    run_as_user: int | None = None  # set where any non-root uid will do: the pod then passes Pod Security restricted


# Pod Security `restricted` asks every container for these; they cost bookinfo and curl nothing (no capability, no
# setuid, ports above 1024). runAsNonRoot is set only with a uid the lab knows the image runs under.
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def pod_security(run_as_user: int | None) -> dict:
    """The pod-level securityContext: the runtime's default seccomp profile, and a non-root uid where one is known."""
    context: dict = {"seccompProfile": {"type": "RuntimeDefault"}}
    if run_as_user is not None:
        context.update(runAsNonRoot=True, runAsUser=run_as_user, runAsGroup=run_as_user)
    return context


def labels(spec: WorkloadSpec) -> dict[str, str]:
    return {"app": spec.app, "version": spec.version}


def create_service_account(
    name: str, namespace: str, access: ClusterAccess, parent: pulumi.Resource, depends_on: list[pulumi.Resource]
) -> k8s.core.v1.ServiceAccount:
    # Each workload has its own identity: its SPIFFE ID, and so what policies can name, derives from it.
    return k8s.core.v1.ServiceAccount(
        name,
        metadata={"name": name, "namespace": namespace, "labels": {"account": name}},
        opts=access.options(parent, depends_on=depends_on),
    )


def create_service(
    name: str, namespace: str, port: int, selector: dict[str, str], access: ClusterAccess, parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
) -> k8s.core.v1.Service:
    return k8s.core.v1.Service(
        name,
        metadata={"name": name, "namespace": namespace, "labels": {"app": name, "service": name}},
        spec={"type": "ClusterIP", "selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]},
        opts=access.options(parent, depends_on=depends_on),
    )


def create_deployment(
    spec: WorkloadSpec, namespace: str, access: ClusterAccess, parent: pulumi.Resource,
    depends_on: list[pulumi.Resource],
) -> k8s.apps.v1.Deployment:
    pod_labels = labels(spec)
    container: dict = {
        "name": spec.app,
        "image": spec.image.ref,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": spec.port}],
        "resources": {"requests": {"cpu": "10m", "memory": spec.memory}},
        "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in spec.scratch_dirs.items()],
        "securityContext": CONTAINER_SECURITY,
    }
    if spec.command:
        container["command"] = spec.command
    if spec.env:
        container["env"] = [{"name": key, "value": value} for key, value in spec.env.items()]
    if spec.readiness:
        # A TCP probe: every bookinfo service listens on its port once it can answer.
        container["readinessProbe"] = {"tcpSocket": {"port": spec.port}, "periodSeconds": 5}
    pod_spec: dict = {
        "serviceAccountName": spec.service_account,
        "securityContext": pod_security(spec.run_as_user),
        "containers": [container],
        "volumes": [{"name": volume, "emptyDir": {}} for volume in spec.scratch_dirs],
    }
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity
    if spec.command:
        pod_spec["terminationGracePeriodSeconds"] = 0  # a sleeping client has nothing to drain
    return k8s.apps.v1.Deployment(
        spec.deployment,
        metadata={"name": spec.deployment, "namespace": namespace, "labels": pod_labels},
        spec={
            "replicas": 1,
            "selector": {"matchLabels": pod_labels},
            "template": {"metadata": {"labels": pod_labels, "annotations": spec.pod_annotations}, "spec": pod_spec},
        },
        opts=access.options(parent, depends_on=depends_on),
    )
