"""Stand-in for docker and kind in the cluster tier: a kind whose clusters are the tier's real control plane.

Run as `python fake_machine.py <tool> <args...>` (inside the control plane's network namespace) by the wrappers
tests/cluster/cluster.py puts on PATH; kubectl is the real one. Calls are logged to calls.jsonl in
$LAB_FAKE_TOOLS_DIR, as the engine tier's fakes log them (tests/engine/fake_tool.py, whose docker this reuses).

- `kind create cluster --config F`: registers the Node objects kind would make for F in the real API server, named
  and labelled as kind names and labels them (`<name>-control-plane` with the control plane's role labels and
  taint, `<name>-worker`, `<name>-worker2`, ..., each node's config labels), each marked for kwok to play its kubelet;
- `kind get kubeconfig`: a kind-shaped kubeconfig (context `kind-<name>`) for the real API server, with a client
  certificate of this run's CA (system:masters, as kind's admin is), recorded for the leak checks;
- `kind delete cluster`: forgets the cluster and removes its nodes. It does not wipe the API server as deleting the
  node containers would: what a destroy left in the cluster stays visible to the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.engine.fake_tool import State, _option, _stdin, docker  # noqa: E402

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def node_names(name: str, config: dict) -> list[tuple[str, dict]]:
    """(node name, node config) in kind's naming: one control plane, then worker, worker2, ..."""
    nodes = config.get("nodes") or [{"role": "control-plane"}]
    named, workers = [], 0
    for node in nodes:
        if node.get("role") == "worker":
            workers += 1
            named.append((f"{name}-worker{workers if workers > 1 else ''}", node))
        else:
            named.append((f"{name}-control-plane", node))
    return named


def node_objects(name: str, config: dict) -> list[dict]:
    """The Node objects kind's nodes register (kubeadm's labels, the control plane's role labels and taint)."""
    objects = []
    for index, (node_name, node) in enumerate(node_names(name, config)):
        labels = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}
        spec: dict = {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"],
                      "providerID": f"kind://docker/{name}/{node_name}"}
        if node.get("role") != "worker":
            labels.update({"node-role.kubernetes.io/control-plane": "",
                           "node.kubernetes.io/exclude-from-external-load-balancers": ""})
            spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        labels.update({str(k): str(v) for k, v in (node.get("labels") or {}).items()})
        objects.append({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node_name, "labels": labels,
                                     "annotations": {KWOK_NODE_ANNOTATION: "fake"}},
                        "spec": spec})
    return objects


def _kubectl(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([os.environ["LAB_CLUSTER_KUBECTL"], "--kubeconfig", os.environ["LAB_CLUSTER_ADMIN"],
                           *args], capture_output=True, text=True, input=input_text, timeout=60)


def kubeconfig(name: str, folder: str) -> str:
    """The cluster's kubeconfig with the one client credential the tier issued for the fake kind."""
    with open(os.path.join(folder, "kind-admin.json"), encoding="utf-8") as handle:
        parts = json.load(handle)
    return (f"apiVersion: v1\nkind: Config\npreferences: {{}}\ncurrent-context: kind-{name}\n"
            f"clusters:\n- cluster:\n    certificate-authority-data: {parts['ca']}\n    server: {parts['server']}\n"
            f"  name: kind-{name}\n"
            f"contexts:\n- context:\n    cluster: kind-{name}\n    user: kind-{name}\n  name: kind-{name}\n"
            f"users:\n- name: kind-{name}\n  user:\n    client-certificate-data: {parts['cert']}\n"
            f"    client-key-data: {parts['key']}\n")


def kind(argv: list[str], state: State, folder: str, call: dict) -> int:
    clusters = state.clusters()
    name = _option(argv, "--name") or "kind"
    if argv[:1] == ["version"]:
        print("kind v0.32.0 go1.26.5 linux/amd64")
        return 0
    if argv[:2] == ["get", "clusters"]:
        if clusters:
            print("\n".join(clusters))
        else:
            print("No kind clusters found.", file=sys.stderr)
        return 0
    if argv[:2] == ["create", "cluster"]:
        if name in clusters:
            print(f'ERROR: failed to create cluster: node(s) already exist for a cluster with the name "{name}"',
                  file=sys.stderr)
            return 1
        config_path = _option(argv, "--config")
        text = open(config_path, encoding="utf-8").read() if config_path else ""
        call["config"] = text
        nodes = node_objects(name, yaml.safe_load(text) or {})
        created = _kubectl("create", "-f", "-", input_text=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                        "items": nodes}))
        if created.returncode != 0:
            print(f"ERROR: failed to create cluster: {created.stderr.strip()}", file=sys.stderr)
            return 1
        clusters[name] = text
        state.save(clusters)
        print(f"Creating cluster \"{name}\" ...", file=sys.stderr)
        return 0
    if argv[:2] == ["get", "kubeconfig"]:
        if name not in clusters:
            print(f'ERROR: could not locate any control plane nodes for cluster named "{name}"', file=sys.stderr)
            return 1
        sys.stdout.write(kubeconfig(name, folder))
        return 0
    if argv[:2] == ["delete", "cluster"]:
        if name in clusters:
            names = [n for n, _ in node_names(name, yaml.safe_load(clusters[name]) or {})]
            _kubectl("delete", "node", "--ignore-not-found", "--wait=false", *names)
        clusters.pop(name, None)
        state.save(clusters)
        print(f"Deleting cluster \"{name}\" ...", file=sys.stderr)
        return 0
    print(f"fake kind: no answer for {' '.join(argv)}", file=sys.stderr)
    return 2


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    folder = os.environ["LAB_FAKE_TOOLS_DIR"]
    state = State(folder)
    call = {"tool": tool, "argv": argv, "stdin": _stdin()}
    code = kind(argv, state, folder, call) if tool == "kind" else docker(argv, state)
    call["exit"] = code
    with open(os.path.join(folder, "calls.jsonl"), "a", encoding="utf-8") as log:
        log.write(json.dumps(call) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
