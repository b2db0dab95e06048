"""The Istio images the lab lists (and preloads) are the ones the charts run with the values the program sets.

The expected tags are derived here from the Helm release values of the program run under mocks, with the charts'
own rules (Istio 1.31 manifests/charts): an image tag is `<tag>-<variant>` when a variant is set; the variant is the
chart's `variant`, else `global.variant`, else the one its profile sets (files/profile-ambient.yaml sets
`global.variant: distroless`); waypoints and gateways get proxyv2 from istiod's injector with istiod's variant.
"""

import pytest

from lab import catalog
from tests.harness import STACKS

RELEASE = "kubernetes:helm.sh/v3:Release"
# What each chart profile sets as global.variant, as the chart files say (not taken from lab/catalog.py).
CHART_PROFILE_VARIANTS = {"ambient": "distroless"}


def rendered_tag(values: dict, version: str) -> str:
    """The tag a chart renders for its image from the values it is given."""
    variant = values.get("variant") or (values.get("global") or {}).get("variant")
    if variant is None:
        variant = CHART_PROFILE_VARIANTS.get(values.get("profile", ""), "")
    return f"{version}-{variant}" if variant else version


def images_the_charts_run(run) -> set[str]:
    releases = {release.name: release.inputs for release in run.of_type(RELEASE)}
    version = releases[catalog.ISTIOD.release]["version"]
    values = {name: releases[name]["values"] for name in (catalog.ISTIOD.release, catalog.ISTIO_CNI.release,
                                                           catalog.ZTUNNEL.release)}
    istiod_tag = rendered_tag(values[catalog.ISTIOD.release], version)
    return {
        f"docker.io/istio/pilot:{istiod_tag}",
        f"docker.io/istio/install-cni:{rendered_tag(values[catalog.ISTIO_CNI.release], version)}",
        f"docker.io/istio/ztunnel:{rendered_tag(values[catalog.ZTUNNEL.release], version)}",
        f"docker.io/istio/proxyv2:{istiod_tag}",  # waypoints and the ingress gateway, from istiod's injector
    }


@pytest.mark.parametrize("stack", STACKS)
def test_the_istio_image_list_is_what_the_charts_run(runs, stack):
    listed = {image.ref for image in catalog.istio_images()}
    assert listed == images_the_charts_run(runs[stack])


def test_the_ambient_profile_means_distroless_for_istiod_cni_and_proxies_but_not_ztunnel():
    refs = [image.ref for image in catalog.istio_images("1.31.1")]
    assert refs == [
        "docker.io/istio/pilot:1.31.1-distroless",
        "docker.io/istio/install-cni:1.31.1-distroless",
        "docker.io/istio/ztunnel:1.31.1",
        "docker.io/istio/proxyv2:1.31.1-distroless",
    ]


def test_preload_carries_exactly_the_images_the_charts_run(runs):
    """`lab.images preload` loads catalog.all_images(): every Istio image in it must be one that runs, and back."""
    istio = {image.ref for image in catalog.all_images() if image.name.startswith("docker.io/istio/")
             and "examples-bookinfo" not in image.name}
    assert istio == images_the_charts_run(runs["l7"])
