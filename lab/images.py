"""Images offline: preload every lab image into kind nodes, and point the nodes' containerd at a registry mirror.

``python -m lab.images preload --cluster NAME`` makes each image of ``catalog.all_images()`` present in every node
of a kind cluster, pulling into the local Docker only what Docker lacks, so a second lab on this machine comes up
without the internet. ``python -m lab.images pull`` does only the pulling half and needs no cluster: the program
runs it beside ``kind create cluster``, so only the loading waits for the nodes. ``mirror-config`` prints the containerd files for a registry mirror and ``mirror-apply``
writes them into the nodes of a running cluster.

Loading always goes ``docker save --platform <p> -o <tar> <ref>`` then ``kind load image-archive <tar>``, never
``kind load docker-image``. Why always, and not only under Docker's containerd image store:

* ``kind load docker-image`` is itself a plain ``docker save -o <tar> <refs>`` piped into
  ``ctr --namespace=k8s.io images import --all-platforms --digests`` on each node (kind v0.32.0,
  ``pkg/cmd/kind/load/docker-image/docker-image.go`` and ``pkg/cluster/nodeutils/util.go``), so the explicit path
  costs nothing extra.
* Under the containerd image store (Docker Desktop, OrbStack, new Docker 29 installs) that plain save writes the
  image's whole multi-platform index while only one platform's blobs were pulled, and the node's import fails with
  ``ctr: content digest sha256:...: not found`` (kubernetes-sigs/kind#3795, #4224). Saving one platform is the
  workaround kind's maintainers point to (kind#3795; documented by kind PR #4247).
* With the classic store ``--platform`` matching the image's own platform is a no-op, so one path serves both stores
  and nothing depends on detecting the store, which differs between Docker Desktop, OrbStack, colima and Engine.

``docker save --platform`` needs Docker API 1.48 (docs.docker.com ``reference/cli/docker/image/save``: "API
1.48+"; docker/cli ``cli/command/image/save.go`` annotates the flag with version 1.48), i.e. Docker Engine 28 or
newer. An older CLI answers ``unknown flag: --platform``; a new CLI talking to an older daemon answers
``"--platform" requires API version 1.48, but the Docker daemon API version is ...`` (docker/cli flag version check).
Either way the preload falls back to a plain ``docker save``, which is all an old Docker has and is fine with the
classic store.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform as host_platform
import re
import shlex
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pathlib import Path

from lab import catalog, logged_lines, private

PLATFORMS = ("linux/amd64", "linux/arm64")
# Docker's Go arch names and `uname -m` spellings -> the node platform.
_ARCH_TO_PLATFORM = {
    "amd64": "linux/amd64",
    "x86_64": "linux/amd64",
    "x64": "linux/amd64",
    "arm64": "linux/arm64",
    "aarch64": "linux/arm64",
    "arm64/v8": "linux/arm64",
}

# Bounds, in seconds: a stuck pull or load stops the run with a sentence instead of hanging `pulumi up`.
QUICK_TIMEOUT = 60
PULL_TIMEOUT = 900
SAVE_TIMEOUT = 600
LOAD_TIMEOUT = 600

CERTS_DIR = "/etc/containerd/certs.d"
# A mirror is almost always a pull-through cache of Docker Hub (rate limits hit docker.io, and Docker's own
# `registry` proxy mode mirrors exactly one upstream). Pointing ghcr.io or quay.io at a docker.io cache would be
# wrong, not merely useless: such a cache ignores containerd's `ns=` query parameter, so quay.io/kiali/kiali could be
# answered with docker.io/kiali/kiali. Other registries are opt-in (`--registry`) for mirrors that honour `ns`.
DEFAULT_MIRRORED_REGISTRIES = ("docker.io",)
# Upstream used after the mirror fails: containerd docs/hosts.md, "Setup a Local Mirror for Docker".
_UPSTREAM_SERVERS = {"docker.io": "https://registry-1.docker.io"}

class ImagesError(RuntimeError):
    """A step that cannot go on; the message is one sentence saying what to do."""


# --- Processes -------------------------------------------------------------------------------------------------


def _run(
    args: Sequence[str], *, timeout: float = QUICK_TIMEOUT, input_text: str | None = None
) -> subprocess.CompletedProcess:
    """Runs a command and captures its output; never raises on a non-zero exit, only when it cannot run at all."""
    try:
        return subprocess.run(list(args), capture_output=True, text=True, input=input_text, timeout=timeout)
    except FileNotFoundError:
        raise ImagesError(
            f"`{args[0]}` was not found on PATH; install it (or run ./lab.sh, which provides it)."
        ) from None
    except subprocess.TimeoutExpired:
        raise ImagesError(
            f"`{' '.join(args[:3])}` did not finish within {int(timeout)} s; check that Docker answers "
            f"(`docker info`) and the network is up, then run this again."
        ) from None


def _last_line(result: subprocess.CompletedProcess) -> str:
    """The last non-empty line of a failed command's output: where docker and kind put the actual reason."""
    lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


