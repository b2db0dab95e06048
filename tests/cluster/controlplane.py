"""A real Kubernetes control plane for the cluster tier, in a network namespace of its own, gone after the tests.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (built by tools/cluster/build.sh) run on
loopback inside a network namespace this module creates (`unshare --net`: no `ip netns` mount to leave behind). The
namespace has nothing but its own `lo`: kwok hands pods 10.244.x addresses and nodes 172.18.0.2, Services get
10.96.x cluster IPs, and none of them has a route there. So every connection to a pod, node or Service address fails
at once with "network is unreachable": the API server's calls to Istio's webhooks (whose pods never run) fail fast
and fall to their failure policy, `kubectl exec`/`logs` fail instead of hanging, and no packet ever leaves the
machine. Everything that talks to the cluster (the engine, its providers, kubectl, the lab's CLI) is started inside
the namespace with `nsenter`.

A CA and every certificate are made per run; the nodes are the ones kind would make for the stack (STAND_INS in
tests/cluster/standins.py lists everything here that stands in for something real).
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
STAGES = HERE / "kwok-stages.yaml"
ETCD_PORT, ETCD_PEER_PORT, API_PORT = 2379, 2380, 6443  # the namespace is ours alone: fixed ports cannot clash
SERVICE_RANGE = "10.96.0.0/16"
POD_RANGE = "10.244.0.1/16"
NODE_IP = "172.18.0.2"
START_TIMEOUT_S = 120
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"  # kwok manages the nodes that carry it, as its own docs have it


class ControlPlaneError(RuntimeError):
    """The control plane did not come up; the message names the component and its log."""


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the test process dies without its teardown (SIGKILL), the kernel kills its children too.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Authority:
    """This run's CA: every serving and client certificate of the control plane is signed here and nowhere else."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab-cluster-tier-ca")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, common_name: str, organization: str | None = None, server_names: list[str] | None = None,
              server_ips: list[str] | None = None) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM): a server certificate when names or IPs are given, else a client one."""
        key = ec.generate_private_key(ec.SECP256R1())
        parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        server = bool(server_names or server_ips)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(parts)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            alternatives = [x509.DNSName(n) for n in server_names or []]
            alternatives += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips or []]
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        return _pem_cert(builder.sign(self.key, hashes.SHA256())), _pem_key(key)


def kubeconfig_text(name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, server: str) -> str:
    """A kubeconfig with everything embedded, shaped as kind's (cluster, user and context all `name`)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return (f"apiVersion: v1\nkind: Config\npreferences: {{}}\ncurrent-context: {name}\n"
            f"clusters:\n- cluster:\n    certificate-authority-data: {b64(ca_pem)}\n    server: {server}\n"
            f"  name: {name}\n"
            f"contexts:\n- context:\n    cluster: {name}\n    user: {name}\n  name: {name}\n"
            f"users:\n- name: {name}\n  user:\n    client-certificate-data: {b64(cert_pem)}\n"
            f"    client-key-data: {b64(key_pem)}\n")


