"""lab.images preload against fake docker and kind: what is skipped, saved, pulled and loaded, and how it fails."""

from __future__ import annotations

import json
import os
import stat

import pytest

from lab import catalog, images

PILOT = catalog.Image("docker.io/istio/pilot", "1.31.1")
CURL = catalog.CURL_IMAGE
NODES = ["lab-control-plane", "lab-worker"]


def run_preload(fakes, image_list, platform="linux/amd64", temp_root=None):
    lines: list[str] = []
    report = images.preload("lab", platform, image_list, say=lines.append, temp_root=temp_root)
    return report, lines


def saves(fakes):
    return [call for call in fakes.calls("docker") if call[1] == "save"]


def loads(fakes):
    return [call for call in fakes.calls("kind") if call[1:3] == ["load", "image-archive"]]


def pulls(fakes):
    return [call for call in fakes.calls("docker") if call[1] == "pull"]


def test_image_already_in_every_node_is_skipped(fakes):
    fakes.state["nodes"] = {node: [PILOT.ref] for node in NODES}
    fakes.write()

    report, lines = run_preload(fakes, [PILOT])

    assert lines == [f"[1/1] {PILOT.ref}: present"]
    assert report.present == [PILOT.ref]
    assert saves(fakes) == [] and loads(fakes) == [] and pulls(fakes) == []
    assert not [call for call in fakes.calls("docker") if call[1:3] == ["image", "inspect"]]


def test_present_locally_is_saved_for_the_platform_and_loaded_as_an_archive(fakes, tmp_path):
    fakes.state["local"] = {PILOT.ref: ["linux/arm64"]}
    fakes.write()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    report, lines = run_preload(fakes, [PILOT], platform="linux/arm64", temp_root=str(scratch))

    assert lines == [f"[1/1] {PILOT.ref}: loaded"]
    assert report.loaded == [PILOT.ref]
    [save] = saves(fakes)
    assert save[:4] == ["docker", "save", "--platform", "linux/arm64"]
    assert save[4] == "-o" and save[-1] == PILOT.ref
    tar = save[5]
    [load] = loads(fakes)
    assert load == ["kind", "load", "image-archive", tar, "--name", "lab"]  # all nodes lacked it: no --nodes
    assert pulls(fakes) == []
    assert not [call for call in fakes.calls("kind") if "docker-image" in call]
    assert not os.path.exists(tar) and list(scratch.iterdir()) == []
    assert all(PILOT.ref in refs for refs in fakes.read()["nodes"].values())


def test_only_the_nodes_lacking_an_image_get_it(fakes):
    fakes.state["nodes"] = {"lab-control-plane": [CURL.ref], "lab-worker": []}
    fakes.state["local"] = {CURL.ref: ["linux/amd64"]}
    fakes.write()

    run_preload(fakes, [CURL])

    [load] = loads(fakes)
    assert load[-2:] == ["--nodes", "lab-worker"]


def test_missing_image_is_pulled_for_the_platform_then_loaded(fakes):
    fakes.state["remote"] = [PILOT.ref, CURL.ref]
    fakes.state["local"] = {CURL.ref: ["linux/amd64"]}
    fakes.write()

    report, lines = run_preload(fakes, [PILOT, CURL])

    assert lines == [f"[1/2] {PILOT.ref}: pulled and loaded", f"[2/2] {CURL.ref}: loaded"]
    assert report.pulled == [PILOT.ref] and report.loaded == [CURL.ref]
    assert pulls(fakes) == [["docker", "pull", "--platform", "linux/amd64", PILOT.ref]]
    docker_calls = [call[1] for call in fakes.calls("docker") if call[1] in ("pull", "save")]
    assert docker_calls == ["pull", "save", "save"]  # pulled before it was saved
    assert [call[3] for call in saves(fakes)] == ["linux/amd64", "linux/amd64"]
    assert fakes.read()["archives_seen"] == [1, 1]  # each archive removed once loaded


