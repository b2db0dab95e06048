"""tools/engine/build.sh's stamp covers the binaries it built (issue #20), with a fake `go` so that no build runs.

A plugin swapped into the engine folder by hand (the real pulumi-command, to try it) must never be taken for the
stamped build, nor be overwritten or deleted by a rebuild; a binary that is simply missing is built again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

FAKE_GO = """#!/usr/bin/env bash
# Answers the calls build.sh makes; `go build -o X` writes a small executable X, and every call is logged.
echo "$PWD $*" >>"$FAKE_GO_LOG"
case "$1" in
  version) echo "go version go1.26.8 linux/amd64" ;;
  build)
    [[ -n "${FAKE_GO_FAIL:-}" && "$PWD $*" == *"$FAKE_GO_FAIL"* ]] && { echo "fake go: build failed" >&2; exit 1; }
    while [[ $# -gt 0 ]]; do [[ "$1" == "-o" ]] && out="$2"; shift; done
    mkdir -p "$(dirname "$out")"
    printf '#!/bin/sh\\necho built %s\\n' "$(basename "$out")" >"$out"
    chmod +x "$out" ;;
  list) echo "$FAKE_GO_MODULES" ;;
  mod|run) ;;
  *) echo "fake go: unexpected $*" >&2; exit 2 ;;
