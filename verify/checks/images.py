"""The privileged data plane runs the images this lab first saw: istio-cni and ztunnel, trust on first use.

istio-cni (host network, hostPath, privileged init) and ztunnel (NET_ADMIN in every pod's network namespace) are
the two images a swapped tag would hurt most. No public source pins their digests, so the digest each tag had when
the lab first saw it running (or first preloaded it: the same record, `.lab/image-digests.json`, lab.images) is the
pin, and a later run on another digest for the same tag fails here, with or without `preloadImages`.
"""

from __future__ import annotations

from pathlib import Path

from lab import catalog
from lab.images import DigestRecord, normalize_ref
from verify.checks.base import CheckContext, Observation, check_result, pod_items, poll
from verify.report import CheckResult

IMAGES_CHECK = "images: istio-cni and ztunnel run the digests this lab first saw"
PRIVILEGED = (("istio-cni", catalog.ISTIO_CNI_POD_LABEL), ("ztunnel", catalog.ZTUNNEL_POD_LABEL))


def _running_digests(ctx: CheckContext) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """Image ref -> registry digest of every container of the privileged pods; what is still unknown; the images
    loaded from the user's Docker (preloadImages: the runtime knows no registry digest, and lab.images already held
    them to the record before loading); commands."""
    digests: dict[str, str] = {}
    unknown: list[str] = []
    loaded: list[str] = []
    commands = []
    for _, selector in PRIVILEGED:
        commands.append(ctx.cluster.command(["get", "pods", "-n", catalog.ISTIO_NAMESPACE, "-l", selector, "-o",
                                             "json"]))
        pods = pod_items(ctx.cluster.pods(catalog.ISTIO_NAMESPACE, selector))
        if not pods:
            unknown.append(f"no pod labelled {selector}")
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                image, image_id = status.get("image", ""), status.get("imageID", "")
                if image_id.startswith("sha256:"):  # imported from an archive: no registry digest to compare
                    loaded.append(normalize_ref(image))
                    continue
                if "@sha256:" not in image_id:
                    unknown.append(f"{pod['metadata']['name']} ({image}) has no image digest yet")
                    continue
                digests[normalize_ref(image)] = image_id.split("@", 1)[1]
    return digests, unknown, sorted(set(loaded)), commands


def check_image_digests(ctx: CheckContext) -> CheckResult:
    started = ctx.clock()
    record = DigestRecord(Path(ctx.image_record))  # scheduled only with a record (check_specs)

    def probe() -> Observation:
        digests, unknown, loaded, commands = _running_digests(ctx)
        evidence = {"running": digests, "preloaded": loaded, "record": str(record.path)}
        if unknown:
            return Observation(False, "; ".join(unknown), evidence, commands)
        recorded = record.recorded()
        changed = [f"{ref} runs {digest}, but this lab first saw {recorded[ref]}"
                   for ref, digest in sorted(digests.items()) if recorded.get(ref) not in (None, digest)]
        if changed:
            return Observation(
                False, "; ".join(changed) + ": if the tag was re-published on purpose, accept it with "
                "`venv/bin/python -m lab.images accept-digest <image>` (after `docker pull <image>`)", evidence,
                commands, settled=True)
        new = [ref for ref in sorted(digests) if ref not in recorded]
        for ref in new:
            record.remember(ref, digests[ref])
        said = f"recorded at first use: {', '.join(new)}" if new else "every digest as first seen"
        if loaded:
            said += f"; {', '.join(loaded)} preloaded from Docker, held to the record before loading"
        return Observation(True, f"{len(digests)} image(s) checked; {said}", evidence, commands)

    outcome = poll(ctx, probe)
    return check_result(ctx, IMAGES_CHECK, "each istio-cni and ztunnel image tag on the digest first recorded",
                        outcome, "every istio-cni and ztunnel container to report its image digest", started)
