"""The control plane's teardown leaves no process, mount or file behind: after a clean stop, and after a run that
is interrupted in the middle of a test."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tests.cluster.cluster import network_namespaces_work
from tests.cluster.controlplane import ControlPlane
from tests.engine.engine import ROOT

pytestmark = pytest.mark.cluster


def _running_from(bin_dir: str) -> list[str]:
    """Processes whose executable is one of the control plane's binaries."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if exe.startswith(bin_dir + os.sep):
                found.append(f"{entry} {exe}")
    return found


def _mounts() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return "".join(sorted(line.split(" ", 4)[4] for line in handle))


def test_stop_leaves_no_process_mount_or_file(cluster_dir):
    network_namespaces_work()
    bin_dir = os.path.join(cluster_dir, "bin")
    mounts = _mounts()
    work = tempfile.mkdtemp(prefix="lab-cluster-teardown-")
    plane = ControlPlane(bin_dir, os.path.join(work, "plane"))
    try:
        plane.start()
        started = plane.pids()
        assert len(started) == 6, started  # five components and the namespace's holder
        assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        # Something started inside the namespace and left running, as a timed-out command would leave it.
        plane.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
        assert len(plane.namespace_members()) == 6
    finally:
        plane.stop()
        os.rmdir(work)

    assert not os.path.exists(plane.work)
    assert [pid for pid in started if os.path.exists(f"/proc/{pid}")] == []
    assert _running_from(bin_dir) == []
    assert _mounts() == mounts


def test_an_interrupted_run_leaves_no_process_or_file(cluster_dir, tmp_path):
    """Ctrl-C in the middle of a test that has the control plane: pytest runs the fixture's teardown."""
    network_namespaces_work()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    test_file = tmp_path / "test_interrupted.py"
    test_file.write_text(textwrap.dedent("""
        import pytest

        from tests.cluster.conftest import charts, cluster_dir, plane  # noqa: F401

        @pytest.mark.cluster
        def test_interrupted(plane):
            assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
            raise KeyboardInterrupt
    """))
    env = {**os.environ, "TMPDIR": str(scratch), "LAB_CLUSTER_DIR": cluster_dir, "PYTHONPATH": ROOT}

    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ROOT,
                             "-c", os.path.join(ROOT, "pyproject.toml"), str(test_file)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert "KeyboardInterrupt" in result.stdout + result.stderr, result.stdout + result.stderr
    assert _running_from(os.path.join(cluster_dir, "bin")) == []
    assert list(scratch.iterdir()) == []