# --- Platform ----------------------------------------------------------------------------------------------------


def platform_for_arch(arch: str) -> str | None:
    """The node platform for a CPU name as Docker (amd64, arm64) or ``uname -m`` (x86_64, aarch64) spells it."""
    return _ARCH_TO_PLATFORM.get(arch.strip().lower())


def detect_platform(machine: Callable[[], str] = host_platform.machine) -> str:
    """The platform of the kind nodes: the Docker daemon's architecture, else this machine's.

    The daemon's comes first because kind nodes run where the daemon runs (a Linux VM under Docker Desktop).

    Raises:
        ImagesError: When neither names amd64 or arm64.
    """
    result = _run(["docker", "version", "-f", "{{.Server.Arch}}"])
    server_arch = result.stdout.strip() if result.returncode == 0 else ""
    found = platform_for_arch(server_arch) if server_arch else None
    if found:
        return found
    local_arch = machine()
    found = platform_for_arch(local_arch)
    if found:
        return found
    raise ImagesError(
        f"cannot tell the kind nodes' platform (Docker says {server_arch or 'nothing'!r}, this machine "
        f"{local_arch!r}); pass --platform linux/amd64 or --platform linux/arm64."
    )


def uses_containerd_image_store(info: Mapping[str, object]) -> bool:
    """Whether ``docker info --format '{{json .}}'`` describes Docker's containerd image store.

    moby reports ``DriverStatus: [["driver-type", "io.containerd.snapshotter.v1"]]`` for it
    (``daemon/containerd`` ``LayerStoreStatus``) and the snapshotter's name (``overlayfs``) as ``Driver``, where the
    classic store says ``overlay2`` and friends.
    """
    status = info.get("DriverStatus") or []
    if isinstance(status, list):
        for pair in status:
            if isinstance(pair, list) and any("io.containerd.snapshotter" in str(part) for part in pair):
                return True
    driver = str(info.get("Driver") or "").lower()
    return "containerd" in driver or driver in ("overlayfs", "stargz", "nydus")


def _docker_info() -> Mapping[str, object]:
    result = _run(["docker", "info", "--format", "{{json .}}"])
    if result.returncode != 0:
        return {}
    try:
        info = json.loads(result.stdout)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


# --- Image references ----------------------------------------------------------------------------------------------


def normalize_ref(ref: str) -> str:
    """A reference spelt as containerd stores it: registry and ``library/`` made explicit.

    ``busybox:1`` -> ``docker.io/library/busybox:1``; ``istio/pilot:1`` -> ``docker.io/istio/pilot:1``.
    """
    ref = ref.strip()
    first, _, rest = ref.partition("/")
    # The first component is a registry only if it looks like a host (Docker's own rule).
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", ref
    if first == "index.docker.io":
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{first}/{rest}"


def _wanted_refs(image: catalog.Image) -> set[str]:
    """The node-side spellings that mean this image is there.

    A side-loaded archive carries the tag, while ``name@digest`` appears only after a registry pull, so either
    counts; the catalog pins a digest only after checking that the tag points at it.
    """
    wanted = {normalize_ref(f"{image.name}:{image.tag}")}
    if image.digest:
        wanted.add(normalize_ref(f"{image.name}@{image.digest}"))
    return wanted


