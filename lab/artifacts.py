"""What the lab installs into a cluster, fetched once into `.lab/cache/`, verified, and installed from there.

The Istio, Prometheus and Kiali Helm charts and the Gateway API CRD bundle used to be fetched by the provider on
every `up`, from whatever the network answered. Now the program fetches each once, before it creates anything:

- a chart from an https repository is checked against the SHA-256 digest the repository's own `index.yaml` lists
  for that version (the repository's word: no second public source pins these digests);
- every file is also recorded at its first fetch in `.lab/cache/digests.json` (trust on first use): a later fetch,
  or a cached file, whose digest differs is refused, so a changed upstream or a tampered cache cannot slip in;
- the Gateway API bundle has no published digest: it is trust on first use alone.

Once the cache is warm, `up` fetches nothing (the kind node image and the container images aside: see
`preloadImages`). Charts in an `oci://` repository are left to Helm, which checks the OCI manifest digest itself;
they are fetched on every `up` and not recorded here.

No Pulumi import: the program calls `ensure` at its start, `./lab.sh` and the tests call the same functions.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import catalog, https, private

CACHE_ENV = "LAB_CACHE_DIR"  # moves the cache (the tests point it at a folder of their own)
DIGESTS_FILE = "digests.json"
TIMEOUT_S = 60


class ArtifactError(RuntimeError):
    """A chart or bundle that cannot be fetched or does not match its digest; the message says what to do."""


@dataclass(frozen=True)
class Chart:
    repository: str
    name: str
    version: str

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.tgz"


def cache_dir(project_root: Path) -> Path:
    return Path(os.environ.get(CACHE_ENV) or project_root / ".lab" / "cache")


def _fetch(url: str) -> bytes:
    if not url.startswith("https://"):
        raise ArtifactError(f"Refusing to fetch {url}: only https:// addresses are used; use an https:// repository.")
    try:
        with https.open_https(url, TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ArtifactError(f"Could not fetch {url} ({reason}): check your network connection or proxy, then run "
                            f"`{catalog.LAB_SCRIPT} up` again; once fetched, it is kept in .lab/cache/.") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recorded(cache: Path) -> dict[str, str]:
    try:
        return json.loads((cache / DIGESTS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise ArtifactError(f"{cache / DIGESTS_FILE} is not valid JSON: delete {cache} to fetch everything anew, "
                            f"then run `{catalog.LAB_SCRIPT} up` again.") from None


def _record(cache: Path, url: str, digest: str) -> None:
    digests = _recorded(cache)
    digests[url] = digest
    private.write_private(cache / DIGESTS_FILE, json.dumps(digests, indent=2, sort_keys=True) + "\n")


def _cached_or_fetched(cache: Path, file_name: str, url: str, published: str | None = None) -> Path:
    """The file for `url` in the cache, fetched when missing; checked against its recorded (and published) digest."""
    path = cache / file_name
    recorded = _recorded(cache).get(url)
    if path.is_file() and recorded:
        actual = _sha256(path.read_bytes())
        if actual != recorded:
            raise ArtifactError(f"The cached {path} has SHA-256 {actual}, not the {recorded} recorded when it was "
                                f"fetched from {url}: delete it to fetch it again, then run `{catalog.LAB_SCRIPT} up`.")
        return path
    data = _fetch(url)
    actual = _sha256(data)
    if published and actual != published:
        raise ArtifactError(f"Refusing {url}: its SHA-256 is {actual} but its repository's index.yaml lists "
                            f"{published}; try again later, and report it if it stays so.")
    if recorded and actual != recorded:
        raise ArtifactError(f"Refusing {url}: its SHA-256 is {actual} but it was {recorded} when this lab first "
                            f"fetched it; if the change is expected, remove its line from {cache / DIGESTS_FILE} and "
                            f"run `{catalog.LAB_SCRIPT} up` again.")
    private.write_private(path, data)
    if not recorded:
        _record(cache, url, actual)
    return path


def _index_entry(chart: Chart, indexes: dict[str, dict]) -> tuple[str, str | None]:
    """The chart's download URL and published digest, from its repository's index.yaml (read once per `indexes`)."""
    index_url = chart.repository.rstrip("/") + "/index.yaml"
    if index_url not in indexes:
        try:
            indexes[index_url] = yaml.safe_load(_fetch(index_url)) or {}
        except yaml.YAMLError:
            raise ArtifactError(f"{index_url} is not a Helm repository index; check the repository address.") from None
    index = indexes[index_url]
    for entry in (index.get("entries") or {}).get(chart.name) or []:
        if str(entry.get("version")).lstrip("v") == chart.version.lstrip("v") and entry.get("urls"):
            url = urllib.parse.urljoin(chart.repository.rstrip("/") + "/", entry["urls"][0])
            return url, entry.get("digest")
    raise ArtifactError(f"{index_url} has no {chart.name} chart at version {chart.version}: pick a version it "
                        "lists, or another repository.")


def chart(chart: Chart, project_root: Path, indexes: dict[str, dict] | None = None) -> Path | None:
    """The chart's packaged file in the cache (fetched and verified if missing); None for an oci:// repository."""
    if chart.repository.startswith("oci://"):
        return None
    cache = cache_dir(project_root) / "charts"
    recorded_url = _chart_urls(cache).get(f"{chart.repository}|{chart.name}|{chart.version}")
    # Warm: the file, where it came from and its digest are all known. Anything less goes through index.yaml again,
    # so a fetch is never without the repository's digest.
    if recorded_url and (cache / chart.file_name).is_file() and _recorded(cache).get(recorded_url):
        return _cached_or_fetched(cache, chart.file_name, recorded_url)
    url, published = _index_entry(chart, {} if indexes is None else indexes)
    path = _cached_or_fetched(cache, chart.file_name, url, published)
    urls = _chart_urls(cache)
    urls[f"{chart.repository}|{chart.name}|{chart.version}"] = url
    private.write_private(cache / "urls.json", json.dumps(urls, indent=2, sort_keys=True) + "\n")
    return path


