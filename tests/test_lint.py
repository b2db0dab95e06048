"""Code that no test here runs (the end-to-end suite skips without Docker) still has to be code that can run:
undefined names, unused imports and syntax errors fail here, in every tier."""

import subprocess
import sys

from tests.harness import ROOT


def test_no_undefined_names_or_syntax_errors():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F,E9", "--no-cache", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
