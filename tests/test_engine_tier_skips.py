"""The engine tier never starts a long first build from a newcomer's `./lab.sh test`, and never skips in CI."""

import os
import shutil

import pytest
from _pytest.outcomes import Skipped

from tests.engine import engine


def test_not_built_yet_is_a_skip_with_the_way_to_build_it(monkeypatch, tmp_path):
    if shutil.which("go") is None:
        pytest.skip("Go is not on PATH here: the earlier skip, for Go, applies first")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(engine.BUILD_ENV, raising=False)
    monkeypatch.setenv("LAB_ENGINE_DIR", str(tmp_path / "not-built"))
    with pytest.raises(Skipped, match=r"the Pulumi engine is not built yet: run tools/engine/build.sh once"):
        engine.build_engine()


def test_ci_without_go_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(pytest.fail.Exception, match="the engine tests need Go on PATH"):
        engine.build_engine()