def test_local_image_of_another_platform_is_pulled_for_the_node_platform(fakes):
    fakes.state["local"] = {PILOT.ref: ["linux/arm64"]}
    fakes.state["remote"] = [PILOT.ref]
    fakes.write()

    _, lines = run_preload(fakes, [PILOT], platform="linux/amd64")

    assert lines == [f"[1/1] {PILOT.ref}: pulled and loaded"]
    assert pulls(fakes) == [["docker", "pull", "--platform", "linux/amd64", PILOT.ref]]


@pytest.mark.parametrize("old", ["old-cli", "old-daemon"])
def test_docker_without_save_platform_falls_back_to_a_plain_save(fakes, old):
    fakes.state["save_platform"] = old
    fakes.state["local"] = {PILOT.ref: ["linux/amd64"], CURL.ref: ["linux/amd64"]}
    fakes.write()

    _, lines = run_preload(fakes, [PILOT, CURL])

    assert lines[0].startswith("note: this Docker is older than Engine 28 (API 1.48) and cannot save one platform;")
    assert lines[1:] == [f"[1/2] {PILOT.ref}: loaded", f"[2/2] {CURL.ref}: loaded"]
    save_calls = saves(fakes)
    # One failed attempt with --platform, then plain saves only: the fallback sticks for the rest of the run.
    assert "--platform" in save_calls[0]
    assert [call for call in save_calls[1:] if "--platform" in call] == []
    assert save_calls[1][:3] == ["docker", "save", "-o"] and len(save_calls) == 3
    assert pulls(fakes) == []


