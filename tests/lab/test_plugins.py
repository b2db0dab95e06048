"""The kubernetes and command plugins: installed by ./lab.sh from downloads checked like the tools', never fetched
by pulumi unchecked. A loopback https server serves the release files; a fake pulumi installs what it is given."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from lab import bootstrap, cli, tools
from lab.bootstrap import LabError

ROOT = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plugin_tarball(name: str) -> bytes:
    """A release archive as goreleaser makes it: the provider binary at the top."""
    binary = f"#!/bin/sh\necho pulumi-resource-{name}\n".encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        member = tarfile.TarInfo(f"pulumi-resource-{name}")
        member.size, member.mode = len(binary), 0o755
        tar.addfile(member, io.BytesIO(binary))
    return out.getvalue()


TARBALLS = {name: plugin_tarball(name) for name in tools.PLUGINS}


def serve(server, published: dict[str, str] | None = None) -> None:
    """Each plugin's linux/amd64 tarball and its release's checksum file, as GitHub serves them."""
    for name, release in tools.PLUGINS.items():
        asset = release.asset_path("linux", "amd64")
        server.files[f"/{name}/{asset}"] = TARBALLS[name]
        digest = (published or {}).get(name, sha(TARBALLS[name]))
        server.files[f"/{name}/{release.checksums_path('linux', 'amd64')}"] = (
            f"{'0' * 64}  pulumi-resource-{name}-v{release.version}-darwin-arm64.tar.gz\n"
            f"{digest}  {asset.rsplit('/', 1)[1]}\n").encode()


def pin(monkeypatch, **digests: str | None) -> None:
    """Pins linux/amd64 digests of the plugins, as lab/tools.py would once two sources agree."""
    pinned = {name: dataclasses.replace(release, sha256={**release.sha256, "linux/amd64": digests.get(name)})
              for name, release in tools.PLUGINS.items()}
    monkeypatch.setattr(bootstrap, "PLUGINS", pinned)


@pytest.fixture
def pulumi(fake_bin, tmp_path) -> Path:
    """A pulumi whose `plugin install ... --file F` unpacks F where the real one would, and logs its arguments."""
    log = tmp_path / "pulumi-calls.log"
    fake_bin.add("pulumi", f"""
echo "$*" >> {log}
[ "$1 $2" = "plugin install" ] || exit 0
[ -n "$PULUMI_FAIL" ] && {{ echo "error: $PULUMI_FAIL" >&2; exit 1; }}
folder="$PULUMI_HOME/plugins/resource-$4-v$5"
mkdir -p "$folder" && tar -xzf "$7" -C "$folder"
""")
    return fake_bin.folder / "pulumi"


def environment(server, tmp_path, fake_bin, **extra) -> dict[str, str]:
    return {"PATH": f"{fake_bin.path}:/usr/bin:/bin", "PULUMI_HOME": str(tmp_path / "pulumi-home"),
            **{release.base_url_variable: f"{server.url}/{name}" for name, release in tools.PLUGINS.items()},
            **extra}


def calls(tmp_path) -> list[str]:
    log = tmp_path / "pulumi-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def ensure(tmp_path, pulumi, env, lines=None):
    bootstrap.ensure_plugins(tmp_path / ".lab" / "tools", pulumi, env=env, platform_=("linux", "amd64"),
                             progress=(lines if lines is not None else []).append)


def test_pinned_plugins_are_checked_then_handed_to_pulumi_before_it_could_fetch_them(server, tmp_path, fake_bin,
                                                                                   pulumi, monkeypatch):
    serve(server)
    pin(monkeypatch, kubernetes=sha(TARBALLS["kubernetes"]), command=sha(TARBALLS["command"]))
    env = environment(server, tmp_path, fake_bin)
    lines: list[str] = []
    ensure(tmp_path, pulumi, env, lines)
    installs = calls(tmp_path)
    assert [re.sub(r"--file \S+", "--file F", line) for line in installs] == [
        "plugin install resource kubernetes 4.34.2 --file F --exact",
        "plugin install resource command 1.2.1 --file F --exact",
    ]
    assert all(line.split("--file ")[1].split()[0].startswith(str(tmp_path / ".lab" / "tools")) for line in installs)
    for name, release in tools.PLUGINS.items():
        assert bootstrap.plugin_installed(release, env), name
    assert [p.name for p in (tmp_path / ".lab" / "tools").iterdir()] == [], "the checked download is not kept"
    assert lines[0] == "kubernetes plugin v4.34.2: not installed, installing it for linux/amd64"

    # Installed now: the next command neither downloads nor asks pulumi.
    asked = len(server.requests)
    ensure(tmp_path, pulumi, env, lines)
    assert len(server.requests) == asked and len(calls(tmp_path)) == 2
    folder = tmp_path / "pulumi-home" / "plugins" / "resource-command-v1.2.1"
    assert lines[-1] == f"command plugin v1.2.1: using {folder}"


def test_a_plugin_that_differs_from_its_pin_never_reaches_pulumi(server, tmp_path, fake_bin, pulumi, monkeypatch):
    serve(server)
    pin(monkeypatch, kubernetes="f" * 64, command=sha(TARBALLS["command"]))
    with pytest.raises(LabError) as refused:
        ensure(tmp_path, pulumi, environment(server, tmp_path, fake_bin))
    assert str(refused.value) == (
        f"Refusing to install kubernetes v4.34.2 (linux/amd64): expected SHA-256 {'f' * 64} (pinned in lab/tools.py) "
        f"but the download has {sha(TARBALLS['kubernetes'])}; try again, and report it if it happens again.")
    assert calls(tmp_path) == [] and list((tmp_path / ".lab" / "tools").iterdir()) == []


def test_a_plugin_that_differs_from_the_published_checksum_never_reaches_pulumi(server, tmp_path, fake_bin, pulumi,
                                                                               monkeypatch):
    serve(server, published={"kubernetes": "e" * 64})
    pin(monkeypatch, kubernetes=sha(TARBALLS["kubernetes"]), command=sha(TARBALLS["command"]))
    with pytest.raises(LabError, match=r"expected SHA-256 e{64} \(from https://127\.0\.0\.1:\d+/kubernetes/v4\.34\.2/"
                                       r"pulumi-kubernetes_4\.34\.2_checksums\.txt\)"):
        ensure(tmp_path, pulumi, environment(server, tmp_path, fake_bin))
    assert calls(tmp_path) == []


def test_an_unpinned_plugin_is_refused_in_one_sentence_without_a_download(server, tmp_path, fake_bin, pulumi):
    """No digest of these plugin versions has two public sources yet (lab/tools.py): the project's rule for that."""
    serve(server)
    assert all(digest is None for release in tools.PLUGINS.values() for digest in release.sha256.values())
    with pytest.raises(LabError) as refused:
        ensure(tmp_path, pulumi, environment(server, tmp_path, fake_bin))
    assert str(refused.value) == (
        "No SHA-256 of the kubernetes plugin v4.34.2 for linux/amd64 is pinned in lab/tools.py: install it yourself "
        "with `./lab.sh pulumi plugin install resource kubernetes 4.34.2 --exact`, or set "
        "LAB_TRUST_PUBLISHED_CHECKSUMS=1 to trust the checksum file published with the release alone.")
    assert server.requests == [] and calls(tmp_path) == []


