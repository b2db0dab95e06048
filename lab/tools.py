"""Pinned releases of the command-line tools the lab installs when a machine lacks them: kind, kubectl, pulumi,
and istioctl (at each stack's istioVersion, see ``istioctl_release``).

Each digest below was pinned only where at least two independent public copies agreed on it (copies in public
repositories disagree in places, and some are wrong); where each came from is written beside it. A platform
without such agreement is ``None``: bootstrap refuses to install it and asks the user to install the tool
themselves (or to set ``LAB_TRUST_PUBLISHED_CHECKSUMS=1`` to rely on the release's own checksum file alone).

Plain data, no Pulumi import. Bump a version by replacing every digest of that tool in the same change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PLATFORMS = ("linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64")


@dataclass(frozen=True)
class Release:
    """One tool's pinned release and where its files live.

    ``asset`` and ``checksums`` are paths under ``base_url`` with ``{version}``, ``{os}`` and ``{arch}``
    placeholders; ``{arch}`` is spelt as the release spells it (``arch_names``).
    """

    name: str
    version: str  # without a leading "v"
    minimum: str  # the oldest version already on PATH that the lab accepts instead of downloading
    base_url: str  # LAB_DOWNLOAD_BASE_<NAME> overrides it (tests point it at 127.0.0.1)
    asset: str
    checksums: str  # the checksum file published next to the asset
    sha256: Mapping[str, str | None]  # "linux/amd64" -> pinned digest, None where unpinned
    archive: bool = False  # False: a bare binary; True: a .tar.gz whose ``archive_dir`` holds the binaries
    arch_names: Mapping[str, str] = field(default_factory=lambda: {"amd64": "amd64", "arm64": "arm64"})
    archive_dir: str = "pulumi"  # the archive's folder of binaries; "" when they sit at its top (istioctl)
    os_names: Mapping[str, str] = field(default_factory=lambda: {"linux": "linux", "darwin": "darwin"})
    exact: bool = False  # True: only this very version will do (istioctl must match the control plane)

    @property
    def base_url_variable(self) -> str:
        """The environment variable that overrides ``base_url``."""
        return f"LAB_DOWNLOAD_BASE_{self.name.upper()}"

    @property
    def accepted(self) -> str:
        """The versions the lab takes, as a sentence says them: "v1.2.3 or newer", or "v1.2.3" when exact."""
        return f"v{self.version}" if self.exact else f"v{self.minimum} or newer"

    def asset_path(self, os_name: str, arch: str) -> str:
        """The asset's path under the base URL for one platform."""
        return self.asset.format(version=self.version, os=self.os_names[os_name], arch=self.arch_names[arch])

    def checksums_path(self, os_name: str, arch: str) -> str:
        """The published checksum file's path under the base URL for one platform."""
        return self.checksums.format(version=self.version, os=self.os_names[os_name], arch=self.arch_names[arch])


# kind v0.32.0 ships catalog.KIND_NODE_IMAGE (Kubernetes 1.36.1) as its default node image; the lab names that image
# in every node of its kind config anyway, so the two are bumped together.
KIND = Release(
    name="kind",
    version="0.32.0",
    minimum="0.32.0",
    base_url="https://github.com/kubernetes-sigs/kind/releases/download",
    asset="v{version}/kind-{os}-{arch}",
    checksums="v{version}/kind-{os}-{arch}.sha256sum",
    sha256={
        # Agreeing copies (search-index file ids; the index did not name their repositories): a bash TOOLS table
        # (62646219221), SAP's hack/install-test-deps.sh (62193199617), a Makefile kind_<os>_<arch>_SHA256SUM
        # block (61477325379), a Go pinnedArtifacts map (66551755946), a Python _KIND_SHA256 map (58847372568).
        # Rejected: 6e811cf0...192b, found only in one project's KIND_PINS (three copies of the same file).
        "linux/amd64": "50030de23cf40a18505f20426f6a8506bedf13c6e509244bd1fa9463721b0f54",
        # Same five copies, plus a bash case table (70730901610).
        "linux/arm64": "b92cd615e97585de8ddade28ed5cd7feb4248d717c233eea5b03c37298900f5d",
        # Same five copies, plus a provenance note comparing GitHub's release metadata with the published
        # .sha256sum (57374847950). Rejected: 55b3f27c...f2fb, found only in the KIND_PINS project above.
        "darwin/amd64": "295ac6d0d634c9819c9907df45e3017d1f13166bd13c3404c45e79f7faa47498",
        # Same five copies, plus a note checking the release asset digest and its .sha256sum (71497496374).
        "darwin/arm64": "dca67911095a110c2b5c36e26df6cac860c602033e456c0db47be498cdef1ebb",
    },
)