def test_old_docker_with_the_containerd_store_is_warned_and_explained(fakes):
    fakes.state["save_platform"] = "old-cli"
    fakes.state["info"] = {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    fakes.state["local"] = {PILOT.ref: ["linux/amd64"]}
    fakes.state["load_error"] = (
        "ERROR: failed to load image: command \"docker exec --privileged -i lab-control-plane ctr "
        "--namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -\" failed with error: "
        "exit status 1\nCommand Output: ctr: content digest sha256:b1ad: not found"
    )
    fakes.write()
    lines: list[str] = []

    with pytest.raises(images.ImagesError) as caught:
        images.preload("lab", "linux/amd64", [PILOT], say=lines.append)

    assert "uses the containerd image store, so multi-platform images may fail to load" in lines[0]
    assert str(caught.value) == (
        f"kind could not import {PILOT.ref} (Command Output: ctr: content digest sha256:b1ad: not found) because "
        f"this Docker keeps only some platforms of it and is too old for `docker save --platform`; upgrade Docker "
        f"to Engine 28 or newer, or turn off its containerd image store, then run the preload again."
    )


def test_pull_failure_stops_with_one_sentence_exit_1_and_no_archive_left(fakes, tmp_path, capsys, monkeypatch):
    fakes.state["remote"] = []  # nothing can be pulled
    fakes.state["pull_error"] = "Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: " \
                                "lookup registry-1.docker.io: no such host"
    fakes.state["local"] = {ref: ["linux/amd64"] for ref in ("docker.io/istio/pilot:1.31.1-distroless",)}
    fakes.write()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(images.tempfile, "tempdir", str(scratch))

    code = images.main(["preload", "--cluster", "lab", "--platform", "linux/amd64", "--no-observability"])

    out, err = capsys.readouterr()
    second = "docker.io/istio/install-cni:1.31.1-distroless"
    assert code == 1
    assert err == (
        f"error: could not pull {second} for linux/amd64 (Error response from daemon: Get "
        f"\"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host); check the "
        f"network and your access to docker.io (`docker login docker.io` if it asks for a login), then run the "
        f"preload again.\n"
    )
    assert out.splitlines()[1] == "[1/11] docker.io/istio/pilot:1.31.1-distroless: loaded"
    assert "[2/11]" not in out  # stopped at the failing image
    assert len(pulls(fakes)) == 1  # nothing after it was tried
    assert list(scratch.iterdir()) == []
    [first_save] = saves(fakes)
    assert not os.path.exists(first_save[5])


def test_load_failure_removes_the_archive(fakes, tmp_path):
    fakes.state["local"] = {PILOT.ref: ["linux/amd64"]}
    fakes.state["load_error"] = "ERROR: failed to load image: no space left on device"
    fakes.write()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    with pytest.raises(images.ImagesError, match=r"^kind could not load docker.io/istio/pilot:1.31.1 into cluster "
                                                 r"'lab' \(ERROR: failed to load image: no space left on device\); "):
        run_preload(fakes, [PILOT], temp_root=str(scratch))

    assert list(scratch.iterdir()) == []


def test_cli_preloads_the_whole_catalog_with_progress(fakes, capsys):
    all_refs = [image.ref for image in catalog.all_images()]
    fakes.state["local"] = {ref: ["linux/arm64"] for ref in all_refs[:3]}
    fakes.state["remote"] = all_refs
    fakes.state["nodes"]["lab-control-plane"] = [all_refs[3]]
    fakes.state["nodes"]["lab-worker"] = [all_refs[3]]
    fakes.state["arch"] = "arm64"
    fakes.write()

    assert images.main(["preload", "--cluster", "lab"]) == 0

    lines = capsys.readouterr().out.splitlines()
    total = len(all_refs)
    assert lines[0] == f"preloading {total} images for linux/arm64 into kind cluster 'lab'"
    assert lines[1] == f"[1/{total}] {all_refs[0]}: loaded"
    assert lines[4] == f"[4/{total}] {all_refs[3]}: present"
    assert lines[-2] == f"[{total}/{total}] {all_refs[-1]}: pulled and loaded"
    assert lines[-1] == f"done: 1 present, 3 loaded, {total - 4} pulled and loaded."
    for refs in fakes.read()["nodes"].values():
        assert sorted(refs) == sorted(all_refs)
    # A second run finds everything in the nodes and touches nothing.
    before = len(fakes.calls())
    assert images.main(["preload", "--cluster", "lab"]) == 0
    second = fakes.calls()[before:]
    assert {call[1] for call in second} <= {"version", "get", "exec"}
    assert capsys.readouterr().out.splitlines()[-1] == f"done: {total} present, 0 loaded, 0 pulled and loaded."


def test_istio_version_and_observability_choose_the_images(fakes, capsys):
    fakes.state["nodes"] = {node: [image.ref for image in catalog.all_images("1.30.5", False)] for node in NODES}
    fakes.write()

    assert images.main(["preload", "--cluster", "lab", "--platform", "linux/amd64", "--istio-version", "1.30.5",
                        "--no-observability"]) == 0

    out = capsys.readouterr().out
    assert "[1/11] docker.io/istio/pilot:1.30.5-distroless: present" in out
    assert "kiali" not in out and "prometheus" not in out


def test_nodes_listed_with_ctr_when_crictl_is_missing(fakes):
    fakes.state["crictl"] = False
    fakes.state["nodes"] = {node: [PILOT.ref] for node in NODES}
    fakes.write()

    _, lines = run_preload(fakes, [PILOT])

    assert lines == [f"[1/1] {PILOT.ref}: present"]
    assert ["docker", "exec", "lab-worker", "ctr", "-n", "k8s.io", "images", "ls", "-q"] in fakes.calls()


def test_cluster_without_nodes_is_one_sentence(fakes):
    with pytest.raises(images.ImagesError) as caught:
        images.preload("other", "linux/amd64", [PILOT], say=lambda _line: None)
    assert str(caught.value) == "kind cluster 'other' has no nodes; create it first (pulumi up), then run this again."


def test_missing_docker_is_one_sentence(fakes, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(images.ImagesError) as caught:
        images.preload("lab", "linux/amd64", [PILOT], say=lambda _line: None)
    assert str(caught.value) == "`kind` was not found on PATH; install it (or run ./lab.sh, which provides it)."


# --- Platform ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, expected",
    [("amd64", "linux/amd64"), ("x86_64", "linux/amd64"), ("arm64", "linux/arm64"), ("aarch64", "linux/arm64"),
     ("AARCH64\n", "linux/arm64"), ("s390x", None), ("", None)],
)
def test_platform_for_arch(arch, expected):
    assert images.platform_for_arch(arch) == expected


def test_platform_comes_from_the_docker_daemon_first(fakes):
    fakes.state["arch"] = "arm64"
    fakes.write()
    assert images.detect_platform(machine=lambda: "x86_64") == "linux/arm64"
    assert ["docker", "version", "-f", "{{.Server.Arch}}"] in fakes.calls()


def test_platform_falls_back_to_this_machine_without_a_daemon(fakes):
    fakes.state["arch"] = None
    fakes.write()
    assert images.detect_platform(machine=lambda: "aarch64") == "linux/arm64"


def test_unknown_platform_says_to_pass_one(fakes):
    fakes.state["arch"] = "s390x"
    fakes.write()
    with pytest.raises(images.ImagesError) as caught:
        images.detect_platform(machine=lambda: "s390x")
    assert str(caught.value) == (
        "cannot tell the kind nodes' platform (Docker says 's390x', this machine 's390x'); pass --platform "
        "linux/amd64 or --platform linux/arm64."
    )


# --- Parsing -------------------------------------------------------------------------------------------------------


def test_containerd_image_store_detection():
    assert images.uses_containerd_image_store(
        {"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]})
    assert images.uses_containerd_image_store({"Driver": "overlayfs", "DriverStatus": None})
    assert not images.uses_containerd_image_store(
        {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]})
    assert not images.uses_containerd_image_store({})


def test_crictl_output_is_parsed_robustly():
    output = (
        'time="2026-10-01" level=warning msg="image connect using default endpoints"\n'
        '{"images": [{"id": "sha256:1", "repoTags": ["docker.io/istio/pilot:1.31.1"], '
        '"repoDigests": ["docker.io/istio/pilot@sha256:aa"]}, {"id": "sha256:2", "repoTags": null}, "junk", '
        '{"repoTags": ["registry.k8s.io/pause:3.10", 7]}]}'
    )
    assert images.parse_crictl_images(output) == {
        "docker.io/istio/pilot:1.31.1", "docker.io/istio/pilot@sha256:aa", "registry.k8s.io/pause:3.10"}
    assert images.parse_crictl_images("no json here") is None
    assert images.parse_crictl_images("{not json") is None
    assert images.parse_crictl_images('{"images": []}') == set()


def test_ctr_output_is_parsed_robustly():
    output = "docker.io/istio/pilot:1.31.1\nsha256:0123\n\n  quay.io/kiali/kiali:v2.31.0  \nbusybox:1\n"
    assert images.parse_ctr_images(output) == {
        "docker.io/istio/pilot:1.31.1", "quay.io/kiali/kiali:v2.31.0", "docker.io/library/busybox:1"}


@pytest.mark.parametrize(
    "ref, normalized",
    [("busybox:1", "docker.io/library/busybox:1"), ("istio/pilot:1", "docker.io/istio/pilot:1"),
     ("docker.io/istio/pilot:1", "docker.io/istio/pilot:1"), ("index.docker.io/library/b:1", "docker.io/library/b:1"),
     ("ghcr.io/a/b:1", "ghcr.io/a/b:1"), ("localhost:5000/a:1", "localhost:5000/a:1")],
)
def test_normalize_ref(ref, normalized):
    assert images.normalize_ref(ref) == normalized


def test_pull_needs_no_cluster_and_fetches_only_what_docker_lacks(fakes, capsys):
    fakes.state["local"] = {CURL.ref: ["linux/amd64"], PILOT.ref: ["linux/arm64"]}
    fakes.state["remote"] = [PILOT.ref, CURL.ref]
    fakes.write()

    assert images.pull("linux/amd64", [PILOT, CURL], say=lambda line: None) == [PILOT.ref]

    assert pulls(fakes) == [["docker", "pull", "--platform", "linux/amd64", PILOT.ref]]
    assert fakes.calls("kind") == [], "no cluster is asked for anything"
    assert saves(fakes) == []


def test_cli_pull_then_preload_only_loads(fakes, capsys):
    all_refs = [image.ref for image in catalog.all_images()]
    fakes.state["remote"] = all_refs
    fakes.write()

    assert images.main(["pull", "--platform", "linux/amd64"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"done: 0 in Docker already, {len(all_refs)} pulled."
    assert fakes.calls("kind") == []
    pulled = len(pulls(fakes))
    assert images.main(["preload", "--cluster", "lab", "--platform", "linux/amd64"]) == 0

    assert len(pulls(fakes)) == pulled, "the preload found every image in Docker"
    assert capsys.readouterr().out.splitlines()[-1] == f"done: 0 present, {len(all_refs)} loaded, 0 pulled and loaded."


# --- Digests: trust on first use -----------------------------------------------------------------------------------

ZTUNNEL = catalog.Image("docker.io/istio/ztunnel", "1.31.1")
CNI = catalog.Image("docker.io/istio/install-cni", "1.31.1-distroless")
FIRST, OTHER = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_the_first_pull_records_each_digest_in_a_private_file(fakes, tmp_path):
    fakes.state["remote"] = [ZTUNNEL.ref, CNI.ref]
    fakes.state["remote_digests"] = {ZTUNNEL.ref: FIRST, CNI.ref: OTHER}
    fakes.write()
    images.pull("linux/amd64", [ZTUNNEL, CNI], say=lambda line: None)
    record = tmp_path / ".lab" / "image-digests.json"
    assert json.loads(record.read_text()) == {ZTUNNEL.ref: FIRST, CNI.ref: OTHER}
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


@pytest.mark.parametrize("step", ["pull", "preload"])
def test_a_tag_republished_with_another_digest_is_refused_naming_both(fakes, tmp_path, step):
    fakes.state["remote"] = [ZTUNNEL.ref]
    fakes.state["remote_digests"] = {ZTUNNEL.ref: FIRST}
    fakes.write()
    images.pull("linux/amd64", [ZTUNNEL], say=lambda line: None)
    state = fakes.read()
    state["local"] = {}  # pruned; the registry's tag now points elsewhere
    state["remote_digests"] = {ZTUNNEL.ref: OTHER}
    fakes.state = state
    fakes.write()
    with pytest.raises(images.ImagesError) as refused:
        if step == "pull":
            images.pull("linux/amd64", [ZTUNNEL], say=lambda line: None)
        else:
            run_preload(fakes, [ZTUNNEL])
    assert str(refused.value) == (
        f"docker.io/istio/ztunnel:1.31.1 now has digest {OTHER} but this lab recorded {FIRST} when it first pulled "
        "it, so it was not loaded; if the tag was re-published on purpose, accept the new digest with "
        "`venv/bin/python -m lab.images accept-digest docker.io/istio/ztunnel:1.31.1`, then run `./lab.sh up` again."
    )
    assert loads(fakes) == [], "the changed image never reaches a node"
    assert images.main(["accept-digest", ZTUNNEL.ref]) == 0
    assert json.loads((tmp_path / ".lab" / "image-digests.json").read_text()) == {ZTUNNEL.ref: OTHER}
    images.pull("linux/amd64", [ZTUNNEL], say=lambda line: None)  # accepted: held to the new digest from now on


def test_an_image_already_in_docker_is_held_to_the_record_too(fakes):
    """A `docker pull` outside the lab can change what the tag holds locally: the preload checks before loading."""
    fakes.state["local"] = {ZTUNNEL.ref: ["linux/amd64"]}
    fakes.state["digests"] = {ZTUNNEL.ref: FIRST}
    fakes.write()
    run_preload(fakes, [ZTUNNEL])
    fakes.state = fakes.read()
    fakes.state["digests"] = {ZTUNNEL.ref: OTHER}
    fakes.state["nodes"] = {node: [] for node in NODES}
    fakes.write()
    with pytest.raises(images.ImagesError, match="now has digest"):
        run_preload(fakes, [ZTUNNEL])


def test_digests_are_read_for_the_images_own_repository():
    assert images._repository("istio/ztunnel:1.31.1") == "docker.io/istio/ztunnel"
    assert images._repository("localhost:5000/ztunnel@sha256:" + "1" * 64) == "localhost:5000/ztunnel"
    assert images._repository("localhost:5000/ztunnel") == "localhost:5000/ztunnel"
