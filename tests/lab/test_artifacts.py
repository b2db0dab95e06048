"""The chart and bundle cache: fetched once, checked against the repository's index and the first fetch's digest,
installed from the cache; tampering and upstream changes refused in one sentence."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from lab import artifacts, catalog

REPO = "https://charts.example.test/istio"
CHART = artifacts.Chart(REPO, "istiod", "1.31.1")
CHART_URL = f"{REPO}/istiod-1.31.1.tgz"
BUNDLE_URL = catalog.gateway_api_crds_url("v1.6.1")


class Upstream:
    """What the network answers, by URL; every fetch is counted."""

    def __init__(self, chart: bytes = b"chart v1", listed: bytes | None = None):
        self.files = {CHART_URL: chart, BUNDLE_URL: b"kind: CustomResourceDefinition\n"}
        self.set_index(listed if listed is not None else chart)
        self.fetched: list[str] = []

    def set_index(self, listed: bytes) -> None:
        self.files[f"{REPO}/index.yaml"] = yaml.safe_dump({"entries": {"istiod": [
            {"version": "1.31.1", "urls": ["istiod-1.31.1.tgz"], "digest": hashlib.sha256(listed).hexdigest()}]}}).encode()

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.files:
            raise artifacts.ArtifactError(f"Could not fetch {url} (offline)")
        return self.files[url]


@pytest.fixture
def upstream(monkeypatch, tmp_path):
    fake = Upstream()
    monkeypatch.setattr(artifacts, "_fetch", fake)
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
    return fake


def test_a_chart_is_fetched_once_checked_and_then_served_offline(upstream, tmp_path):
    path = artifacts.chart(CHART, tmp_path)
    assert path.read_bytes() == b"chart v1" and upstream.fetched == [f"{REPO}/index.yaml", CHART_URL]
    recorded = json.loads((tmp_path / "cache" / "charts" / "digests.json").read_text())
    assert recorded == {CHART_URL: hashlib.sha256(b"chart v1").hexdigest()}
    upstream.files.clear()  # offline from now on
    assert artifacts.chart(CHART, tmp_path) == path
    assert len(upstream.fetched) == 2, "a warm cache asks the network nothing, not even index.yaml"


def test_a_chart_that_differs_from_its_index_digest_is_refused(upstream, tmp_path):
    upstream.set_index(b"what the repository says")
    with pytest.raises(artifacts.ArtifactError) as refused:
        artifacts.chart(CHART, tmp_path)
    assert str(refused.value) == (
        f"Refusing {CHART_URL}: its SHA-256 is {hashlib.sha256(b'chart v1').hexdigest()} but its repository's "
        f"index.yaml lists {hashlib.sha256(b'what the repository says').hexdigest()}; try again later, and report "
        "it if it stays so.")
    assert not (tmp_path / "cache" / "charts" / "istiod-1.31.1.tgz").exists()


def test_a_tampered_cache_is_refused(upstream, tmp_path):
    path = artifacts.chart(CHART, tmp_path)
    path.write_bytes(b"something else")
    with pytest.raises(artifacts.ArtifactError, match=r"^The cached .*istiod-1\.31\.1\.tgz has SHA-256 .* not the .* "
                       r"recorded when it was fetched from .*: delete it to fetch it again"):
        artifacts.chart(CHART, tmp_path)


def test_a_bundle_that_changed_upstream_since_the_first_fetch_is_refused(upstream, tmp_path):
    """Trust on first use: no public source pins the bundle's digest, so the first fetch's digest is the pin."""
    first = artifacts.gateway_api_bundle("v1.6.1", tmp_path)
    first.unlink()  # fetched again, e.g. after a cache clean-up that kept digests.json
    upstream.files[BUNDLE_URL] = b"kind: CustomResourceDefinition\n# changed\n"
    with pytest.raises(artifacts.ArtifactError, match=r"but it was [0-9a-f]{64} when this lab first fetched it; if the "
                       r"change is expected, remove its line from .*digests\.json"):
        artifacts.gateway_api_bundle("v1.6.1", tmp_path)


def test_oci_charts_are_left_to_helm_and_http_is_refused(upstream, tmp_path, monkeypatch):
    assert artifacts.chart(artifacts.Chart("oci://ghcr.io/istio/release/charts", "istiod", "1.31.1"), tmp_path) is None
    assert upstream.fetched == []
    monkeypatch.undo()
    monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(artifacts.ArtifactError, match=r"^Refusing to fetch http://plain\.test/index\.yaml: only "
                       r"https:// addresses are used"):
        artifacts.chart(artifacts.Chart("http://plain.test", "istiod", "1.31.1"), tmp_path)


def test_a_version_the_repository_does_not_list_is_one_sentence(upstream, tmp_path):
    with pytest.raises(artifacts.ArtifactError) as missing:
        artifacts.chart(artifacts.Chart(REPO, "istiod", "9.9.9"), tmp_path)
    assert str(missing.value) == (f"{REPO}/index.yaml has no istiod chart at version 9.9.9: pick a version it lists, "
                                  "or another repository.")


def test_ensure_covers_every_chart_and_the_bundle_of_a_lab(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(artifacts, "chart", lambda chart, root, indexes=None: asked.append(chart.name))
    monkeypatch.setattr(artifacts, "gateway_api_bundle", lambda version, root: asked.append(f"bundle {version}"))
    artifacts.ensure(tmp_path, "1.31.1", REPO, True, "v1.6.1")
    assert asked == ["base", "istiod", "cni", "ztunnel", "prometheus", "kiali-server", "bundle v1.6.1"]
    asked.clear()
    artifacts.ensure(tmp_path, "1.31.1", REPO, False, None)
    assert asked == ["base", "istiod", "cni", "ztunnel"]


def test_the_program_stops_before_anything_when_a_fetch_fails(monkeypatch):
    from tests.harness import run_program

    def offline(url):
        raise artifacts.ArtifactError(f"Could not fetch {url} (offline): check your network connection")

    monkeypatch.setattr("tests.harness.fake_fetch", offline)
    with pytest.raises(Exception, match=r"Could not fetch https://.*index\.yaml \(offline\)") as stopped:
        run_program("l4-only", {"istioVersion": "1.30.9"})  # a version the session's cache does not hold yet
    assert "Traceback" not in str(stopped.value)


def test_a_cache_that_lost_its_digest_record_goes_through_the_index_again(upstream, tmp_path):
    artifacts.chart(CHART, tmp_path)
    (tmp_path / "cache" / "charts" / "digests.json").unlink()
    upstream.set_index(b"what the repository says now")
    with pytest.raises(artifacts.ArtifactError, match="its repository's index.yaml lists"):
        artifacts.chart(CHART, tmp_path)


def test_charts_of_one_repository_read_its_index_once(upstream, tmp_path):
    """Istio's four charts come from one repository whose index.yaml is large: one read serves them all."""
    for name in ("base", "istiod"):
        upstream.files[f"{REPO}/{name}-1.31.1.tgz"] = f"chart {name}".encode()
    listed = {name: [{"version": "1.31.1", "urls": [f"{name}-1.31.1.tgz"],
                      "digest": hashlib.sha256(f"chart {name}".encode()).hexdigest()}] for name in ("base", "istiod")}
    upstream.files[f"{REPO}/index.yaml"] = yaml.safe_dump({"entries": listed}).encode()
    indexes: dict = {}
    for name in ("base", "istiod"):
        artifacts.chart(artifacts.Chart(REPO, name, "1.31.1"), tmp_path, indexes)
    assert upstream.fetched.count(f"{REPO}/index.yaml") == 1


def test_a_bundle_reads_as_the_safe_loader_reads_it_only_faster(tmp_path):
    """The program parses the Gateway API bundle on every preview and update: with PyYAML's C parser (its wheels
    carry it) the objects are the same as the safe loader's, empty documents and lists left out, and bad YAML still
    gets its sentence."""
    assert artifacts.BUNDLE_LOADER is yaml.CSafeLoader
    text = ("---\n# a comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            "data: {on: 'yes', n: '010', t: 2026-12-05}\n---\n- not an object\n---\n"
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: b\n"
            "spec: {versions: [{name: v1, served: true}]}\n")
    path = tmp_path / "bundle.yaml"
    path.write_text(text)
    expected = [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]
    assert artifacts.bundle_objects(path) == expected and [d["kind"] for d in expected] == [
        "ConfigMap", "CustomResourceDefinition"]
    path.write_text("kind: [unclosed\n")
    with pytest.raises(artifacts.ArtifactError, match="is not valid YAML: delete it to fetch it again"):
        artifacts.bundle_objects(path)
