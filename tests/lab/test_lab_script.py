"""./lab.sh itself, run in a copy of the project whose python3 and pip are stand-ins (no network, no real venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, fake_bin):
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPOSITORY / "lab.sh", root / "lab.sh")
    shutil.copytree(REPOSITORY / "lab", root / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "requirements.txt").write_text("pytest\n")
    (root / "tests").mkdir()
    log = tmp_path / "calls.log"
    # python3 -m venv makes a venv whose python is the test's own interpreter and whose pip only logs.
    fake_bin.add("python3", f"""
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\nexec {sys.executable} "$@"\\n' > "$3/bin/python"
  printf '#!/bin/sh\\necho "pip $*" >> {log}\\n' > "$3/bin/pip"
  chmod +x "$3/bin/python" "$3/bin/pip"
  echo "python3 $*" >> {log}
  exit 0
fi
exec {sys.executable} "$@"
""")
    return root


def lab_sh(project: Path, fake_bin, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(project / "lab.sh"), *args],
        env={"PATH": f"{fake_bin.path}:/usr/bin:/bin", "HOME": str(project.parent)},
        cwd=project.parent,  # run from elsewhere: the script finds its own folder
        capture_output=True, text=True, timeout=60,
    )


# Wheels only: a source distribution would fetch its build dependencies (setuptools, a Rust toolchain's crates...)
# with no hash to hold them to, whatever --require-hashes says about the packages themselves.
PIP_INSTALL = "pip install --disable-pip-version-check --quiet --require-hashes --only-binary :all: -r requirements.txt"


def calls(project: Path) -> list[str]:
    log = project.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_first_run_makes_the_venv_and_a_run_without_tests_fails(project, fake_bin):
    result = lab_sh(project, fake_bin, "test")
    assert result.returncode == 5, result.stderr
    assert "pytest collected no tests, which counts as a failure" in result.stdout
    assert calls(project) == [
        "python3 -m venv venv",
        PIP_INSTALL,
    ]
    assert (project / "venv" / ".lab-requirements.txt").read_text() == "pytest\n"


def test_tests_run_and_their_outcome_is_the_exit_code(project, fake_bin):
    (project / "tests" / "test_one.py").write_text("def test_passes():\n    assert True\n")
    assert lab_sh(project, fake_bin, "test", "-q").returncode == 0
    (project / "tests" / "test_two.py").write_text("def test_fails():\n    assert False\n")
    assert lab_sh(project, fake_bin, "test", "-q").returncode == 1
    assert len(calls(project)) == 2  # venv and pip once: the stamp matched on the second run


def test_changed_requirements_are_installed_again(project, fake_bin):
    lab_sh(project, fake_bin, "test")
    (project / "requirements.txt").write_text("pytest\nPyYAML\n")
    lab_sh(project, fake_bin, "test")
    assert calls(project)[1:] == [PIP_INSTALL] * 2
    assert (project / "venv" / ".lab-requirements.txt").read_text() == "pytest\nPyYAML\n"


def test_the_script_hands_every_other_command_to_the_cli(project, fake_bin):
    result = lab_sh(project, fake_bin, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ./lab.sh [-h] COMMAND ...")


def test_the_script_asks_for_the_python_the_code_needs():
    """verify uses datetime.UTC and possessive regex quantifiers: Python 3.11."""
    script = (REPOSITORY / "lab.sh").read_text()
    assert "sys.version_info < (3, 11)" in script and "Install Python 3.11 or newer" in script


def test_a_venv_left_by_another_python_is_rebuilt(project, fake_bin):
    """After a Python upgrade venv/bin/python points at an interpreter that is gone: rebuild, don't blame venv."""
    (project / "venv" / "bin").mkdir(parents=True)
    (project / "venv" / "bin" / "python").symlink_to(project / "no-such-python3.10")
    result = lab_sh(project, fake_bin, "test")
    assert result.returncode == 5, result.stderr
    assert "venv/ was made by another Python than python3" in result.stderr
    assert "Install Python's venv module" not in result.stderr
    assert calls(project)[0] == "python3 -m venv venv"


def test_a_healthy_venv_is_kept(project, fake_bin):
    lab_sh(project, fake_bin, "test")
    result = lab_sh(project, fake_bin, "test")
    assert "rebuilding" not in result.stderr
    assert calls(project).count("python3 -m venv venv") == 1


def test_one_line_says_what_the_first_build_of_the_venv_is_doing(project, fake_bin):
    first = lab_sh(project, fake_bin, "test")
    said = "Installing the lab's Python packages into venv/ (about a minute the first time)..."
    assert first.stderr.splitlines().count(said) == 1
    assert said not in lab_sh(project, fake_bin, "test").stderr, "a built venv is not announced"