# kubectl within one minor of the node image's Kubernetes 1.36. v1.36.5 exists, but only one copy of one of its
# digests could be found, so the newest patch with agreeing copies, v1.36.4, is pinned.
KUBECTL = Release(
    name="kubectl",
    version="1.36.4",
    minimum="1.35.0",  # kubectl supports one minor of skew against the 1.36 API server
    base_url="https://dl.k8s.io/release",
    asset="v{version}/bin/{os}/{arch}/kubectl",
    checksums="v{version}/bin/{os}/{arch}/kubectl.sha256",
    sha256={
        # Agreeing copies: a k3s-gitops-lab tools.sh taken from dl.k8s.io's kubectl.sha256 (70891397700), a
        # Python installer checked against kubectl.sha256 (71447328271), a pins table citing dl.k8s.io
        # (68336677490), a Dockerfile with per-arch ARGs (57664853616), a versions file (68947727873).
        "linux/amd64": "8b8f088da2dab964f853b38464033b1be15ede2839eca751482357c45abdd05a",
        # Agreeing copies: 70891397700, 68336677490, 57664853616, a second Dockerfile (70751226921), a Ruby
        # version table (68858880048).
        "linux/arm64": "0ecf44450ee6063bf19dd166a103ee6df4a9034455c2abce626e6eea657d73fb",
        # Unpinned: the only copy found (62193199617) labels its kubectl v1.37.0 while carrying v1.36.4's other
        # digests, so it cannot count as a source.
        "darwin/amd64": None,
        # Agreeing copies: 70891397700, a pins table naming 1.36.4 darwin/arm64 (57553000914), a run report that
        # checked it against the official checksum (71438483776).
        "darwin/arm64": "c9e4f713d6fee0043a3d835cca13077cda2bc0973840eb9779360df0b5bdfc69",
    },
)