def parse_crictl_images(output: str) -> set[str] | None:
    """References in ``crictl images -o json`` output, or None when it is not that JSON.

    Tolerates text before the JSON (some crictl versions print warnings on stdout) and entries missing fields.
    """
    start = output.find("{")
    if start < 0:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(output[start:])
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("images", []), list):
        return None
    refs: set[str] = set()
    for entry in data.get("images") or []:
        if not isinstance(entry, dict):
            continue
        for key in ("repoTags", "repoDigests"):
            for ref in entry.get(key) or []:
                if isinstance(ref, str) and ref.strip():
                    refs.add(normalize_ref(ref))
    return refs


def parse_ctr_images(output: str) -> set[str]:
    """References in ``ctr -n k8s.io images ls -q`` output: one per line; bare ``sha256:`` IDs are skipped."""
    refs = set()
    for line in output.splitlines():
        line = line.strip()
        if line and not line.startswith("sha256:") and " " not in line:
            refs.add(normalize_ref(line))
    return refs


def node_images(node: str) -> set[str] | None:
    """The image references a kind node's containerd holds, or None when neither crictl nor ctr answers."""
    result = _run(["docker", "exec", node, "crictl", "images", "-o", "json"])
    if result.returncode == 0:
        refs = parse_crictl_images(result.stdout)
        if refs is not None:
            return refs
    result = _run(["docker", "exec", node, "ctr", "-n", "k8s.io", "images", "ls", "-q"])
    if result.returncode == 0:
        return parse_ctr_images(result.stdout)
    return None


def cluster_nodes(cluster: str) -> list[str]:
    """The node container names of a kind cluster.

    Raises:
        ImagesError: When the cluster has no nodes or kind cannot list them.
    """
    result = _run(["kind", "get", "nodes", "--name", cluster])
    if result.returncode != 0:
        raise ImagesError(f"kind could not list the nodes of cluster '{cluster}' ({_last_line(result)}); "
                          f"check that Docker is running, then try again.")
    # kind logs "No kind nodes found ..." to stderr; node names never contain spaces.
    nodes = [line.strip() for line in result.stdout.splitlines() if line.strip() and " " not in line.strip()]
    if not nodes:
        raise ImagesError(f"kind cluster '{cluster}' has no nodes; create it first (pulumi up), then run this again.")
    return nodes


# --- Digests: trust on first use ----------------------------------------------------------------------------------

# No image the lab runs is pinned by digest in the catalog: no public source lists digests for these tags that the
# lab could check a pin against. So every preloaded image, istiod (`pilot`, the mesh's CA), `proxyv2`, the
# privileged istio-cni (`install-cni`) and `ztunnel` included, is trust on first use: the registry digest of each tag
# is recorded the first time the lab holds it, and a later pull or local image whose digest differs for the same tag
# is refused; the verification's image check holds those four to the same record on any cluster. A catalog image
# that carries a digest is pulled by it and checked by Docker itself, so the record skips it. Relative to the project
# root, where `pulumi up` runs the pull and preload steps.
DIGESTS_FILE = os.path.join(".lab", "image-digests.json")


def _repository(ref: str) -> str:
    """``docker.io/istio/ztunnel`` for ``istio/ztunnel:1.31.1``: the reference without its tag or digest."""
    name = normalize_ref(ref).split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def local_digest(ref: str) -> str | None:
    """The registry digest (``sha256:...``) of the image Docker holds under `ref`, for that repository; None when
    Docker lacks it or never pulled it from a registry (built or loaded locally)."""
    result = _run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", ref])
    if result.returncode != 0:
        return None
    try:
        entries = json.loads(result.stdout or "null") or []
    except ValueError:
        return None
    # An image pushed to several repositories lists a digest for each: only this repository's counts.
    wanted = _repository(ref)
    return next((entry.split("@", 1)[1] for entry in entries
                 if isinstance(entry, str) and "@" in entry and _repository(entry) == wanted), None)