@dataclass
class ControlPlane:
    """Start with `start()`, end with `stop()`; `stop()` is safe at any point, also after a failed start."""

    bin_dir: str
    work: str  # everything of this control plane lives here and goes with stop()
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    holder: subprocess.Popen | None = None
    admin_kubeconfig: str = ""
    _logs: list = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{API_PORT}"

    @property
    def netns(self) -> str:
        assert self.holder is not None, "the network namespace is not made yet"
        return f"/proc/{self.holder.pid}/ns/net"

    def inside(self, argv: list[str]) -> list[str]:
        """`argv` run inside the control plane's network namespace."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self.inside(argv), **kwargs)

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess:
        # A discovery cache of this plane's own: every plane answers at the same address (127.0.0.1:6443 in its
        # namespace), so kubectl's default one under ~/.kube/cache would hand one plane another's API groups.
        result = self.run([os.path.join(self.bin_dir, "kubectl"), "--kubeconfig", self.admin_kubeconfig,
                           "--cache-dir", os.path.join(self.work, "kube-cache"), *args], input=input_text)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    # --- start ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        # The namespace lives as long as this one process (and whatever was started inside it): no mount, no name.
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        if (self.holder.stdout.readline().strip() if self.holder.stdout else "") != "up":
            raise ControlPlaneError(f"could not make a network namespace with unshare --net: "
                                    f"{self.holder.stderr.read().strip() if self.holder.stderr else ''}")
        pki = self._certificates()
        self._start("etcd", [
            "etcd", "--name", "lab", "--data-dir", os.path.join(self.work, "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
            "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-cluster", f"lab=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--listen-metrics-urls", "", "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self._start("kube-apiserver", [
            "kube-apiserver", "--etcd-servers", f"http://127.0.0.1:{ETCD_PORT}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(API_PORT),
            "--tls-cert-file", pki["apiserver.crt"], "--tls-private-key-file", pki["apiserver.key"],
            "--client-ca-file", pki["ca.crt"], "--authorization-mode", "RBAC", "--allow-privileged=true",
            "--service-cluster-ip-range", SERVICE_RANGE,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", pki["sa.pub"], "--service-account-signing-key-file", pki["sa.key"],
            # No kubelet or kube-proxy will ever serve the `kubernetes` Service's endpoint: nothing to reconcile.
            "--endpoint-reconciler-type", "none", "--profiling=false",
        ])
        self._wait("kube-apiserver", lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0)
        for component in ("kube-controller-manager", "kube-scheduler"):
            kubeconfig = pki[f"{component}.kubeconfig"]
            extra = ["--use-service-account-credentials=true", "--service-account-private-key-file", pki["sa.key"],
                     "--root-ca-file", pki["ca.crt"], "--cluster-name", "lab"] \
                if component == "kube-controller-manager" else []
            self._start(component, [
                component, "--kubeconfig", kubeconfig, "--authentication-kubeconfig", kubeconfig,
                "--authorization-kubeconfig", kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1",
                *extra,
            ])
        self._start("kwok", [
            "kwok", "--kubeconfig", pki["kwok.kubeconfig"], "--config", str(STAGES),
            "--manage-nodes-with-annotation-selector", f"{KWOK_NODE_ANNOTATION}=fake",
            "--cidr", POD_RANGE, "--node-ip", NODE_IP, "--node-lease-duration-seconds", "40",
            "--server-address", "127.0.0.1:10247",
        ])
        # Ready for workloads once the controller-manager made the default ServiceAccount that pods need.
        self._wait("kube-controller-manager",
                   lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0)

    def _certificates(self) -> dict[str, str]:
        pki = os.path.join(self.work, "pki")
        os.makedirs(pki, mode=0o700)
        ca = Authority()
        files: dict[str, bytes] = {"ca.crt": _pem_cert(ca.cert)}
        files["apiserver.crt"], files["apiserver.key"] = ca.issue(
            "kube-apiserver", server_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                            "kubernetes.default.svc.cluster.local"],
            server_ips=["127.0.0.1", "10.96.0.1"])
        sa = ec.generate_private_key(ec.SECP256R1())
        files["sa.key"] = _pem_key(sa)
        files["sa.pub"] = sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        clients = {"admin": ("kubernetes-admin", "system:masters"),
                   "kube-controller-manager": ("system:kube-controller-manager", None),
                   "kube-scheduler": ("system:kube-scheduler", None),
                   "kwok": ("kwok", "system:masters")}
        for who, (common_name, organization) in clients.items():
            cert, key = ca.issue(common_name, organization)
            files[f"{who}.kubeconfig"] = kubeconfig_text(who, files["ca.crt"], cert, key, self.server).encode()
        paths = {}
        for name, data in files.items():
            path = os.path.join(pki, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            paths[name] = path
        self.admin_kubeconfig = paths["admin.kubeconfig"]
        self.ca_pem = files["ca.crt"]
        self.admin_credentials = ca.issue  # more client certificates for the fake kind, from the same CA
        return paths

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(os.path.join(self.work, f"{name}.log"), "wb")
        self._logs.append(log)
        argv = [os.path.join(self.bin_dir, argv[0]), *argv[1:]]
        self.processes[name] = subprocess.Popen(self.inside(argv), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                                start_new_session=True)

    def _wait(self, name: str, ready, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for process_name, process in self.processes.items():
                if process.poll() is not None:
                    raise ControlPlaneError(f"{process_name} exited ({process.returncode}): {self.log_tail(process_name)}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{name} was not ready within {timeout:.0f} s: {self.log_tail(name)}")
            time.sleep(0.5)

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(Path(self.work, f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # --- stop -----------------------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process this control plane started that is still alive (and the namespace's holder)."""
        alive = [p.pid for p in self.processes.values() if p.poll() is None]
        if self.holder is not None and self.holder.poll() is None:
            alive.append(self.holder.pid)
        return alive

    def namespace_members(self) -> list[int]:
        """Every process in the control plane's network namespace but its holder: the components, and whatever a
        command started inside it (the engine, its plugins) and left running, e.g. after a timeout."""
        if self.holder is None or self.holder.poll() is not None:
            return []
        try:
            ours = os.readlink(self.netns)
        except OSError:
            return []
        members = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.holder.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == ours:
                        members.append(int(entry))
                except OSError:
                    continue
        return members

    def stop(self) -> None:
        """Stops every process (reverse start order), ends the namespace, removes every file."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        for pid in self.namespace_members():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(timeout=15)
        for log in self._logs:
            log.close()
        shutil.rmtree(self.work, ignore_errors=True)
