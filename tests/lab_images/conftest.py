"""Fake `docker` and `kind` for lab.images: Python scripts on a PATH of their own that log every call and answer
from a state file, which they also update (a pull adds a local image, a load adds it to the nodes).

The state and the log are Python literals rather than JSON so that the fakes import nothing but os and sys: importing
json (and with it re) tripled the cost of each fake call, and a preload makes dozens of them."""

from __future__ import annotations

import ast
import stat
import sys
from pathlib import Path

import pytest

# One script serves both names; it dispatches on the name it was called by.
FAKE_TOOL = r'''
import os, sys

STATE = os.environ["FAKE_STATE"]
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(STATE) as handle:
    state = eval(handle.read())
stdin = sys.stdin.read() if args[:2] == ["exec", "-i"] else None
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(repr({"tool": name, "args": args, "stdin": stdin}) + "\n")


def save():
    with open(STATE, "w") as handle:
        handle.write(repr(state))


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def opt(flag):
    return args[args.index(flag) + 1] if flag in args else None


def docker():
    if args[:1] == ["version"]:
        if not state.get("arch"):
            fail("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
        print(state["arch"])
    elif args[:1] == ["info"]:
        import json
        print(json.dumps(state.get("info", {"Driver": "overlay2", "DriverStatus": []})))
    elif args[:2] == ["image", "inspect"]:
        ref = args[-1]
        if ref not in state["local"]:
            fail("Error response from daemon: No such image: " + ref)
        if "RepoDigests" in opt("--format"):  # the registry digest of what Docker holds; none if loaded locally
            import json
            digest = state.get("digests", {}).get(ref, "sha256:" + "d" * 64)
            print(json.dumps([] if digest is None else [ref.rsplit(":", 1)[0] + "@" + digest]))
        else:
            print(state["local"][ref][0])
    elif args[:1] == ["pull"]:
        ref, platform = args[-1], opt("--platform")
        if ref not in state.get("remote", []):
            fail(state.get("pull_error", "Error response from daemon: manifest unknown"))
        if ref in state.get("remote_digests", {}):  # the registry's tag now points at this digest
            state.setdefault("digests", {})[ref] = state["remote_digests"][ref]
        state["local"][ref] = [platform]
        save()
        print("Status: Downloaded newer image for " + ref)
    elif args[:1] == ["save"]:
        ref, platform, out = args[-1], opt("--platform"), opt("-o")
        if platform is not None and state.get("save_platform", True) is not True:
            if state["save_platform"] == "old-cli":
                fail("unknown flag: --platform\nSee 'docker save --help'.", 125)
            fail('"--platform" requires API version 1.48, but the Docker daemon API version is 1.47')
        if ref not in state["local"]:
            fail("Error response from daemon: reference does not exist")
        if platform is not None and platform not in state["local"][ref]:
            fail("Error response from daemon: NotFound: content digest sha256:abc: not found")
        with open(out, "w") as handle:
            handle.write(repr({"ref": ref, "platform": platform}))
    elif args[:2] == ["exec", "-i"]:
        node, script = args[2], args[-1]
        target = script.rsplit("cat > ", 1)[1]
        state.setdefault("files", {}).setdefault(node, {})[target] = stdin
        save()
    elif args[:1] == ["exec"]:
        node, command = args[1], args[2:]
        if node not in state["nodes"]:
            fail("Error response from daemon: No such container: " + node)
        if command[0] == "crictl":
            if not state.get("crictl", True):
                fail('OCI runtime exec failed: exec: "crictl": executable file not found in $PATH', 127)
            import json
            images = [{"id": "sha256:" + str(i), "repoTags": [ref], "repoDigests": [], "size": "1"}
                      for i, ref in enumerate(state["nodes"][node])]
            print(json.dumps({"images": images}))
        elif command[0] == "ctr":
            print("\n".join(state["nodes"][node] + ["sha256:0123456789abcdef"]))
        else:
            fail("unexpected exec " + " ".join(command))
    else:
        fail("fake docker: unexpected " + " ".join(args))


def kind():
    if args[:2] == ["get", "nodes"]:
        if opt("--name") != state["cluster"]:
            sys.stderr.write('No kind nodes found for cluster "%s".\n' % opt("--name"))
            return
        print("\n".join(state["nodes"]))
    elif args[:2] == ["load", "image-archive"]:
        if state.get("load_error"):
            fail(state["load_error"])
        with open(args[2]) as handle:
            archive = eval(handle.read())
        # How many archives sit beside this one: the preload should keep only the one being loaded.
        state.setdefault("archives_seen", []).append(len(os.listdir(os.path.dirname(args[2]))))
        targets = opt("--nodes").split(",") if "--nodes" in args else list(state["nodes"])
        ref = archive["ref"]
        # containerd lists what it imported fully qualified.
        full = ref if ref.split("/")[0].count(".") else "docker.io/" + ref
        for node in targets:
            if full not in state["nodes"][node]:
                state["nodes"][node].append(full)
        save()
    else:
        fail("fake kind: unexpected " + " ".join(args))


docker() if name == "docker" else kind()
'''


class Fakes:
    """The fake tools' state (edit, then ``write``) and their call log."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True)
        self.state_path = folder / "state.py"
        self.log_path = folder / "calls.log"
        self.log_path.write_text("")
        for tool in ("docker", "kind"):
            script = self.bin / tool
            script.write_text(f"#!{sys.executable} -S\n{FAKE_TOOL}")
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.state: dict = {
            "arch": "amd64",
            "cluster": "lab",
            "nodes": {"lab-control-plane": [], "lab-worker": []},
            "local": {},
            "remote": [],
        }
        self.write()

    def write(self) -> None:
        self.state_path.write_text(repr(self.state))

    def read(self) -> dict:
        return ast.literal_eval(self.state_path.read_text())

    def calls(self, tool: str | None = None) -> list[list[str]]:
        return [[entry["tool"], *entry["args"]] for entry in self.log() if tool in (None, entry["tool"])]

    def log(self) -> list[dict]:
        return [ast.literal_eval(line) for line in self.log_path.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path, monkeypatch) -> Fakes:
    fake = Fakes(tmp_path / "fakes")
    monkeypatch.chdir(tmp_path)  # the digest record goes to .lab/ under the working directory, as in the project
    # Only the fakes on PATH: a real docker or kind on this machine is never reached.
    monkeypatch.setenv("PATH", str(fake.bin))
    monkeypatch.setenv("FAKE_STATE", str(fake.state_path))
    monkeypatch.setenv("FAKE_LOG", str(fake.log_path))
    return fake