esac
"""


class Checkout:
    """A copy of build.sh, tools/engine and requirements.in, with a fake `go` first on PATH."""

    def __init__(self, tmp: Path):
        self.root = tmp / "checkout"
        shutil.copytree(os.path.join(ROOT, "tools", "engine"), self.root / "tools" / "engine")
        shutil.copy2(os.path.join(ROOT, "requirements.in"), self.root / "requirements.in")
        self.out = self.root / ".lab" / "engine"
        self.log = tmp / "go-calls.log"
        bin_dir = tmp / "fake-bin"
        bin_dir.mkdir()
        (bin_dir / "go").write_text(FAKE_GO)
        (bin_dir / "go").chmod(0o755)
        # One folder serves as every module the script unpacks: the sdk's exec shim and the provider's sources.
        modules = tmp / "modules"
        (modules / "python" / "cmd").mkdir(parents=True)
        (modules / "python" / "cmd" / "pulumi-language-python-exec").write_text("#!/bin/sh\n")
        provider = modules / "cmd" / "pulumi-resource-kubernetes"
        provider.mkdir(parents=True)
        for name in ("main.go", "generate.go", "schema.json", "terraform-mapping.json"):
            (provider / name).write_text("")
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GO_LOG": str(self.log),
                    "FAKE_GO_MODULES": str(modules)}
        self.env.pop("LAB_ENGINE_DIR", None)
        self.env.pop("LAB_ENGINE_KEEP_CHANGED", None)

    def build(self, **env: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        return subprocess.run(["bash", str(self.root / "tools" / "engine" / "build.sh")], env={**self.env, **env},
                              capture_output=True, text=True, timeout=120)

    def builds(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if " build " in line]

    def plugin(self, name: str) -> Path:
        found = list((self.out / "plugins").glob(f"resource-{name}-v*/pulumi-resource-{name}"))
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
def checkout(tmp_path) -> Checkout:
    if shutil.which("bash") is None or shutil.which("sha256sum") is None:
        pytest.skip("build.sh needs bash and coreutils")
    built = Checkout(tmp_path)
    first = built.build()
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(built.out)
    return built


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_stamp_records_every_binary_the_build_made(checkout):
    lines = (checkout.out / "stamp").read_text().splitlines()
    assert len(lines[0]) == 16  # the inputs' hash
    recorded = dict(reversed(line.split("  ", 1)) for line in lines[1:])
    files = sorted(str(p.relative_to(checkout.out)) for folder in ("bin", "plugins")
                   for p in (checkout.out / folder).rglob("*") if p.is_file())
    assert sorted(recorded) == files and len(files) == 5, files
    assert all(recorded[name] == _sha256(checkout.out / name) for name in files)
    assert not (checkout.out / "next").exists()


def test_a_second_run_builds_nothing(checkout):
    again = checkout.build()
    assert again.returncode == 0 and again.stdout.strip() == str(checkout.out), again.stderr
    assert checkout.builds() == []


def test_a_swapped_in_plugin_is_never_taken_for_the_stamped_build(checkout):
    plugin = checkout.plugin("command")
    plugin.write_text("#!/bin/sh\necho the real pulumi-command\n")

    result = checkout.build()

    assert result.returncode == 1 and result.stdout == ""
    relative = str(plugin.relative_to(checkout.out))
    assert result.stderr.strip() == (
        f"The engine folder {checkout.out} holds binaries its last build did not make ({relative}), such as a plugin "
        f"swapped in by hand: move them out of {checkout.out} (or delete the folder) to build again, or set "
        f"LAB_ENGINE_KEEP_CHANGED=1 to use it as it is.")
    assert plugin.read_text() == "#!/bin/sh\necho the real pulumi-command\n"
    assert checkout.builds() == []


def test_a_rebuild_for_changed_inputs_never_overwrites_a_swapped_in_plugin(checkout):
    plugin = checkout.plugin("command")
    plugin.write_text("swapped")
    extra = checkout.out / "plugins" / "resource-command-v9.9.9" / "pulumi-resource-command"
    extra.parent.mkdir()
    extra.write_text("another one")
    main_go = checkout.root / "tools" / "engine" / "command-provider" / "main.go"
    main_go.write_text(main_go.read_text() + "\n// changed\n")

    result = checkout.build()

    assert result.returncode == 1
    assert str(plugin.relative_to(checkout.out)) in result.stderr
    assert str(extra.relative_to(checkout.out)) in result.stderr
    assert plugin.read_text() == "swapped" and extra.read_text() == "another one"
    assert checkout.builds() == []


def test_keep_changed_uses_the_folder_as_it_is_and_says_so(checkout):
    plugin = checkout.plugin("kubernetes")
    plugin.write_text("swapped")

    result = checkout.build(LAB_ENGINE_KEEP_CHANGED="1")

    assert result.returncode == 0 and result.stdout.strip() == str(checkout.out)
    assert "LAB_ENGINE_KEEP_CHANGED=1" in result.stderr and str(plugin.relative_to(checkout.out)) in result.stderr
    assert plugin.read_text() == "swapped" and checkout.builds() == []


def test_a_missing_binary_is_built_again(checkout):
    plugin = checkout.plugin("command")
    plugin.unlink()

    result = checkout.build()

    assert result.returncode == 0, result.stderr
    assert checkout.plugin("command").exists() and len(checkout.builds()) == 4
    assert checkout.build().returncode == 0 and checkout.builds() == []


def test_a_folder_from_before_binaries_were_recorded_is_not_trusted(checkout):
    stamp = checkout.out / "stamp"
    stamp.write_text(stamp.read_text().splitlines()[0] + "\n")  # what build.sh wrote before issue #20

    result = checkout.build()

    assert result.returncode == 1 and "holds binaries its last build did not make (bin/pulumi, " in result.stderr
    assert checkout.builds() == []


def test_a_failed_rebuild_leaves_the_last_good_build_and_its_stamp(checkout):
    before = {p: p.read_bytes() for p in checkout.out.rglob("*") if p.is_file() and p.name != "build.log"}
    main_go = checkout.root / "tools" / "engine" / "command-provider" / "main.go"
    main_go.write_text(main_go.read_text() + "\n// changed\n")

    failed = checkout.build(FAKE_GO_FAIL="command-provider")

    assert failed.returncode == 1 and "failed at step 'command provider (stand-in)" in failed.stderr
    after = {p: p.read_bytes() for p in checkout.out.rglob("*") if p.is_file() and p.name != "build.log"
             and "next" not in p.relative_to(checkout.out).parts}
    assert after == before
    rebuilt = checkout.build()
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert len(checkout.builds()) == 4 and not (checkout.out / "next").exists()

