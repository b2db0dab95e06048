"""Enrolment: every app pod is in the ambient mesh and healthy, and the outside client is not."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lab import catalog
from verify.checks.base import (
    ENROLMENT_CHECK,
    GATEWAY_NAME_LABEL,
    CheckContext,
    Observation,
    check_result,
    pod_items,
    pod_name,
    poll,
)
from verify.report import CheckResult

# --- a. Enrolment ------------------------------------------------------------------------------------------------

REQUIRED_APPS = (*catalog.BOOKINFO_SERVICES, catalog.SLEEP, catalog.NOTSLEEP)


def assess_enrolment(
    app_pods_json: Mapping[str, Any], outside_pods_json: Mapping[str, Any], required_apps: Iterable[str] = REQUIRED_APPS
) -> Observation:
    """Decide whether the app pods are in the ambient mesh and healthy, and the outside client is not.

    Args:
        app_pods_json: ``kubectl get pods -o json`` in the applications' namespace. Only pods whose ``app`` label
            is one of `required_apps` are judged: Istio-deployed gateways (the waypoint, the ingress gateway) are
            proxies, and the traffic CronJob's finished pods are not apps.
        outside_pods_json: the same for the namespace outside the mesh.
        required_apps: values of the ``app`` label that must each have at least one pod.

    Returns:
        ok when every app pod runs, carries ``ambient.istio.io/redirection: enabled`` and never restarted, every
        required app has a pod, and no outside pod is enrolled. A restart settles the verdict: retrying will not
        undo it.
    """
    problems: list[str] = []
    restarted = False
    pods = []
    wanted = set(required_apps)
    for pod in pod_items(app_pods_json):
        labels = pod.get("metadata", {}).get("labels") or {}
        # The lab's own apps only: the traffic CronJob leaves finished pods behind every minute, and on an existing
        # cluster the namespace may hold workloads that are none of the lab's business.
        if GATEWAY_NAME_LABEL in labels or labels.get("app") not in wanted:
            continue
        name = pod_name(pod)
        redirection = (pod.get("metadata", {}).get("annotations") or {}).get(catalog.REDIRECTION_ANNOTATION)
        restarts = {
            status.get("name", "?"): int(status.get("restartCount", 0))
            for status in pod.get("status", {}).get("containerStatuses") or []
        }
        phase = pod.get("status", {}).get("phase", "Unknown")
        pods.append({"pod": name, "app": labels.get("app"), "phase": phase, "redirection": redirection,
                     "restarts": restarts})
        if phase != "Running":
            problems.append(f"{name} is {phase}")
        if redirection != "enabled":
            problems.append(f"{name} is not enrolled ({catalog.REDIRECTION_ANNOTATION}={redirection})")
        for container, count in restarts.items():
            if count:
                restarted = True
                problems.append(f"{name} container {container} restarted {count} time(s)")
    present = {pod["app"] for pod in pods}
    missing = [app for app in required_apps if app not in present]
    if missing:
        problems.append("no pod for app " + ", ".join(missing))
    outside = []
    for pod in pod_items(outside_pods_json):
        redirection = (pod.get("metadata", {}).get("annotations") or {}).get(catalog.REDIRECTION_ANNOTATION)
        outside.append({"pod": pod_name(pod), "redirection": redirection})
        if redirection == "enabled":
            problems.append(f"outside pod {pod_name(pod)} is enrolled in the mesh, so it cannot test STRICT mTLS")
    evidence = {"app_pods": pods, "outside_pods": outside}
    if problems:
        # A restart is history: no retry will bring the count back to 0.
        return Observation(False, "; ".join(problems), evidence, settled=restarted)
    return Observation(
        True,
        f"{len(pods)} app pods enrolled and never restarted; {len(outside)} outside pod(s) not enrolled",
        evidence,
    )


def check_enrolment(ctx: CheckContext) -> CheckResult:
    """Every app pod is in ambient (redirection annotation) and did not restart; the outside client is not."""
    started = ctx.clock()
    commands = [
        ctx.cluster.command(["get", "pods", "-n", ctx.namespace, "-o", "json"]),
        ctx.cluster.command(["get", "pods", "-n", catalog.OUTSIDE_NAMESPACE, "-o", "json"]),
    ]

    def probe() -> Observation:
        seen = assess_enrolment(ctx.cluster.pods(ctx.namespace), ctx.cluster.pods(catalog.OUTSIDE_NAMESPACE))
        seen.commands = commands
        return seen

    expected = (
        f"every app pod in {ctx.namespace} Running with {catalog.REDIRECTION_ANNOTATION}: enabled and 0 restarts; "
        f"pods in {catalog.OUTSIDE_NAMESPACE} not enrolled"
    )
    return check_result(ctx, ENROLMENT_CHECK, expected, poll(ctx, probe), "every app pod to be enrolled and running",
                   started)
