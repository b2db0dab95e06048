"""lab.images registry mirror: the hosts.toml files, the kind containerd patch, URL checks, writing into nodes."""

from __future__ import annotations

import pytest

from lab import images

FORM = "http(s)://host[:port][/path], e.g. http://kind-registry:5000 or https://mirror.example.com"


def test_mirror_files_for_docker_hub_only_by_default():
    assert images.containerd_mirror_files("http://kind-registry:5000/") == {
        "/etc/containerd/certs.d/docker.io/hosts.toml": (
            "# Written by istio-ambient-lab: pull docker.io images through the mirror, else from docker.io.\n"
            'server = "https://registry-1.docker.io"\n'
            "\n"
            '[host."http://kind-registry:5000"]\n'
            '  capabilities = ["pull"]\n'
        )
    }


def test_mirror_files_for_more_registries_keep_each_upstream():
    files = images.containerd_mirror_files("https://mirror.example.com/cache", ["docker.io", "quay.io", "ghcr.io"])
    assert sorted(files) == [
        "/etc/containerd/certs.d/docker.io/hosts.toml",
        "/etc/containerd/certs.d/ghcr.io/hosts.toml",
        "/etc/containerd/certs.d/quay.io/hosts.toml",
    ]
    assert files["/etc/containerd/certs.d/quay.io/hosts.toml"] == (
        "# Written by istio-ambient-lab: pull quay.io images through the mirror, else from quay.io.\n"
        'server = "https://quay.io"\n'
        "\n"
        '[host."https://mirror.example.com/cache"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )


def test_a_plain_http_mirror_may_pull_but_never_resolve_a_tag():
    """Over plain http anyone on the path could answer a tag with another image's digest: tags resolve at the https
    upstream, and the mirror serves only content by digest, which containerd checks (containerd docs/hosts.md)."""
    for url, capabilities in (("http://mirror.example.com:5000", '["pull"]'),
                              ("HTTP://mirror.example.com:5000", '["pull"]'),
                              ("https://mirror.example.com", '["pull", "resolve"]')):
        for content in images.containerd_mirror_files(url, ["docker.io", "quay.io"]).values():
            assert f"  capabilities = {capabilities}\n" in content, url


@pytest.mark.parametrize("registry", ["../etc", "..", "docker.io/x", "a b"])
def test_bad_registry_name_is_refused(registry):
    with pytest.raises(images.ImagesError) as caught:
        images.containerd_mirror_files("http://mirror:5000", [registry])
    assert str(caught.value) == f"registry {registry!r} is not a host[:port] name such as docker.io or ghcr.io."


def test_kind_containerd_patch():
    assert images.kind_containerd_patch() == (
        '[plugins."io.containerd.grpc.v1.cri".registry]\n'
        '  config_path = "/etc/containerd/certs.d"\n'
    )


@pytest.mark.parametrize(
    "url",
    ["ftp://mirror:5000", "mirror:5000", "http://", "http://mirror:99999", "http://mirror:0", "http://mir ror",
     "http://mirror/a?b=c", "http://mirror/#x", "https://mirror/pa\"th", "http://-bad-.example"],
)
def test_malformed_mirror_url_is_one_sentence(url):
    with pytest.raises(images.ImagesError) as caught:
        images.validate_mirror_url(url)
    assert str(caught.value) == f"registry mirror {url!r} is not a URL of the form {FORM}."


def test_mirror_url_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(images.ImagesError) as caught:
        images.validate_mirror_url("https://alice:s3cret@mirror.example.com")
    message = str(caught.value)
    assert "s3cret" not in message and "alice" not in message
    assert message == (
        "the registry mirror URL must not carry a user name or password; give the mirror's address only "
        f"({FORM}) and let it serve anonymous pulls."
    )


@pytest.mark.parametrize("url", ["http://localhost:5000", "http://127.0.0.1:5001", "http://[::1]:5000"])
def test_loopback_mirror_is_refused(url):
    with pytest.raises(images.ImagesError) as caught:
        images.validate_mirror_url(url)
    assert str(caught.value) == (
        f"registry mirror {url!r} points at loopback, which inside a kind node is the node itself; use an address "
        f"the nodes can reach, such as the registry container's name on the kind network "
        f"(http://kind-registry:5000) or the host's LAN address."
    )


@pytest.mark.parametrize(
    "url, normalized",
    [
        ("http://kind-registry:5000", "http://kind-registry:5000"),
        ("https://mirror.example.com/", "https://mirror.example.com"),
        ("http://192.168.1.20:5000/v2", "http://192.168.1.20:5000/v2"),
        ("http://[fd00::1]:5000", "http://[fd00::1]:5000"),
    ],
)
def test_good_mirror_urls(url, normalized):
    assert images.validate_mirror_url(url) == normalized


def test_apply_mirror_writes_every_file_into_every_node_through_stdin(fakes):
    fakes.state["nodes"] = {"lab-control-plane": [], "lab-worker": [], "lab-worker2": []}
    fakes.write()

    nodes = images.apply_mirror("lab", "http://kind-registry:5000", ["docker.io", "ghcr.io"])

    assert nodes == ["lab-control-plane", "lab-worker", "lab-worker2"]
    expected = images.containerd_mirror_files("http://kind-registry:5000", ["docker.io", "ghcr.io"])
    assert fakes.read()["files"] == {node: expected for node in nodes}
    writes = [entry for entry in fakes.log() if entry["args"][:2] == ["exec", "-i"]]
    assert len(writes) == 6
    assert writes[0]["args"] == [
        "exec", "-i", "lab-control-plane", "sh", "-c",
        "mkdir -p /etc/containerd/certs.d/docker.io && cat > /etc/containerd/certs.d/docker.io/hosts.toml",
    ]
    assert all("kind-registry" not in " ".join(entry["args"]) for entry in writes)  # content only on stdin


def test_apply_mirror_checks_the_url_before_touching_the_nodes(fakes):
    with pytest.raises(images.ImagesError):
        images.apply_mirror("lab", "http://localhost:5000")
    assert fakes.calls() == []


def test_mirror_config_cli_prints_the_files_and_patch(capsys):
    assert images.main(["mirror-config", "--mirror", "http://kind-registry:5000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# /etc/containerd/certs.d/docker.io/hosts.toml\n# Written by istio-ambient-lab")
    assert '[host."http://kind-registry:5000"]' in out
    assert out.endswith(
        "# kind Cluster config, containerdConfigPatches entry\n"
        '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n\n'
    )


def test_mirror_config_cli_bad_url_exits_1(capsys):
    assert images.main(["mirror-config", "--mirror", "ftp://mirror"]) == 1
    assert capsys.readouterr().err == f"error: registry mirror 'ftp://mirror' is not a URL of the form {FORM}.\n"


def test_mirror_apply_cli(fakes, capsys):
    assert images.main(["mirror-apply", "--cluster", "lab", "--mirror", "http://kind-registry:5000"]) == 0
    assert capsys.readouterr().out == (
        "registry mirror set for docker.io on 2 node(s): lab-control-plane, lab-worker\n")
