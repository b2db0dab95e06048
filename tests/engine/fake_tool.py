"""Stand-in for docker, kind and kubectl in the engine tests: the machine boundary, nothing else, is faked.

Run as `python fake_tool.py <tool> <args...>` by the small wrappers `fake_tools()` puts on PATH. Every call is
appended to calls.jsonl in $LAB_FAKE_TOOLS_DIR (tool, argv, stdin, and for `kind create cluster` the config file it
was given). The answers mimic the real tools for the calls the lab makes:

- kind remembers the clusters it "created" (clusters.json) and prints, for `get kubeconfig`, a kubeconfig whose API
  server is 127.0.0.1:$LAB_FAKE_API_PORT, a port that refuses connections, with a client key inside so the tests can
  prove the key never reaches the state;
- kubectl answers `get node <cluster>-control-plane -o json` with the owner label from the cluster's kind config
  (what the lab reads before deleting a cluster), with LAB_FAKE_KUBE_SYSTEM_UID set answers the existing cluster's
  identity questions (lab.cluster_identity), and fails everything else as an unreachable API server would;
- with LAB_FAKE_KIND_CREATE_DUMP=N, `kind create cluster` fails with a last line of N bytes;
- docker lists the node containers of a "created" cluster as running (`ps -a --filter label=...`), and fails
  anything else like a host without a Docker daemon.
"""

from __future__ import annotations

import json
import os
import select
import sys

import yaml

OWNER_LABEL = "istio-ambient-lab/owner"


def _client_credentials() -> tuple[str, str]:
    """A fresh key and self-signed certificate, base64 PEM as kubeconfig holds them: the provider parses both."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(cert_pem).decode(), base64.b64encode(key_pem).decode()


def kubeconfig(name: str, port: str) -> str:
    cert, key = _client_credentials()
    return (
        f"apiVersion: v1\nkind: Config\ncurrent-context: kind-{name}\n"
        f"clusters:\n- cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n"
        f"  name: kind-{name}\n"
        f"contexts:\n- context:\n    cluster: kind-{name}\n    user: kind-{name}\n  name: kind-{name}\n"
        f"users:\n- name: kind-{name}\n  user:\n    client-certificate-data: {cert}\n"
        f"    client-key-data: {key}\n"
    )


def issued_client_keys(folder: str) -> list[str]:
    """Every client key a fake `kind get kubeconfig` handed out, for the tests' leak checks."""
    try:
        with open(os.path.join(folder, "issued-keys.txt"), encoding="utf-8") as handle:
            return handle.read().split()
    except FileNotFoundError:
        return []


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def _stdin() -> str:
    # Only what is already there: a caller that leaves stdin open without writing must not hang the fake.
    if sys.stdin is None or sys.stdin.closed or sys.stdin.isatty():
        return ""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 0.2)
    except (OSError, ValueError):
        return ""
    return sys.stdin.read() if ready else ""


class State:
    def __init__(self, folder: str):
        self.path = os.path.join(folder, "clusters.json")

    def clusters(self) -> dict[str, str]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}

    def save(self, clusters: dict[str, str]) -> None:
        with open(self.path, "w", encoding="utf-8") as handle:
            json.dump(clusters, handle)


def kind(argv: list[str], state: State, port: str, call: dict) -> int:
    clusters = state.clusters()
    name = _option(argv, "--name") or "kind"
    if argv[:1] == ["version"]:  # what ./lab.sh's bootstrap asks before it trusts a kind on PATH
        print("kind v0.32.0 go1.26.5 linux/amd64")
        return 0
    if argv[:2] == ["get", "clusters"]:
        if clusters:
            print("\n".join(clusters))
        else:
            print("No kind clusters found.", file=sys.stderr)
        return 0
    if argv[:2] == ["create", "cluster"]:
        dump = int(os.environ.get("LAB_FAKE_KIND_CREATE_DUMP") or 0)
        if dump:  # kind failing with a dump of that many bytes in its last line
            print(f"ERROR: failed to create cluster: {'x' * dump}", file=sys.stderr)
            return 1
        config_path = _option(argv, "--config")
        config = open(config_path, encoding="utf-8").read() if config_path else ""
        call["config"] = config
        clusters[name] = config
        state.save(clusters)
        print(f"Creating cluster \"{name}\" ...", file=sys.stderr)
        return 0
    if argv[:2] == ["get", "kubeconfig"]:
        if name not in clusters:
            print(f'ERROR: could not locate any control plane nodes for cluster named "{name}"', file=sys.stderr)
            return 1
        # One kubeconfig per cluster, as kind's: its credentials stay the same for the cluster's life.
        saved = os.path.join(os.path.dirname(state.path), f"kubeconfig-{name}.yaml")
        if not os.path.exists(saved):
            text = kubeconfig(name, port)
            with open(saved, "w", encoding="utf-8") as handle:
                handle.write(text)
            with open(os.path.join(os.path.dirname(state.path), "issued-keys.txt"), "a", encoding="utf-8") as keys:
                keys.write(yaml.safe_load(text)["users"][0]["user"]["client-key-data"] + "\n")
        with open(saved, encoding="utf-8") as handle:
            sys.stdout.write(handle.read())
        return 0
    if argv[:2] == ["delete", "cluster"]:
        clusters.pop(name, None)
        state.save(clusters)
        print(f"Deleting cluster \"{name}\" ...", file=sys.stderr)
        return 0
    print(f"fake kind: no answer for {' '.join(argv)}", file=sys.stderr)
    return 2


