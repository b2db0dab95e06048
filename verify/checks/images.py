"""The mesh's own images run the digests this lab first saw: istiod, istio-cni, ztunnel and proxyv2, trust on first
use.

istiod holds the mesh's CA (it signs every workload certificate), istio-cni (host network, hostPath, privileged
init) and ztunnel (NET_ADMIN in every pod's network namespace) are the images a swapped tag would hurt most, and
proxyv2 (the ingress gateway and, in l7, the waypoint) sees every request in the clear. No public source pins their
digests, so the digest each tag had when the lab first saw it running (or first preloaded it: the same record,
`.lab/image-digests.json`, lab.images) is the pin, and a later run on another digest for the same tag fails here, with
or without `preloadImages`.
"""

from __future__ import annotations

from pathlib import Path

from lab import catalog
from lab.images import DigestRecord, normalize_ref
from verify.checks.base import GATEWAY_NAME_LABEL, CheckContext, Observation, check_result, pod_items, poll
from verify.report import CheckResult

IMAGES_CHECK = "images: istiod, istio-cni, ztunnel and proxyv2 run the digests this lab first saw"
# (what runs it, its namespace (None: the apps' namespace), pod selector, only when a waypoint is in the path)
HELD = (
    ("istiod", catalog.ISTIO_NAMESPACE, catalog.ISTIOD_POD_LABEL, False),
    ("istio-cni", catalog.ISTIO_NAMESPACE, catalog.ISTIO_CNI_POD_LABEL, False),
    ("ztunnel", catalog.ISTIO_NAMESPACE, catalog.ZTUNNEL_POD_LABEL, False),
    # proxyv2, as istiod deploys it for the lab's Gateways.
    ("ingress gateway", None, f"{GATEWAY_NAME_LABEL}={catalog.INGRESS_GATEWAY_NAME}", False),
    ("waypoint", None, f"{GATEWAY_NAME_LABEL}={catalog.WAYPOINT_NAME}", True),
)


def held_pods(ctx: CheckContext) -> list[tuple[str, str, str]]:
    """(what, namespace, selector) of every pod whose images this mode holds to the record."""
    return [(what, namespace or ctx.namespace, selector) for what, namespace, selector, waypoint_only in HELD
            if ctx.facts.waypoint_in_path or not waypoint_only]


def _running_digests(ctx: CheckContext) -> tuple[dict[str, set[str]], list[str], list[str], list[str]]:
    """Image ref -> registry digests of the containers of the held pods (proxyv2 runs in more than one, a rollout
    runs old and new pods at once); what is still unknown; the images loaded
    from the user's Docker (preloadImages: the runtime knows no registry digest, and lab.images already held them to
    the record before loading); commands."""
    digests: dict[str, set[str]] = {}
    unknown: list[str] = []
    loaded: list[str] = []
    commands = []
    for _, namespace, selector in held_pods(ctx):
        commands.append(ctx.cluster.command(["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]))
        pods = pod_items(ctx.cluster.pods(namespace, selector))
        if not pods:
            unknown.append(f"no pod labelled {selector} in {namespace}")
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                image, image_id = status.get("image", ""), status.get("imageID", "")
                if image_id.startswith("sha256:"):  # imported from an archive: no registry digest to compare
                    loaded.append(normalize_ref(image))
                    continue
                if "@sha256:" not in image_id:
                    unknown.append(f"{pod['metadata']['name']} ({image}) has no image digest yet")
                    continue
                digests.setdefault(normalize_ref(image), set()).add(image_id.split("@", 1)[1])
    return digests, unknown, sorted(set(loaded)), commands


def check_image_digests(ctx: CheckContext) -> CheckResult:
    started = ctx.clock()
    record = DigestRecord(Path(ctx.image_record))  # scheduled only with a record (check_specs)

    def probe() -> Observation:
        digests, unknown, loaded, commands = _running_digests(ctx)
        running = {ref: ", ".join(sorted(found)) for ref, found in digests.items()}
        evidence = {"running": running, "preloaded": loaded, "record": str(record.path)}
        if unknown:
            return Observation(False, "; ".join(unknown), evidence, commands)
        recorded = record.recorded()
        changed = [f"{ref} runs {digest}, but this lab first saw {recorded[ref]}"
                   for ref, found in sorted(digests.items()) for digest in sorted(found)
                   if recorded.get(ref) not in (None, digest)]
        # Never recorded, and two digests for one tag at once: neither can be the one first seen.
        changed += [f"{ref} runs {running[ref]} at once, so neither was recorded"
                    for ref, found in sorted(digests.items()) if ref not in recorded and len(found) > 1]
        if changed:
            return Observation(
                False, "; ".join(changed) + ": if the tag was re-published on purpose, accept it with "
                "`venv/bin/python -m lab.images accept-digest <image>` (after `docker pull <image>`)", evidence,
                commands, settled=True)
        new = [ref for ref in sorted(digests) if ref not in recorded]
        for ref in new:
            record.remember(ref, running[ref])
        said = f"recorded at first use: {', '.join(new)}" if new else "every digest as first seen"
        if loaded:
            said += f"; {', '.join(loaded)} preloaded from Docker, held to the record before loading"
        return Observation(True, f"{len(digests)} image(s) checked; {said}", evidence, commands)

    outcome = poll(ctx, probe)
    return check_result(ctx, IMAGES_CHECK, "each istiod, istio-cni, ztunnel and proxyv2 image tag on the digest "
                        "first recorded", outcome, "every held container to report its image digest", started)
