"""Bootstrap against a loopback HTTP server serving artifacts made here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from lab import bootstrap, tools
from lab.bootstrap import LabError

KIND_BINARY = b"#!/bin/sh\necho kind v0.32.0 go1.26.5 linux/amd64\n"
KIND_ASSET = "/v0.32.0/kind-linux-amd64"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kind_release(pin: str | None) -> tools.Release:
    return dataclasses.replace(tools.KIND, sha256={**tools.KIND.sha256, "linux/amd64": pin})


def serve_kind(server, binary: bytes = KIND_BINARY, published: str | None = None) -> None:
    server.files[KIND_ASSET] = binary
    server.files[KIND_ASSET + ".sha256sum"] = f"{published or sha(binary)}  kind-linux-amd64\n".encode()


def install_kind(server, tools_dir, pin, env=None):
    env = {"LAB_DOWNLOAD_BASE_KIND": server.url, **(env or {})}
    return bootstrap.install(kind_release(pin), tools_dir, "linux", "amd64", env)


def test_right_checksum_installs_an_executable(server, tmp_path):
    serve_kind(server)
    installed = install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    assert installed == tmp_path / "tools" / "kind"
    assert installed.read_bytes() == KIND_BINARY
    assert os.access(installed, os.X_OK)
    assert subprocess.run([installed, "version"], capture_output=True, text=True).stdout.startswith("kind v0.32.0")
    assert sorted(p.name for p in (tmp_path / "tools").iterdir()) == ["kind"]  # no temporary file left


def test_download_that_differs_from_the_pin_is_refused(server, tmp_path):
    serve_kind(server)
    pin = sha(b"what the repository pinned")
    with pytest.raises(LabError) as refused:
        install_kind(server, tmp_path / "tools", pin)
    assert str(refused.value) == (
        f"Refusing to install kind v0.32.0 (linux/amd64): expected SHA-256 {pin} (pinned in lab/tools.py) but the "
        f"download has {sha(KIND_BINARY)}; try again, and report it if it happens again."
    )
    assert list((tmp_path / "tools").iterdir()) == []


def test_download_that_differs_from_the_published_checksum_is_refused(server, tmp_path):
    published = sha(b"what the release's checksum file says")
    serve_kind(server, published=published)
    with pytest.raises(LabError) as refused:
        install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    assert str(refused.value) == (
        f"Refusing to install kind v0.32.0 (linux/amd64): expected SHA-256 {published} (from "
        f"{server.url}{KIND_ASSET}.sha256sum) but the download has {sha(KIND_BINARY)}; try again, and report it "
        "if it happens again."
    )
    assert list((tmp_path / "tools").iterdir()) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    serve_kind(server)
    server.short[KIND_ASSET] = len(KIND_BINARY) + 1000  # the server hangs up 1000 bytes early
    with pytest.raises(LabError) as stopped:
        install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    assert str(stopped.value) == (
        f"The download of {server.url}{KIND_ASSET} stopped after {len(KIND_BINARY)} of {len(KIND_BINARY) + 1000} "
        "bytes: run the command again."
    )
    assert list((tmp_path / "tools").iterdir()) == []


def test_missing_asset_says_how_to_go_on(server, tmp_path):
    server.files[KIND_ASSET + ".sha256sum"] = f"{sha(KIND_BINARY)}  kind-linux-amd64\n".encode()
    with pytest.raises(LabError) as failed:
        install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    assert str(failed.value) == (
        f"Could not download {server.url}{KIND_ASSET} (Not Found): check your network connection or proxy, or "
        "install kind v0.32.0 or newer yourself and put it on your PATH."
    )
    assert list((tmp_path / "tools").iterdir()) == []


def test_unpinned_asset_is_refused_without_downloading(server, tmp_path):
    serve_kind(server)
    with pytest.raises(LabError) as refused:
        install_kind(server, tmp_path / "tools", None)
    assert str(refused.value) == (
        "No SHA-256 of kind v0.32.0 for linux/amd64 is pinned in lab/tools.py: install kind v0.32.0 or newer "
        "yourself and put it on your PATH, or set LAB_TRUST_PUBLISHED_CHECKSUMS=1 to trust the checksum file "
        "published with the release alone."
    )
    assert server.requests == []
    assert not (tmp_path / "tools").exists()


def test_unpinned_asset_installs_on_the_published_checksum_when_trusted(server, tmp_path):
    serve_kind(server)
    installed = install_kind(server, tmp_path / "tools", None, {"LAB_TRUST_PUBLISHED_CHECKSUMS": "1"})
    assert installed.read_bytes() == KIND_BINARY


def test_kubectl_checksum_file_holds_a_bare_digest(server, tmp_path):
    binary = b"#!/bin/sh\necho '{\"clientVersion\": {\"gitVersion\": \"v1.36.4\"}}'\n"
    server.files["/v1.36.4/bin/darwin/arm64/kubectl"] = binary
    server.files["/v1.36.4/bin/darwin/arm64/kubectl.sha256"] = sha(binary).encode()
    release = dataclasses.replace(tools.KUBECTL, sha256={"darwin/arm64": sha(binary)})
    installed = bootstrap.install(
        release, tmp_path / "tools", "darwin", "arm64", {"LAB_DOWNLOAD_BASE_KUBECTL": server.url}
    )
    assert installed.read_bytes() == binary


def pulumi_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("pulumi/pulumi", b"#!/bin/sh\necho v3.259.0\n"),
                           ("pulumi/pulumi-language-python", b"#!/bin/sh\n"),
                           ("evil", b"outside pulumi/"),
                           ("pulumi/../../escape", b"climbs out")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        link = tarfile.TarInfo("pulumi/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buffer.getvalue()


def test_pulumi_archive_installs_only_the_binaries_of_its_pulumi_folder(server, tmp_path):
    archive = pulumi_archive()
    server.files["/pulumi-v3.259.0-linux-x64.tar.gz"] = archive
    server.files["/pulumi-3.259.0-checksums.txt"] = (
        f"{sha(b'other')}  pulumi-v3.259.0-darwin-arm64.tar.gz\n{sha(archive)}  pulumi-v3.259.0-linux-x64.tar.gz\n"
    ).encode()
    release = dataclasses.replace(tools.PULUMI, sha256={"linux/amd64": sha(archive)})
    tools_dir = tmp_path / "tools"
    installed = bootstrap.install(release, tools_dir, "linux", "amd64", {"LAB_DOWNLOAD_BASE_PULUMI": server.url})
    assert installed == tools_dir / "pulumi"
    assert sorted(p.name for p in tools_dir.iterdir()) == ["pulumi", "pulumi-language-python"]
    assert os.access(installed, os.X_OK)
    assert not (tmp_path / "escape").exists()


def test_present_tool_of_the_right_version_is_reused_without_download(server, fake_bin, tmp_path, monkeypatch):
    kind = fake_bin.add("kind", 'echo "kind v0.32.0 go1.26.5 linux/amd64"')
    monkeypatch.setitem(tools.RELEASES, "kind", kind_release(sha(KIND_BINARY)))
    lines = []
    found = bootstrap.ensure_tools(
        tmp_path / "tools", ["kind"], env={"PATH": fake_bin.path, "LAB_DOWNLOAD_BASE_KIND": server.url},
        platform_=("linux", "amd64"), progress=lines.append,
    )
    assert found == {"kind": kind}
    assert lines == [f"kind v0.32.0: using {kind}"]
    assert server.requests == []


def test_too_old_tool_on_path_is_replaced_by_the_pinned_release(server, fake_bin, tmp_path, monkeypatch):
    fake_bin.add("kind", 'echo "kind v0.20.0 go1.20 linux/amd64"')
    serve_kind(server)
    monkeypatch.setitem(tools.RELEASES, "kind", kind_release(sha(KIND_BINARY)))
    found = bootstrap.ensure_tools(
        tmp_path / "tools", ["kind"], env={"PATH": fake_bin.path, "LAB_DOWNLOAD_BASE_KIND": server.url},
        platform_=("linux", "amd64"), progress=lambda line: None,
    )
    assert found == {"kind": tmp_path / "tools" / "kind"}
    # Installed once, the project's copy is found first next time and nothing is downloaded again.
    server.requests.clear()
    again = bootstrap.ensure_tools(
        tmp_path / "tools", ["kind"], env={"PATH": fake_bin.path, "LAB_DOWNLOAD_BASE_KIND": server.url},
        platform_=("linux", "amd64"), progress=lambda line: None,
    )
    assert again == found and server.requests == []


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("kind v0.32.0 go1.26.5 linux/amd64\n", (0, 32, 0)),
        (json.dumps({"clientVersion": {"major": "1", "minor": "32+", "gitVersion": "v1.32.4-dispatcher"}}),
         (1, 32, 4)),
        ("v3.272.0\n", (3, 272, 0)),
        ("garbage", None),
        ("{not json", None),
    ],
)
def test_versions_are_read_from_each_tools_own_output(output, version):
    assert bootstrap.parse_version(output) == version


def test_published_digest_finds_the_assets_line_or_a_lone_digest():
    a, b = "a" * 64, "B" * 64
    assert bootstrap.published_digest(f"{a}  kind-linux-arm64\n{b}  kind-linux-amd64\n", "kind-linux-amd64") == "b" * 64
    assert bootstrap.published_digest(f"{a} *dist/kind-linux-amd64\n", "kind-linux-amd64") == a
    assert bootstrap.published_digest(f"{a}\n", "kubectl") == a
    assert bootstrap.published_digest(f"{a}  other\n", "kubectl") is None


def test_unsupported_machine_is_named():
    with pytest.raises(LabError) as refused:
        bootstrap.host_platform(lambda: "Linux", lambda: "s390x")
    assert str(refused.value) == (
        "The lab runs on linux or darwin with amd64 or arm64, and this machine is linux/s390x: use a supported machine."
    )
    assert bootstrap.host_platform(lambda: "Darwin", lambda: "arm64") == ("darwin", "arm64")


def test_missing_program_is_a_failed_result_not_an_exception(tmp_path):
    result = bootstrap.run_captured(["no-such-program-here"], env={"PATH": str(tmp_path)})
    assert result.returncode == 127


def test_checksum_file_without_the_asset_is_refused(server, tmp_path):
    server.files[KIND_ASSET] = KIND_BINARY
    server.files[KIND_ASSET + ".sha256sum"] = f"{sha(KIND_BINARY)}  kind-darwin-arm64\n".encode()
    with pytest.raises(LabError) as refused:
        install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    assert str(refused.value) == (
        f"The checksum file {server.url}{KIND_ASSET}.sha256sum lists no SHA-256 for kind-linux-amd64: install kind "
        "v0.32.0 or newer yourself and put it on your PATH."
    )
    assert server.requests == [KIND_ASSET + ".sha256sum"]  # the binary itself was never fetched


def test_pulumi_archive_without_pulumi_installs_nothing(server, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("pulumi/pulumi-language-python")
        tar.addfile(member, io.BytesIO(b""))
    archive = buffer.getvalue()
    server.files["/pulumi-v3.259.0-linux-x64.tar.gz"] = archive
    server.files["/pulumi-3.259.0-checksums.txt"] = f"{sha(archive)}  pulumi-v3.259.0-linux-x64.tar.gz\n".encode()
    release = dataclasses.replace(tools.PULUMI, sha256={"linux/amd64": sha(archive)})
    with pytest.raises(LabError) as refused:
        bootstrap.install(release, tmp_path / "tools", "linux", "amd64", {"LAB_DOWNLOAD_BASE_PULUMI": server.url})
    assert str(refused.value) == (
        "The pulumi archive has no pulumi/pulumi: install pulumi yourself and put it on your PATH."
    )
    assert list((tmp_path / "tools").iterdir()) == []


def test_a_plain_http_download_address_is_refused_even_as_an_override(server, tmp_path):
    serve_kind(server)
    plain = server.url.replace("https://", "http://")
    with pytest.raises(LabError) as refused:
        install_kind(server, tmp_path / "tools", sha(KIND_BINARY), {"LAB_DOWNLOAD_BASE_KIND": plain})
    assert str(refused.value) == (f"LAB_DOWNLOAD_BASE_KIND is {plain}, which is not an https:// address: point it at "
                                  "an https:// mirror or unset it.")
    assert server.requests == [] and not (tmp_path / "tools" / "kind").exists()


def test_the_tools_folder_is_private_under_umask_000(server, tmp_path):
    serve_kind(server)
    previous = os.umask(0)
    try:
        install_kind(server, tmp_path / ".lab" / "tools", sha(KIND_BINARY))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / ".lab").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".lab" / "tools").stat().st_mode) == 0o700


def test_a_redirect_to_plain_http_is_refused(server, tmp_path):
    """The https server answers with a redirect to http: a downgrade the lab does not follow."""
    import http.server
    import threading

    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        server.redirects = {KIND_ASSET + ".sha256sum": f"http://127.0.0.1:{plain.server_address[1]}/x"}
        serve_kind(server)
        with pytest.raises(LabError, match="refused a redirect to http://127.0.0.1:"):
            install_kind(server, tmp_path / "tools", sha(KIND_BINARY))
    finally:
        plain.shutdown()
        plain.server_close()


def test_an_unpinned_tool_is_refused_without_saying_it_is_installing(server, fake_bin, tmp_path, monkeypatch):
    monkeypatch.setitem(tools.RELEASES, "kind", kind_release(None))
    lines = []
    with pytest.raises(LabError, match="^No SHA-256 of kind v0.32.0 for linux/amd64 is pinned"):
        bootstrap.ensure_tools(tmp_path / "tools", ["kind"], env={"PATH": fake_bin.path,
                                                                   "LAB_DOWNLOAD_BASE_KIND": server.url},
                               platform_=("linux", "amd64"), progress=lines.append)
    assert lines == [] and server.requests == []