def kubectl(argv: list[str], state: State, port: str) -> int:
    args = [a for a in argv if a != "--kubeconfig" and a != _option(argv, "--kubeconfig")]
    if args[:2] == ["version", "--client"]:
        print(json.dumps({"clientVersion": {"major": "1", "minor": "36", "gitVersion": "v1.36.4"}}))
        return 0
    if args[:2] == ["get", "node"] and len(args) > 2 and args[2].endswith("-control-plane"):
        cluster = args[2][: -len("-control-plane")]
        config = state.clusters().get(cluster)
        if config is not None:
            labels = (yaml.safe_load(config) or {}).get("nodes", [{}])[0].get("labels", {})
            print(json.dumps({"kind": "Node", "metadata": {"name": args[2], "labels": labels}}))
            return 0
    uid = os.environ.get("LAB_FAKE_KUBE_SYSTEM_UID")  # an existing cluster that answers who it is, and no more
    asked = args[2:] if args[:1] == ["--context"] else args
    if uid and asked[:3] == ["get", "namespace", "kube-system"]:
        print(uid, end="")
        return 0
    if uid and asked[:3] == ["config", "view", "--minify"]:
        print(f"https://127.0.0.1:{port}", end="")
        return 0
    print(f"The connection to the server 127.0.0.1:{port} was refused - did you specify the right host or port?",
          file=sys.stderr)
    return 1


def docker(argv: list[str], state: State) -> int:
    label = _option(argv, "--filter") or ""
    if argv[:1] == ["info"]:  # the preflight's questions: a Docker Engine on Linux, its data on this machine's disk
        answers = {"{{.ServerVersion}}": "28.2.2", "{{.DockerRootDir}}": os.path.dirname(state.path),
                   "{{.OperatingSystem}}": "Debian GNU/Linux 12 (bookworm)"}
        print(answers.get(_option(argv, "--format") or "", ""))
        return 0
    if argv[:2] == ["ps", "-a"] and label.startswith("label=io.x-k8s.kind.cluster="):
        cluster = label.split("=", 2)[2]
        config = state.clusters().get(cluster)
        if config is not None:
            nodes = (yaml.safe_load(config) or {}).get("nodes", [])
            workers = len(nodes) - 1
            names = [f"{cluster}-control-plane"] + [f"{cluster}-worker{i if i > 1 else ''}" for i in range(1, workers + 1)]
            print("\n".join(f"{name} running" for name in names))
        return 0
    print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
          file=sys.stderr)
    return 1


def main() -> int:
    tool, argv = sys.argv[1], sys.argv[2:]
    folder = os.environ["LAB_FAKE_TOOLS_DIR"]
    port = os.environ["LAB_FAKE_API_PORT"]
    state = State(folder)
    call = {"tool": tool, "argv": argv, "stdin": _stdin()}
    if tool == "kind":
        code = kind(argv, state, port, call)
    elif tool == "kubectl":
        code = kubectl(argv, state, port)
    elif tool == "docker":
        code = docker(argv, state)
    else:
        print("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
              file=sys.stderr)
        code = 1
    call["exit"] = code
    with open(os.path.join(folder, "calls.jsonl"), "a", encoding="utf-8") as log:
        log.write(json.dumps(call) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
