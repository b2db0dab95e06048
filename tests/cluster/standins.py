"""Every stand-in of the cluster tier, in one place: what is not real there, and why.

Everything else is real: the Pulumi engine and kubernetes provider (tools/engine, with its own two stand-ins named
in tools/engine/build.sh), the lab's CLI and program, kubectl, etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (tools/cluster/build.sh), and the upstream charts and Gateway API bundle of ../shared/upstream/charts.
"""

from __future__ import annotations

import json
import threading

STAND_INS = {
    "docker": "tests/engine/fake_tool.py's docker: answers `info` and lists a created cluster's node containers as "
              "running; there is no Docker daemon here",
    "kind": "tests/cluster/fake_machine.py: its clusters are the tier's control plane; `create cluster` registers "
            "the nodes kind would, `get kubeconfig` hands out a client certificate of this run's CA",
    "kubelets": "kwok (tests/cluster/kwok-stages.yaml): nodes turn Ready, pods Running and Ready, Jobs' pods "
                "complete; no container ever runs, so nothing of Istio's data plane or control plane runs",
    "istiod's Gateway status": "GatewayProgrammer below: sets the Programmed condition on Gateways of istiod's "
                               "classes, as istiod does once it has deployed their Envoy; nothing else of istiod",
}

ISTIOD_GATEWAY_CLASSES = ("istio", "istio-waypoint")  # the classes istiod's gateway controller answers for


def programmed(gateway: dict) -> dict | None:
    """The status patch that sets `gateway`'s Programmed condition as istiod writes it, or None when it is set
    already for the gateway's current generation or is not one of istiod's classes."""
    if gateway.get("spec", {}).get("gatewayClassName") not in ISTIOD_GATEWAY_CLASSES:
        return None
    generation = gateway.get("metadata", {}).get("generation")
    conditions = list(gateway.get("status", {}).get("conditions") or [])
    for condition in conditions:
        if (condition.get("type") == "Programmed" and condition.get("status") == "True"
                and condition.get("observedGeneration") == generation):
            return None
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "Resource programmed, "
                 "assigned to service(s) (stand-in: tests/cluster/standins.py)", "observedGeneration": generation,
                 "lastTransitionTime": now}
    others = [c for c in conditions if c.get("type") != "Programmed"]
    return {"status": {"conditions": [*others, condition]}}


class GatewayProgrammer:
    """Polls the Gateways and patches their status; `stop()` ends it. `kubectl(*args) -> CompletedProcess`."""

    def __init__(self, kubectl, interval_s: float = 1.0):
        self.kubectl = kubectl
        self.interval_s = interval_s
        self.patched: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gateway-programmer", daemon=True)

    def start(self) -> "GatewayProgrammer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            listed = self.kubectl("get", "gateways.gateway.networking.k8s.io", "-A", "-o", "json", check=False)
            if listed.returncode != 0:  # the CRD is not installed yet
                continue
            for gateway in json.loads(listed.stdout).get("items") or []:
                patch = programmed(gateway)
                if patch is None:
                    continue
                meta = gateway["metadata"]
                done = self.kubectl("patch", "gateways.gateway.networking.k8s.io", meta["name"], "-n",
                                    meta["namespace"], "--subresource=status", "--type=merge", "-p",
                                    json.dumps(patch), check=False)
                if done.returncode == 0:
                    self.patched.append(f"{meta['namespace']}/{meta['name']}")