def test_an_unpinned_plugin_installs_on_the_published_checksum_when_trusted(server, tmp_path, fake_bin, pulumi):
    serve(server)
    env = environment(server, tmp_path, fake_bin, LAB_TRUST_PUBLISHED_CHECKSUMS="1")
    ensure(tmp_path, pulumi, env)
    assert all(bootstrap.plugin_installed(release, env) for release in tools.PLUGINS.values())

    tampered = tmp_path / "again"
    serve(server, published={"command": "d" * 64})
    with pytest.raises(LabError, match="expected SHA-256 d{64}"):
        ensure(tampered, pulumi, {**env, "PULUMI_HOME": str(tampered / "pulumi-home")})


def test_a_plugin_installed_half_way_is_installed_again(server, tmp_path, fake_bin, pulumi, monkeypatch):
    """pulumi leaves `<folder>.partial` beside a plugin whose install did not finish."""
    serve(server)
    pin(monkeypatch, kubernetes=sha(TARBALLS["kubernetes"]), command=sha(TARBALLS["command"]))
    env = environment(server, tmp_path, fake_bin)
    ensure(tmp_path, pulumi, env)
    release = tools.PLUGINS["kubernetes"]
    Path(f"{bootstrap.plugin_folder(release, env)}.partial").write_text("")
    assert not bootstrap.plugin_installed(release, env)
    other = dataclasses.replace(release, version="4.35.0")
    assert not bootstrap.plugin_installed(other, env), "only this very version counts"


def test_pulumi_refusing_the_plugin_is_one_sentence(server, tmp_path, fake_bin, pulumi, monkeypatch):
    serve(server)
    pin(monkeypatch, kubernetes=sha(TARBALLS["kubernetes"]), command=sha(TARBALLS["command"]))
    with pytest.raises(LabError) as refused:
        ensure(tmp_path, pulumi, environment(server, tmp_path, fake_bin, PULUMI_FAIL="disk full"))
    assert str(refused.value) == ("pulumi could not install the kubernetes plugin v4.34.2 from its checked download "
                                  "(error: disk full): fix that, then run the command again.")
    assert list((tmp_path / ".lab" / "tools").iterdir()) == []


def test_the_default_plugin_home_is_the_users_pulumi_folder():
    release = tools.PLUGINS["command"]
    assert bootstrap.plugin_folder(release, {"HOME": "/home/me"}) == Path(
        "/home/me/.pulumi/plugins/resource-command-v1.2.1")
    assert bootstrap.plugin_folder(release, {"HOME": "/home/me", "PULUMI_HOME": "/opt/p"}) == Path(
        "/opt/p/plugins/resource-command-v1.2.1")


def test_the_plugin_versions_are_those_of_the_pinned_packages():
    """The engine asks for the version in each package's pulumi-plugin.json: the one lab/tools.py installs."""
    import importlib.resources
    import json

    locked = (ROOT / "requirements.txt").read_text()
    for name, release in tools.PLUGINS.items():
        assert re.search(rf"^pulumi-{name}=={re.escape(release.version)} ", locked, re.M), name
        plugin = json.loads(importlib.resources.files(f"pulumi_{name}").joinpath("pulumi-plugin.json").read_text())
        assert (plugin["name"], plugin["version"], plugin["resource"]) == (name, release.version, True)
        assert release.asset_path("darwin", "arm64") == (
            f"v{release.version}/pulumi-resource-{name}-v{release.version}-darwin-arm64.tar.gz")


def test_pulumi_never_fetches_a_plugin_itself(tmp_path):
    env = cli.pulumi_env(cli.Paths(tmp_path), {"PATH": "/usr/bin"})
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
