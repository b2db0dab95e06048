"""No command the program runs with logging on can print a line that hangs pulumi-command (issue #20).

pulumi-command v1.2.1 reads a command's logged streams, stdout and stderr through one pipe, with a bufio.Scanner that
stops at a line of 64 KiB or more; the command then blocks and `pulumi up` hangs (the engine tier's stand-in does the
same: tests/engine/test_logged_lines.py). Here every Command and `run` of the program is listed with the streams it
logs, and each one is run, as the program runs it, against fake tools that give the worst output it can quote; the
streams are merged as the provider merges them, and no line may reach the scanner's limit.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import stat
import subprocess
import sys
import textwrap

import pytest

from lab import logged_lines
from tests.harness import ROOT, run_program

COMMAND, RUN = "command:local:Command", "command:local:run"
LIMIT = logged_lines.SCANNER_LIMIT
# What kind, docker and kubectl can say in one line: a dump of a failed node (no length limit, not all ASCII).
DUMP = "ERROR: failed to create cluster: command \"docker run ...\" failed with output: " + "ñode ✓ log, " * 30_000 + "end of dump"

# Every (module, action) the program runs with logging on, the streams it logs, and the test that runs its worst
# output. A new Command or run fails test_every_logged_command_has_a_worst_case_test until it is listed here.
LOGGED = {
    ("lab.kind_cluster", "create"): ({"stdout", "stderr"}, "test_kind_create_quoting_a_kind_error_dump"),
    ("lab.kind_cluster", "delete"): ({"stdout", "stderr"}, "test_kind_delete_quoting_a_kind_error_dump"),
    ("lab.images", "pull"): ({"stdout", "stderr"}, "test_image_pull_quoting_a_docker_error_dump"),
    ("lab.images", "preload"): ({"stdout", "stderr"}, "test_image_preload_quoting_a_kind_error_dump"),
    ("lab.images", "mirror-apply"): ({"stdout", "stderr"}, "test_mirror_apply_naming_a_long_node_list"),
    ("verify", None): ({"stderr"}, "test_verification_quoting_a_kind_error_dump"),
}
# The long check report (a check's observed value, unbounded) is run in-process with the verify fakes, there:
VERIFY_REPORT_TEST = "tests/verify/test_verify_cli.py::test_a_long_check_report_prints_short_progress_lines"


def _logged_streams(logging: str | None) -> set[str]:
    """What pulumi-command logs for a `logging` input (none given: both streams)."""
    return {None: {"stdout", "stderr"}, "stdout": {"stdout"}, "stderr": {"stderr"},
            "stdoutAndStderr": {"stdout", "stderr"}, "none": set()}[logging]


def _module_action(command: str) -> tuple[str, str | None]:
    words = shlex.split(command.split("||")[0])
    module = words[words.index("-m") + 1]
    following = words[words.index("-m") + 2:]
    return module, following[0] if following and not following[0].startswith("-") else None


def _program_commands() -> dict[tuple[str, str | None], tuple[set[str], str]]:
    """(module, action) -> (streams logged, the command as the program runs it), over both stacks, every option on."""
    found = {}
    for stack in ("l4-only", "l7"):
        run = run_program(stack, {"preloadImages": "true", "registryMirror": "http://kind-registry:5000"})
        for resource in run.of_type(COMMAND):
            for key in ("create", "update", "delete"):
                if resource.inputs.get(key):
                    streams = _logged_streams(resource.inputs.get("logging"))
                    found[_module_action(resource.inputs[key])] = (streams, resource.inputs[key])
        for invoke in run.invokes:
            if invoke.token == RUN:
                found[_module_action(invoke.args["command"])] = (_logged_streams(invoke.args.get("logging")),
                                                                 invoke.args["command"])
    return found


@pytest.fixture(scope="module")
def program_commands():
    return _program_commands()


def test_every_logged_command_has_a_worst_case_test(program_commands):
    logged = {key: streams for key, (streams, _) in program_commands.items() if streams}
    assert logged == {key: streams for key, (streams, _) in LOGGED.items()}, (
        "a Command or run with logging on must be listed in LOGGED with a test of its worst output")
    for _, test in LOGGED.values():
        assert callable(globals().get(test)), test
    path, name = VERIFY_REPORT_TEST.split("::")
    assert f"def {name}(" in open(os.path.join(ROOT, path), encoding="utf-8").read()
    # The kubeconfig read is the one command not logged: its output is a secret, and data.
    assert program_commands[("lab.kind_cluster", "kubeconfig")][0] == set()


# --- the folding itself ---------------------------------------------------------------------------------------------


def test_folding_bounds_every_line_and_keeps_every_character():
    out = io.StringIO()
    folded = logged_lines.FoldedLines(out, width=10)
    for piece in ["abc", "defghijklmnopqrstuvwxyz" * 3, "\n", "short\n", "x" * 25, "\nend"]:
        assert folded.write(piece) == len(piece)
    lines = out.getvalue().split("\n")
    assert max(len(line) for line in lines) == 10
    assert "".join(lines) == "abc" + "defghijklmnopqrstuvwxyz" * 3 + "short" + "x" * 25 + "end"
    assert lines[-5:] == ["short", "x" * 10, "x" * 10, "x" * 5, "end"]


def test_a_folded_line_stays_far_below_the_limit_in_any_encoding():
    # Two unfinished lines (stdout's and stderr's) can meet in one logged line; a character is at most 10 bytes
    # ("\U0001f600" as a backslash escape in an ASCII stream).
    assert 2 * logged_lines.WIDTH * len("\\U0001f600") < LIMIT


def test_folding_passes_the_rest_of_the_stream_through():
    out = io.StringIO()
    folded = logged_lines.FoldedLines(out)
    print("x", file=folded, flush=True)
    assert folded.getvalue() == "x\n"  # any other attribute is the wrapped stream's


# --- each command's worst output -----------------------------------------------------------------------------------


def _tool(folder, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env python3\nimport json, os, sys\nargs = sys.argv[1:]\nDUMP = " + repr(DUMP)
                    + "\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_as_the_program_does(command: str, tmp_path, stdin: str = "") -> subprocess.CompletedProcess:
    """The program's command line through /bin/sh, with this interpreter for the project's venv, the fake tools
    first on PATH, and stdout and stderr in one pipe as pulumi-command reads them when it logs both."""
    command = command.replace("venv/bin/python", shlex.quote(sys.executable), 1)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ROOT,
           "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    env.pop("PULUMI_COMMAND_STDOUT", None)
    work = tmp_path / "project"  # what the command writes (.lab/...) lands here, never in the checkout
    work.mkdir(exist_ok=True)
    return subprocess.run(["/bin/sh", "-c", command], cwd=work, env=env, input=stdin.encode(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def _assert_fits(result: subprocess.CompletedProcess, quoted: str) -> None:
    lines = result.stdout.split(b"\n")
    longest = max(len(line) for line in lines)
    assert longest < LIMIT, f"a logged line of {longest} bytes would hang pulumi-command"
    assert quoted in result.stdout.decode().replace("\n", ""), "folding must not drop what the tool said"


@pytest.fixture
def tools(tmp_path):
    (tmp_path / "bin").mkdir()
    return tmp_path / "bin"


def _command(program_commands, module: str, action: str | None) -> str:
    return program_commands[(module, action)][1]


def test_kind_create_quoting_a_kind_error_dump(program_commands, tools, tmp_path):
    _tool(tools, "kind", """
        if args[:2] == ["get", "clusters"]:
            print("No kind clusters found.", file=sys.stderr)
        elif args[:2] == ["create", "cluster"]:
            print("Creating cluster ...\\n" + DUMP, file=sys.stderr)
            sys.exit(1)
        """)
    result = _run_as_the_program_does(_command(program_commands, "lab.kind_cluster", "create"), tmp_path,
                                      stdin="kind: Cluster\nnodes:\n- role: control-plane\n")
    assert result.returncode == 1
    assert result.stdout.startswith(b"error: kind could not create cluster")
    _assert_fits(result, DUMP)


def test_kind_delete_quoting_a_kind_error_dump(program_commands, tools, tmp_path):
    command = _command(program_commands, "lab.kind_cluster", "delete")
    name, owner = (re.search(rf"--{flag} (\S+)", command).group(1) for flag in ("name", "owner"))
    _tool(tools, "kind", f"""
        if args[:2] == ["get", "clusters"]:
            print({name!r})
        elif args[:2] == ["get", "kubeconfig"]:
            print("apiVersion: v1")
        elif args[:2] == ["delete", "cluster"]:
            print(DUMP, file=sys.stderr)
            sys.exit(1)
        """)
    _tool(tools, "kubectl", f"""
        print(json.dumps({{"metadata": {{"labels": {{"istio-ambient-lab/owner": {owner!r}}}}}}}))
        """)
    result = _run_as_the_program_does(command, tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith(b"error: `kind delete cluster` failed: ")
    _assert_fits(result, DUMP)


def test_image_pull_quoting_a_docker_error_dump(program_commands, tools, tmp_path):
    _tool(tools, "docker", """
        if args[:1] == ["version"]:
            print("amd64")
        elif args[:1] == ["pull"]:
            print(DUMP, file=sys.stderr)
            sys.exit(1)
        else:
            print("Error response from daemon: No such image", file=sys.stderr)
            sys.exit(1)
        """)
    result = _run_as_the_program_does(_command(program_commands, "lab.images", "pull"), tmp_path)
    assert result.returncode == 1
    assert b"error: could not pull " in result.stdout
    _assert_fits(result, DUMP)


def test_image_preload_quoting_a_kind_error_dump(program_commands, tools, tmp_path):
    _tool(tools, "docker", """
        print("amd64")
        """)
    _tool(tools, "kind", """
        print(DUMP, file=sys.stderr)
        sys.exit(1)
        """)
    result = _run_as_the_program_does(_command(program_commands, "lab.images", "preload"), tmp_path)
    assert result.returncode == 1
    assert b"error: kind could not list the nodes of cluster " in result.stdout
    _assert_fits(result, DUMP)


def test_mirror_apply_naming_a_long_node_list(program_commands, tools, tmp_path):
    nodes = [f"node-{index}-" + "ñ" * 20_000 for index in range(4)]  # 160 KB of node names in one sentence
    _tool(tools, "kind", f"""
        print("\\n".join({nodes!r}))
        """)
    _tool(tools, "docker", """
        sys.stdin.read()
        """)
    result = _run_as_the_program_does(_command(program_commands, "lab.images", "mirror-apply"), tmp_path)
    assert result.returncode == 0, result.stdout[-500:]
    assert result.stdout.startswith(b"registry mirror set for docker.io on 4 node(s): ")
    _assert_fits(result, ", ".join(nodes))


def test_verification_quoting_a_kind_error_dump(program_commands, tools, tmp_path):
    _tool(tools, "kind", """
        print(DUMP, file=sys.stderr)
        sys.exit(1)
        """)
    command = _command(program_commands, "verify", None)
    # The program logs only stderr: stdout (the JSON report) is data and not read by the scanner.
    command = command.replace(" || [ $? -eq 1 ]", " 2>&1 >/dev/null || [ $? -eq 1 ]")
    result = _run_as_the_program_does(command, tmp_path)
    assert result.returncode == 1, "verify's exit 2 (the cluster cannot be reached) fails the invoke"
    assert result.stdout.startswith(b"python -m verify: ")
    _assert_fits(result, DUMP)


def test_the_kubeconfig_read_is_data_and_stays_whole(program_commands, tools, tmp_path):
    """Not logged (logging none), and read by the Kubernetes provider: a long line (a 4096-bit key) is not folded."""
    command = _command(program_commands, "lab.kind_cluster", "kubeconfig")
    name = re.search(r"--name (\S+)", command).group(1)
    kubeconfig = "apiVersion: v1\nusers:\n- user:\n    client-key-data: " + "QUJD" * 1000 + "\n"
    _tool(tools, "kind", f"""
        if args[:2] == ["get", "clusters"]:
            print({name!r})
        elif args[:2] == ["get", "kubeconfig"]:
            sys.stdout.write({kubeconfig!r})
        """)
    _tool(tools, "docker", """
        pass
        """)
    result = _run_as_the_program_does(command, tmp_path)
    assert result.returncode == 0, result.stdout[-500:]
    assert result.stdout.decode() == kubeconfig
