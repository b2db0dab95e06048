"""The real Pulumi engine around the lab's program, with only Docker, kind, kubectl and the cluster faked.

`tools/engine/build.sh` builds the pulumi CLI and the plugins (cached). Each `EngineLab` is a throwaway copy of the
project (the checkout's stacks/ are never written) with its own file backend, PULUMI_HOME, passphrase and fake
tools; the engine finds its plugins only in that PULUMI_HOME and next to the CLI, and every HTTP(S) request it or a
plugin would make goes to a proxy address that refuses connections, so nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys

import pytest

from lab import local_secrets
from tests.harness import warm_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "tools", "engine", "build.sh")
FAKE_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_tool.py")
COPIED = ["Pulumi.yaml", "__main__.py", "requirements.txt", "components", "lab", "verify", "stacks"]
PULUMI_TIMEOUT_S = 600


BUILD_ENV = "LAB_BUILD_ENGINE"  # 1: build the engine from the tests when it is not built yet


def build_engine() -> str:
    """The folder of the built engine; skips without Go, except in CI, where the tests must run.

    A first build takes minutes (13 on a 2-core machine from empty Go caches), too long to start unasked from a
    newcomer's `./lab.sh test`: outside CI the tests build it only when it was built before (then it takes a second
    or rebuilds what changed) or when asked with LAB_BUILD_ENGINE=1; `.ci/run` builds it first.
    """
    in_ci = os.environ.get("CI", "").lower() == "true"
    if shutil.which("go") is None:
        reason = "the engine tests need Go on PATH to build the Pulumi engine (tools/engine/build.sh)"
        if in_ci:
            pytest.fail(reason)
        pytest.skip(reason)
    built = os.path.exists(os.path.join(os.environ.get("LAB_ENGINE_DIR") or os.path.join(ROOT, ".lab", "engine"),
                                        "stamp"))
    if not (in_ci or built or os.environ.get(BUILD_ENV) == "1"):
        pytest.skip("the Pulumi engine is not built yet: run tools/engine/build.sh once (minutes; Go needed), or "
                    f"{BUILD_ENV}=1 ./lab.sh test -m engine")
    result = subprocess.run([BUILD_SCRIPT], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(result.stderr.strip() or f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return result.stdout.strip().splitlines()[-1]


def refused_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EngineLab:
    """A copy of the project, run with the real pulumi CLI on a local file backend."""

    def __init__(self, engine_dir: str, work: str):
        self.project = os.path.join(work, "project")
        self.fakes = os.path.join(work, "fakes")
        self.home = os.path.join(work, "pulumi-home")
        self.state = os.path.join(work, "state")
        for folder in (self.fakes, self.home, self.state):
            os.makedirs(folder)
        os.makedirs(self.project)
        for name in COPIED:
            source = os.path.join(ROOT, name)
            target = os.path.join(self.project, name)
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, target)
        # Pulumi.yaml names the virtualenv `venv`: the project's own, built by ./lab.sh from requirements.txt.
        os.symlink(os.path.join(ROOT, "venv"), os.path.join(self.project, "venv"))

        # Plugins in this PULUMI_HOME's plugin folder, under the versions the engine will ask for.
        plugins = os.path.join(self.home, "plugins")
        os.makedirs(plugins)
        for entry in os.listdir(os.path.join(engine_dir, "plugins")):
            shutil.copytree(os.path.join(engine_dir, "plugins", entry), os.path.join(plugins, entry), symlinks=True)

        bin_dir = os.path.join(self.fakes, "bin")
        os.makedirs(bin_dir)
        for tool in ("docker", "kind", "kubectl"):
            path = os.path.join(bin_dir, tool)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TOOL}" {tool} "$@"\n')
            os.chmod(path, 0o755)

        # A warm chart and bundle cache, as a user's after the first fetch: the engine runs with no network.
        self.cache = warm_cache(os.path.join(work, "cache"))
        self.api_port = refused_port()
        self.passphrase = secrets.token_urlsafe(24)
        dead_proxy = f"http://127.0.0.1:{refused_port()}"
        self.env = {
            **os.environ,
            # Fakes first, then the engine: a real kind or pulumi on the user's PATH is never reached.
            "PATH": os.pathsep.join([bin_dir, os.path.join(engine_dir, "bin"), os.environ.get("PATH", "")]),
            "PULUMI_HOME": self.home,
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # Plugins come from PULUMI_HOME (and the language host from beside the CLI), never from PATH or a download.
            "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "HTTPS_PROXY": dead_proxy, "HTTP_PROXY": dead_proxy, "https_proxy": dead_proxy, "http_proxy": dead_proxy,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            "LAB_FAKE_TOOLS_DIR": self.fakes,
            "LAB_CACHE_DIR": self.cache,
            local_secrets.SECRETS_ENV: os.path.join(work, "secrets"),  # Kiali's signing key, where the test finds it
            "LAB_FAKE_API_PORT": str(self.api_port),
            "PULUMI_BACKEND_URL": "",
            "KUBECONFIG": os.path.join(work, "no-kubeconfig"),  # nothing may fall back to the user's cluster
        }
        self.env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        self.env.pop("PULUMI_ACCESS_TOKEN", None)
        self.pulumi("login", f"file://{self.state}")

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["pulumi", *args, "--non-interactive"] if args[0] != "login" else ["pulumi", *args],
            cwd=self.project, env=self.env, capture_output=True, text=True, timeout=PULUMI_TIMEOUT_S,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def new_stack(self, stack: str) -> None:
        self.pulumi("stack", "init", stack)

    def calls(self) -> list[dict]:
        """What the fake docker, kind and kubectl were asked, in order."""
        try:
            with open(os.path.join(self.fakes, "calls.jsonl"), encoding="utf-8") as log:
                return [json.loads(line) for line in log]
        except FileNotFoundError:
            return []

    def export(self, stack: str) -> str:
        return self.pulumi("stack", "export", "--stack", stack).stdout

    def resources(self, stack: str) -> list[dict]:
        return json.loads(self.export(stack)).get("deployment", {}).get("resources") or []


def preview_steps(result: subprocess.CompletedProcess) -> list[dict]:
    """The steps of `pulumi preview --json`."""
    return json.loads(result.stdout).get("steps") or []