# The CLI that matches the pulumi SDK pinned in requirements.txt. 3.259.0 is the newest release found whose four
# tarballs each have two agreeing independent copies. No copy of any 3.272.0 digest was found; the newer
# releases that do have copies lack a second darwin-x64 one (3.261.0's appears only in the devenv.nix below,
# and nixpkgs stopped updating its darwin-x64 entry at 3.250.0).
# Source 1 (hex): pulumi/homebrew-tap Formula/pulumi.rb at commit 51fb494f9549f08978388a9994547e46509279af
# ("Brew formula update for Pulumi version 3.259.0"), the sha256 beside each tarball's url.
# Source 2 (nix base32, converted to hex here): a devenv.nix that pins pulumiVersion = "3.259.0" in a
# pulumiPlatform.<system>.sha256 table (search-index file id 66529003427; the index did not name its
# repository). The same conversion turns nixpkgs' pulumi-bin data.nix hashes for 3.250.0 and 3.221.0 into
# exactly Homebrew's hex digests for those releases, so it is not a guess.
PULUMI = Release(
    name="pulumi",
    version="3.259.0",
    minimum="3.259.0",
    base_url="https://get.pulumi.com/releases/sdk",
    asset="pulumi-v{version}-{os}-{arch}.tar.gz",
    checksums="pulumi-{version}-checksums.txt",
    archive=True,
    arch_names={"amd64": "x64", "arm64": "arm64"},
    sha256={
        # Homebrew tap; devenv.nix "x86_64-linux" = 1r8qyyjm94j5fz3k8gz11k3pn3ywk00b1i44813h2gf2r9x3bfll. A third
        # copy agrees: Fryuni/config-files overlay/pulumi/data.nix at commit
        # 16a3a25a09a095f7edd096916cf48d3ce77886ef (the same base32 string).
        "linux/amd64": "94ba357acac23d01474084c4b00098dc0f7bc70ce13f34c777459254a5f718e5",
        # Homebrew tap; devenv.nix "aarch64-linux" = 0lv892zyg209k3chd9wh88j8m76sc98cz0ng6sxn08d7cds35j7d.
        "linux/arm64": "edc8327463a72160bb36cf82cf5062da9c8a244290a706d9980988e7bf486853",
        # Homebrew tap; devenv.nix "x86_64-darwin" = 0d654rr4p847an6dl4z6nah5hqy6s5qb58qz0sms7gvph8xlrjpa.
        "darwin/amd64": "eaca4c3b8277bfa3ab061fa3b270d1c66358a0b2e613da8c5587a04b7226c534",
        # Homebrew tap; devenv.nix "aarch64-darwin" = 0r6801n5b1dxv7h4xyxj8h704appi921m11byvwjqzjjkqbpzhjp.
        "darwin/arm64": "57c27f179e527e2cf9f62b841a448af72a020e44b2fb4ee0d9bd85556c00c864",
    },
)

RELEASES: dict[str, Release] = {release.name: release for release in (KIND, KUBECTL, PULUMI)}

# istioctl, per Istio release: it must be the control plane's own version, so every stack gets the istioctl of its
# istioVersion. The release publishes istioctl-<v>-<os>-<arch>.tar.gz (osx for darwin, istioctl at the archive's
# top) with a .sha256 file beside each (istio/release-builder pkg/build/archive.go; the osx-amd64 name since 2023).
# No digest is pinned yet: for 1.31.1 only one public copy of each of two digests was found, and a single copy is
# not two agreeing sources (linux/amd64 a44563904f22...49910639 in two notes of what looks like one project, search
# file ids 68465551743 and 68429437184; darwin/arm64 3f37edda91e5...1f46fecd1 in one setup guide, 70396831401).
# Until a second source agrees, istioctl installs only with LAB_TRUST_PUBLISHED_CHECKSUMS=1 (the release's .sha256
# alone), or the user puts istioctl of that exact version on PATH. Add a version as {"linux/amd64": "<hex>", ...}.
ISTIOCTL_SHA256: dict[str, dict[str, str | None]] = {
    "1.31.1": {platform: None for platform in PLATFORMS},
}


def istioctl_release(version: str) -> Release:
    """The istioctl release of one Istio version, with whatever digests are pinned for it (none: all None)."""
    return Release(
        name="istioctl",
        version=version,
        minimum=version,
        base_url="https://github.com/istio/istio/releases/download",
        asset="{version}/istioctl-{version}-{os}-{arch}.tar.gz",
        checksums="{version}/istioctl-{version}-{os}-{arch}.tar.gz.sha256",
        sha256=ISTIOCTL_SHA256.get(version) or {platform: None for platform in PLATFORMS},
        archive=True,
        archive_dir="",
        os_names={"linux": "linux", "darwin": "osx"},
        exact=True,
    )

# Set to 1 to install an unpinned asset on the strength of the release's own checksum file alone. That file
# guards against a corrupt download, not against a tampered release, which is why it is opt-in.
TRUST_PUBLISHED_VARIABLE = "LAB_TRUST_PUBLISHED_CHECKSUMS"