def _chart_urls(cache: Path) -> dict[str, str]:
    """Where each cached chart came from, so a warm cache needs no index.yaml (and so no network)."""
    try:
        return json.loads((cache / "urls.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def gateway_api_bundle(version: str, project_root: Path) -> Path:
    """The Gateway API standard-channel CRD bundle in the cache (trust on first use)."""
    cache = cache_dir(project_root) / "gateway-api"
    return _cached_or_fetched(cache, f"standard-install-{version}.yaml", catalog.gateway_api_crds_url(version))


# The Gateway API bundle is over 1 MB of YAML, parsed by the program on every preview and update: PyYAML's C parser
# (in its wheels) reads it in about 0.1 s, the pure-Python one takes about a second on the critical path.
BUNDLE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def bundle_objects(path: Path) -> list[dict]:
    """The Kubernetes objects of a YAML bundle, in file order, without empty documents."""
    try:
        documents = yaml.load_all(path.read_text(), Loader=BUNDLE_LOADER)
        return [doc for doc in documents if isinstance(doc, dict) and doc.get("kind")]
    except yaml.YAMLError:
        raise ArtifactError(f"{path} is not valid YAML: delete it to fetch it again, then run "
                            f"`{catalog.LAB_SCRIPT} up`.") from None


def lab_charts(istio_version: str, chart_repository: str, observability: bool) -> list[Chart]:
    """Every chart a lab with these settings installs."""
    charts = [Chart(chart_repository, istio_chart.chart, istio_version) for istio_chart in catalog.ISTIO_CHARTS]
    if observability:
        charts += [Chart(catalog.PROMETHEUS_CHART_REPOSITORY, catalog.PROMETHEUS_CHART, catalog.PROMETHEUS_CHART_VERSION),
                   Chart(catalog.KIALI_CHART_REPOSITORY, catalog.KIALI_CHART, catalog.KIALI_VERSION)]
    return charts


def ensure(project_root: Path, istio_version: str, chart_repository: str, observability: bool,
           gateway_api_version: str | None) -> None:
    """Fetch and verify everything a lab with these settings installs; a warm cache fetches nothing."""
    indexes: dict[str, dict] = {}  # Istio's four charts share one (large) index.yaml: read it once
    for each in lab_charts(istio_version, chart_repository, observability):
        chart(each, project_root, indexes)
    if gateway_api_version:
        gateway_api_bundle(gateway_api_version, project_root)

