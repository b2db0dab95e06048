"""A logged line of 64 KiB or more hangs `pulumi up` under the command provider, as it does under pulumi-command
v1.2.1 (issue #20), and the lab's own commands never print one (tests/test_logged_lines.py runs each's worst output).

    venv/bin/python -m pytest -m engine tests/engine/test_logged_lines.py
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.engine.engine import PULUMI_TIMEOUT_S, EngineLab, build_engine

pytestmark = pytest.mark.engine

LIMIT = 64 * 1024  # bufio.MaxScanTokenSize: the longest line pulumi-command's reader holds is one byte shorter
HANG_GRACE_S = 30  # after the command printed and exited, a provider that still reads its output returns at once
PROGRAM = """\
import os

import pulumi_command as command

command.local.Command("long-line", create=(
    f"head -c {os.environ['LINE_BYTES']} /dev/zero | tr '\\\\0' x; echo; touch {os.environ['PRINTED']}"))
"""


@pytest.fixture(scope="module")
def engine_dir() -> str:
    return build_engine()


@pytest.fixture
def probe(engine_dir, tmp_path) -> EngineLab:
    """A one-Command project on the real engine and the command provider, its line logged (the default)."""
    lab = EngineLab(engine_dir, str(tmp_path))
    with open(os.path.join(lab.project, "Pulumi.yaml"), "w", encoding="utf-8") as handle:
        handle.write("name: line-probe\nruntime:\n  name: python\n  options:\n    toolchain: pip\n"
                     "    virtualenv: venv\n")
    with open(os.path.join(lab.project, "__main__.py"), "w", encoding="utf-8") as handle:
        handle.write(PROGRAM)
    lab.new_stack("probe")
    return lab


def _up(lab: EngineLab, line_bytes: int, output) -> tuple[subprocess.Popen, str]:
    printed = os.path.join(lab.project, "printed")
    env = {**lab.env, "LINE_BYTES": str(line_bytes), "PRINTED": printed}
    process = subprocess.Popen(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive"],
                               cwd=lab.project, env=env, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)  # its own process group: the plugins go with it
    return process, printed


def _kill_plugins_of(lab: EngineLab) -> None:
    """The engine starts each plugin in a process group of its own, so killing a hung `pulumi up` leaves its
    command provider (blocked for good) and language host running: kill those this lab started, found by their
    command lines (the provider runs from this lab's PULUMI_HOME; the host listens on the same engine address)."""
    def command_lines() -> dict[int, list[str]]:
        found = {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    found[int(entry)] = handle.read().decode(errors="replace").split("\0")
            except (ValueError, OSError):
                continue
        return found

    processes = command_lines()
    ours = {pid: argv for pid, argv in processes.items() if argv[0].startswith(lab.home + os.sep)}
    addresses = {argv[1] for argv in ours.values() if len(argv) > 1}
    hosts = {pid for pid, argv in processes.items()
             if argv[0].endswith(os.sep + "pulumi-language-python") and len(argv) > 1 and argv[1] in addresses}
    for pid in {*ours, *hosts}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_logged_line_one_byte_under_the_limit_passes(probe, tmp_path):
    with open(tmp_path / "output", "w") as output:
        process, printed = _up(probe, LIMIT - 1, output)
        process.wait(timeout=PULUMI_TIMEOUT_S)
    assert process.returncode == 0, (tmp_path / "output").read_text()
    assert os.path.exists(printed)


def test_a_logged_line_of_64_kib_hangs_the_update(probe, tmp_path):
    output = tmp_path / "output"
    with open(output, "w") as sink:
        process, printed = _up(probe, LIMIT, sink)
    try:
        deadline = time.monotonic() + PULUMI_TIMEOUT_S
        while not os.path.exists(printed) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert os.path.exists(printed), "the command never ran"
        time.sleep(HANG_GRACE_S)
        assert process.poll() is None, f"pulumi up finished ({process.returncode}) after a 64 KiB logged line"
        assert "pulumi-command stand-in: the command printed a logged line of 65536 bytes or more" in (
            output.read_text())
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _kill_plugins_of(probe)


def test_the_lab_up_quoting_a_huge_kind_error_fails_with_its_sentence_instead_of_hanging(engine_dir, tmp_path):
    """The lab's cluster Command logs both streams: kind's 1 MB error line reaches it folded, so the update stops
    with the lab's sentence (before lab.logged_lines it hung here until the timeout)."""
    lab = EngineLab(engine_dir, str(tmp_path))
    lab.env["LAB_FAKE_KIND_CREATE_DUMP"] = str(1024 * 1024)
    lab.new_stack("l4-only")

    result = lab.pulumi("up", "--yes", "--skip-preview", check=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "kind could not create cluster 'ambient-l4-only' (ERROR: failed to create cluster: xxx" in output, (
        output[-3000:])
