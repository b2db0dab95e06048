"""The pinned releases: every digest well-formed, every URL where the projects publish it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import tools


@pytest.mark.parametrize("release", tools.RELEASES.values(), ids=tools.RELEASES)
def test_every_platform_has_a_well_formed_digest_or_none(release):
    assert set(release.sha256) == set(tools.PLATFORMS)
    for digest in release.sha256.values():
        assert digest is None or re.fullmatch(r"[0-9a-f]{64}", digest)


def test_what_is_pinned_and_what_is_not():
    pinned = {name: sorted(p for p, d in release.sha256.items() if d) for name, release in tools.RELEASES.items()}
    assert pinned == {
        "kind": sorted(tools.PLATFORMS),
        "kubectl": ["darwin/arm64", "linux/amd64", "linux/arm64"],
        "pulumi": sorted(tools.PLATFORMS),
    }


def test_urls_follow_each_projects_release_layout():
    def url(release, os_name, arch):
        base = release.base_url
        return f"{base}/{release.asset_path(os_name, arch)}", f"{base}/{release.checksums_path(os_name, arch)}"

    assert url(tools.KIND, "linux", "amd64") == (
        "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-linux-amd64",
        "https://github.com/kubernetes-sigs/kind/releases/download/v0.32.0/kind-linux-amd64.sha256sum",
    )
    assert url(tools.KUBECTL, "darwin", "arm64") == (
        "https://dl.k8s.io/release/v1.36.4/bin/darwin/arm64/kubectl",
        "https://dl.k8s.io/release/v1.36.4/bin/darwin/arm64/kubectl.sha256",
    )
    assert url(tools.PULUMI, "darwin", "amd64") == (
        "https://get.pulumi.com/releases/sdk/pulumi-v3.259.0-darwin-x64.tar.gz",
        "https://get.pulumi.com/releases/sdk/pulumi-3.259.0-checksums.txt",
    )
    assert [release.base_url_variable for release in tools.RELEASES.values()] == [
        "LAB_DOWNLOAD_BASE_KIND", "LAB_DOWNLOAD_BASE_KUBECTL", "LAB_DOWNLOAD_BASE_PULUMI",
    ]


def test_the_cli_matches_the_pinned_pulumi_sdk():
    requirements = Path(tools.__file__).resolve().parents[1] / "requirements.in"
    assert f"pulumi=={tools.PULUMI.version}" in requirements.read_text().splitlines()