class DigestRecord:
    """The digest each image tag had when this lab first held it, in a private file (``.lab/image-digests.json``)."""

    def __init__(self, path: str | os.PathLike = DIGESTS_FILE):
        self.path = Path(path)

    def recorded(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise ImagesError(f"{self.path} is not valid JSON; delete it to record every image's digest afresh "
                              f"(trust on first use), then run `{catalog.LAB_SCRIPT} up` again.") from None
        return data if isinstance(data, dict) else {}

    def remember(self, ref: str, digest: str) -> None:
        """Records `digest` for `ref` seen elsewhere (a running pod's image ID); the caller checked it was new."""
        self._write(normalize_ref(ref), digest)

    def _write(self, ref: str, digest: str) -> None:
        private.write_private(self.path, json.dumps({**self.recorded(), ref: digest}, indent=2, sort_keys=True) + "\n")

    def check(self, image: catalog.Image, say: Callable[[str], None]) -> None:
        """Records the digest Docker holds for `image` the first time; refuses a different one later.

        Raises:
            ImagesError: The tag now has another digest than the one recorded.
        """
        if image.digest:
            return  # pinned: pulled by digest, which Docker verifies
        ref = image.ref
        digest = local_digest(ref)
        if digest is None:
            say(f"note: {ref} has no registry digest in Docker (built or loaded locally), so none was recorded.")
            return
        recorded = self.recorded().get(ref)
        if recorded is None:
            self._write(ref, digest)  # quietly: the README says every image is trust on first use
        elif recorded != digest:
            raise ImagesError(
                f"{ref} now has digest {digest} but this lab recorded {recorded} when it first pulled it, so it was "
                f"not loaded; if the tag was re-published on purpose, accept the new digest with `venv/bin/python -m "
                f"lab.images accept-digest {ref}`, then run `{catalog.LAB_SCRIPT} up` again."
            )

    def accept(self, ref: str) -> str:
        """Records the digest Docker holds now for `ref`, replacing the old one: the user's deliberate choice."""
        digest = local_digest(ref)
        if digest is None:
            raise ImagesError(f"Docker holds no registry digest for {ref}; pull it with `docker pull {ref}`, then "
                              f"run this again.")
        self._write(ref, digest)
        return digest


# --- Preload -------------------------------------------------------------------------------------------------------


@dataclass
class PreloadReport:
    """What a preload did, by reference."""

    present: list[str]
    loaded: list[str]
    pulled: list[str]


def _local_platform(ref: str) -> str | None:
    """``os/arch`` of the image Docker holds under ``ref``, or None when Docker does not have it."""
    result = _run(["docker", "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", ref])
    if result.returncode != 0:
        return None
    return result.stdout.strip().splitlines()[0].strip() if result.stdout.strip() else ""


def _ensure_local(image: catalog.Image, platform: str, digests: DigestRecord, say: Callable[[str], None]) -> bool:
    """Pulls `image` for `platform` unless Docker already holds it for that platform, then holds what Docker has to
    the recorded digest (an image already in Docker may have been pulled outside the lab); whether it pulled."""
    local = _local_platform(image.ref)
    pulled = local is None or (local and local != platform)
    if pulled:
        _pull(image.ref, platform)
    digests.check(image, say)
    return bool(pulled)


def pull(platform: str, images: Sequence[catalog.Image], *, say: Callable[[str], None] = print,
         digests: DigestRecord | None = None) -> list[str]:
    """Makes every image present in the local Docker for `platform`; needs no cluster.

    One image after another: Docker already downloads each image's layers in parallel, and a failure names its image.

    Returns:
        The references it pulled (the others Docker held already).

    Raises:
        ImagesError: One sentence naming the image and what to do.
    """
    if platform not in PLATFORMS:
        raise ImagesError(f"platform {platform!r} is not supported; use one of {', '.join(PLATFORMS)}.")
    digests = digests or DigestRecord()
    pulled = []
    for index, image in enumerate(images, start=1):
        fetched = _ensure_local(image, platform, digests, say)
        if fetched:
            pulled.append(image.ref)
        say(f"[{index}/{len(images)}] {image.ref}: {'pulled' if fetched else 'in Docker'}")
    return pulled


def _pull(ref: str, platform: str) -> None:
    result = _run(["docker", "pull", "--platform", platform, ref], timeout=PULL_TIMEOUT)
    if result.returncode != 0:
        registry = normalize_ref(ref).split("/", 1)[0]
        raise ImagesError(
            f"could not pull {ref} for {platform} ({_last_line(result)}); check the network and your access to "
            f"{registry} (`docker login {registry}` if it asks for a login), then run the preload again."
        )


def _platform_flag_unsupported(result: subprocess.CompletedProcess) -> bool:
    text = (result.stderr or "") + (result.stdout or "")
    return "unknown flag: --platform" in text or ("--platform" in text and "requires API version" in text)


class _Saver:
    """``docker save`` of one platform, falling back once and for all to a plain save on an old Docker."""

    def __init__(self, platform: str, say: Callable[[str], None]):
        self.platform = platform
        self.say = say
        self.single_platform = True  # until Docker says it cannot

    def save(self, ref: str, tar_path: str) -> subprocess.CompletedProcess:
        if self.single_platform:
            result = _run(["docker", "save", "--platform", self.platform, "-o", tar_path, ref], timeout=SAVE_TIMEOUT)
            if result.returncode == 0 or not _platform_flag_unsupported(result):
                return result
            self.single_platform = False
            store = " and uses the containerd image store, so multi-platform images may fail to load" \
                if uses_containerd_image_store(_docker_info()) else ""
            self.say(f"note: this Docker is older than Engine 28 (API 1.48) and cannot save one platform{store}; "
                     f"saving whole images instead.")
        return _run(["docker", "save", "-o", tar_path, ref], timeout=SAVE_TIMEOUT)


def _load(cluster: str, ref: str, tar_path: str, nodes: Sequence[str], all_nodes: Sequence[str],
          single_platform: bool) -> None:
    args = ["kind", "load", "image-archive", tar_path, "--name", cluster]
    if sorted(nodes) != sorted(all_nodes):
        args += ["--nodes", ",".join(nodes)]  # only where it is missing
    result = _run(args, timeout=LOAD_TIMEOUT)
    if result.returncode == 0:
        return
    detail = _last_line(result)
    if not single_platform and "content digest" in detail and "not found" in detail:
        raise ImagesError(
            f"kind could not import {ref} ({detail}) because this Docker keeps only some platforms of it and is too "
            f"old for `docker save --platform`; upgrade Docker to Engine 28 or newer, or turn off its containerd "
            f"image store, then run the preload again."
        )
    raise ImagesError(f"kind could not load {ref} into cluster '{cluster}' ({detail}); check free disk space in "
                      f"Docker and that the cluster is running, then run the preload again.")


def preload(
    cluster: str,
    platform: str,
    images: Sequence[catalog.Image],
    *,
    say: Callable[[str], None] = print,
    temp_root: str | None = None,
    digests: DigestRecord | None = None,
) -> PreloadReport:
    """Makes every image present in every node of a kind cluster, pulling into Docker only what it lacks.

    Stops at the first image that fails. Temporary archives live in one private directory that is removed
    whatever happens.

    Args:
        cluster: kind cluster name.
        platform: ``linux/amd64`` or ``linux/arm64``: what is pulled and saved.
        images: What to preload, usually ``catalog.all_images(...)``.
        say: Where the progress lines go.
        temp_root: Directory for the temporary archives (default: the system's temp directory).
        digests: The trust-on-first-use record every image is held to (default: ``.lab/image-digests.json``).

    Returns:
        Which references were already present, loaded from Docker, and pulled first.

    Raises:
        ImagesError: One sentence naming the image and what to do.
    """
    if platform not in PLATFORMS:
        raise ImagesError(f"platform {platform!r} is not supported; use one of {', '.join(PLATFORMS)}.")
    nodes = cluster_nodes(cluster)
    # Listed once up front: one exec per node instead of one per node and image.
    held = {node: node_images(node) for node in nodes}
    report = PreloadReport(present=[], loaded=[], pulled=[])
    digests = digests or DigestRecord()
    saver = _Saver(platform, say)
    total = len(images)
    with tempfile.TemporaryDirectory(prefix="lab-images-", dir=temp_root) as scratch:
        for index, image in enumerate(images, start=1):
            ref = image.ref
            wanted = _wanted_refs(image)
            # A node we could not list counts as lacking it: loading again is harmless, skipping is not.
            missing = [node for node in nodes if held[node] is None or not wanted & held[node]]
            if not missing:
                report.present.append(ref)
                say(f"[{index}/{total}] {ref}: present")
                continue
            # Usually present already: the `pull` step ran beside the cluster's creation.
            pulled = _ensure_local(image, platform, digests, say)
            tar_path = os.path.join(scratch, f"image-{index}.tar")
            try:
                result = saver.save(ref, tar_path)
                if result.returncode != 0 and not pulled:
                    # Docker holds the tag but not this platform's content (containerd store): fetch it, once.
                    _pull(ref, platform)
                    digests.check(image, say)
                    pulled = True
                    result = saver.save(ref, tar_path)
                if result.returncode != 0:
                    raise ImagesError(f"docker could not save {ref} ({_last_line(result)}); check free disk space "
                                      f"and `docker image inspect {ref}`, then run the preload again.")
                _load(cluster, ref, tar_path, missing, nodes, saver.single_platform)
            finally:
                if os.path.exists(tar_path):
                    os.remove(tar_path)  # archives are big: never keep more than one around
            (report.pulled if pulled else report.loaded).append(ref)
            say(f"[{index}/{total}] {ref}: {'pulled and loaded' if pulled else 'loaded'}")
    _verify(cluster, nodes, [image for image in images if image.ref in report.loaded + report.pulled])
    return report


def _verify(cluster: str, nodes: Sequence[str], loaded: Sequence[catalog.Image]) -> None:
    """Checks that what kind loaded is now listed on every node (``kind load image-archive`` can exit 0 without
    importing anything: kubernetes-sigs/kind#2394)."""
    if not loaded:
        return
    for node in nodes:
        refs = node_images(node)
        if refs is None:
            continue  # this node cannot be listed at all; nothing to compare with
        for image in loaded:
            if not _wanted_refs(image) & refs:
                raise ImagesError(
                    f"kind loaded {image.ref} into cluster '{cluster}' but node {node} does not list it; look with "
                    f"`docker exec {node} crictl images`, then run the preload again."
                )


# --- Registry mirror -----------------------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_PATH = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?$")
_REGISTRY = re.compile(rf"^{_LABEL}(\.{_LABEL})*(:[0-9]{{1,5}})?$")  # also a directory name: no "..", no "/"


def validate_mirror_url(url: str) -> str:
    """The mirror URL, checked and without a trailing slash.

    Accepts ``http(s)://host[:port][/path]``; refuses credentials (they would land in files and logs), query
    strings, and loopback hosts (inside a kind node those are the node itself, kind ``local-registry`` docs).

    Raises:
        ImagesError: One sentence saying what is wrong and what to give instead.
    """
    form = "http(s)://host[:port][/path], e.g. http://kind-registry:5000 or https://mirror.example.com"
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ImagesError(f"registry mirror {url!r} is not a URL of the form {form}.") from None
    if "@" in parts.netloc:
        # Never echo it: the part before @ is a secret.
        raise ImagesError("the registry mirror URL must not carry a user name or password; give the mirror's "
                          f"address only ({form}) and let it serve anonymous pulls.")
    host = parts.hostname or ""
    valid_host = bool(_HOSTNAME.match(host)) or _is_ip(host)
    if (parts.scheme not in ("http", "https") or not valid_host or parts.query or parts.fragment
            or "?" in url or "#" in url or not _PATH.match(parts.path or "/") or port == 0):
        raise ImagesError(f"registry mirror {url!r} is not a URL of the form {form}.")
    if host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
        raise ImagesError(
            f"registry mirror {url!r} points at loopback, which inside a kind node is the node itself; use an "
            f"address the nodes can reach, such as the registry container's name on the kind network "
            f"(http://kind-registry:5000) or the host's LAN address."
        )
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hosts_toml_path(registry: str) -> str:
    """Where containerd looks for a registry's host config: ``<config_path>/<registry host[:port]>/hosts.toml``."""
    return f"{CERTS_DIR}/{registry}/hosts.toml"


def containerd_mirror_files(
    mirror_url: str, registries: Sequence[str] = DEFAULT_MIRRORED_REGISTRIES
) -> dict[str, str]:
    """The ``hosts.toml`` files that send pulls of each registry through the mirror, by path inside a node.

    Format from containerd ``docs/hosts.md``: ``server`` is the upstream tried after every ``[host]`` has failed, so
    a mirror that is down or lacks an image costs a retry, not a broken lab. An https mirror gets ``pull`` and
    ``resolve`` (the "private mirror" row of that doc's table): resolving tags through it is what lets a lab come up
    with no route to the internet. A plain-http mirror gets ``pull`` only (that doc's "public mirror" row): anyone
    on the path could answer a tag with another image's digest, so tags resolve at the https upstream and the mirror
    serves only content fetched by those digests, which containerd checks. containerd appends ``/v2`` to the
    mirror's path unless it already ends in it.

    Raises:
        ImagesError: When the URL or a registry name is malformed.
    """
    mirror = validate_mirror_url(mirror_url)
    capabilities = '"pull", "resolve"' if mirror.startswith("https://") else '"pull"'
    files = {}
    for registry in registries:
        if not _REGISTRY.match(registry):
            raise ImagesError(f"registry {registry!r} is not a host[:port] name such as docker.io or ghcr.io.")
        upstream = _UPSTREAM_SERVERS.get(registry, f"https://{registry}")
        files[hosts_toml_path(registry)] = (
            f"# Written by istio-ambient-lab: pull {registry} images through the mirror, else from {registry}.\n"
            f'server = "{upstream}"\n'
            f"\n"
            f'[host."{mirror}"]\n'
            f"  capabilities = [{capabilities}]\n"
        )
    return files


def kind_containerd_patch() -> str:
    """The ``containerdConfigPatches`` entry pointing containerd's CRI registry config at ``/etc/containerd/certs.d``.

    kind merges these patches into the node's ``/etc/containerd/config.toml``, which kind v0.32.0 node images keep
    in config format ``version = 2`` (``images/base/files/etc/containerd/config.toml``), so the key is the v2 one
    that kind's own ``site/static/examples/kind-with-registry.sh`` uses; containerd 2.x migrates it on load to
    ``[plugins."io.containerd.cri.v1.images".registry]`` (containerd ``docs/hosts.md``, "CRI"). That script notes
    the patch is unnecessary from kind v0.27.0 node images on (containerd 2.x defaults ``config_path`` to this
    directory); it is kept so that an older pinned node image behaves the same.
    """
    return f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{CERTS_DIR}"\n'


def apply_mirror(
    cluster: str, mirror_url: str, registries: Sequence[str] = DEFAULT_MIRRORED_REGISTRIES
) -> list[str]:
    """Writes the mirror's ``hosts.toml`` files into every node of a running kind cluster.

    containerd rereads this directory on each pull, so no restart is needed (containerd ``docs/hosts.md``). The
    content goes on stdin: nothing of it appears on a command line.

    Returns:
        The nodes written to.

    Raises:
        ImagesError: When the URL is malformed, the cluster has no nodes, or a write fails.
    """
    files = containerd_mirror_files(mirror_url, registries)  # validate before touching anything
    nodes = cluster_nodes(cluster)
    for node in nodes:
        for path, content in files.items():
            script = f"mkdir -p {shlex.quote(os.path.dirname(path))} && cat > {shlex.quote(path)}"
            result = _run(["docker", "exec", "-i", node, "sh", "-c", script], input_text=content)
            if result.returncode != 0:
                raise ImagesError(f"could not write {path} on node {node} ({_last_line(result)}); check that the "
                                  f"node is running (`docker ps`), then run this again.")
    return nodes


# --- CLI -----------------------------------------------------------------------------------------------------------


def _print_line(line: str) -> None:
    print(line, flush=True)  # flushed: pulumi-command and pipes show progress as it happens


def preload_arguments(istio_version: str, observability: bool) -> list[str]:
    """The `preload` options that choose the image list; the KindCluster component also uses them as triggers."""
    return ["--istio-version", istio_version] + ([] if observability else ["--no-observability"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.images", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("preload", help="load every lab image into the kind nodes", allow_abbrev=False)
    pre.add_argument("--cluster", required=True)
    pre.add_argument("--platform", choices=PLATFORMS, help="default: the Docker daemon's architecture")
    pre.add_argument("--istio-version", default=catalog.ISTIO_VERSION)
    pre.add_argument("--no-observability", action="store_true", help="skip the Prometheus and Kiali images")

    get = commands.add_parser("pull", help="pull every lab image into the local Docker (no cluster needed)",
                          allow_abbrev=False)
    get.add_argument("--platform", choices=PLATFORMS, help="default: the Docker daemon's architecture")
    get.add_argument("--istio-version", default=catalog.ISTIO_VERSION)
    get.add_argument("--no-observability", action="store_true", help="skip the Prometheus and Kiali images")

    accept = commands.add_parser("accept-digest", help="accept the digest Docker now holds for an image tag whose "
                                 "recorded digest (trust on first use) changed", allow_abbrev=False)
    accept.add_argument("ref", help="the image reference the refusal named, e.g. docker.io/istio/ztunnel:1.31.1")

    for name, text in (("mirror-config", "print the containerd files for a registry mirror"),
                       ("mirror-apply", "write the registry mirror files into the kind nodes")):
        sub = commands.add_parser(name, help=text, allow_abbrev=False)
        if name == "mirror-apply":
            sub.add_argument("--cluster", required=True)
        sub.add_argument("--mirror", required=True, help="http(s)://host[:port][/path]")
        sub.add_argument("--registry", action="append", dest="registries",
                         help=f"registry to send through the mirror (repeatable; default: "
                              f"{', '.join(DEFAULT_MIRRORED_REGISTRIES)})")

    args = parser.parse_args(argv)
    # pull, preload and mirror-apply run as the cluster's Commands, whose output pulumi-command logs, and quote docker
    # and kind: short lines. mirror-config prints files for people to copy: left whole.
    with logged_lines.folded(stdout=args.command != "mirror-config"):
        try:
            if args.command == "preload":
                platform = args.platform or detect_platform()
                images = catalog.all_images(args.istio_version, observability=not args.no_observability)
                _print_line(f"preloading {len(images)} images for {platform} into kind cluster '{args.cluster}'")
                report = preload(args.cluster, platform, images, say=_print_line)
                _print_line(f"done: {len(report.present)} present, {len(report.loaded)} loaded, "
                            f"{len(report.pulled)} pulled and loaded.")
            elif args.command == "pull":
                platform = args.platform or detect_platform()
                images = catalog.all_images(args.istio_version, observability=not args.no_observability)
                _print_line(f"pulling {len(images)} images for {platform} into the local Docker")
                pulled = pull(platform, images, say=_print_line)
                _print_line(f"done: {len(images) - len(pulled)} in Docker already, {len(pulled)} pulled.")
            elif args.command == "accept-digest":
                digest = DigestRecord().accept(args.ref)
                _print_line(f"{args.ref}: accepted digest {digest}; later pulls are held to it.")
            elif args.command == "mirror-config":
                registries = args.registries or DEFAULT_MIRRORED_REGISTRIES
                for path, content in containerd_mirror_files(args.mirror, registries).items():
                    _print_line(f"# {path}\n{content}")
                _print_line(f"# kind Cluster config, containerdConfigPatches entry\n{kind_containerd_patch()}")
            else:
                registries = args.registries or DEFAULT_MIRRORED_REGISTRIES
                nodes = apply_mirror(args.cluster, args.mirror, registries)
                _print_line(f"registry mirror set for {', '.join(registries)} on {len(nodes)} node(s): {', '.join(nodes)}")
        except ImagesError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
