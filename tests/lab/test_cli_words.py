"""What ./lab.sh accepts on its command line: no prefix matching, the stack as a positional word, a new stack only
on request."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lab import cli
from tests.harness import ROOT
from tests.lab.test_cli import brought_up, context, machine, project  # noqa: F401 (fixtures)


def _parser_calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("ArgumentParser", "add_parser")]


def test_no_parser_in_the_project_matches_option_prefixes():
    files = [path for folder in ("lab", "verify", "tests", "tools", "components") for path in
             (Path(ROOT) / folder).rglob("*.py")] + [Path(ROOT) / "__main__.py"]
    calls = {f"{path.relative_to(ROOT)}:{call.lineno}": call
             for path in files for call in _parser_calls(ast.parse(path.read_text(), str(path)))}
    assert len(calls) >= 13, sorted(calls)
    for where, call in calls.items():
        abbrev = [k for k in call.keywords if k.arg == "allow_abbrev"]
        assert abbrev and isinstance(abbrev[0].value, ast.Constant) and abbrev[0].value.value is False, (
            f"{where}: an ArgumentParser or subparser without allow_abbrev=False")


def test_an_option_prefix_is_refused_not_taken_for_the_option(project, machine, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as refused:
        cli.main(["up", "l7", "--r"], context(project, machine))
    assert refused.value.code == 2
    assert "unrecognized arguments: --r" in capsys.readouterr().err
    assert machine.calls() == []


@pytest.mark.parametrize("argv, said", [
    (["up", "--stack", "l7"], "run `./lab.sh up l7`"),
    (["up", "--stack=l7", "--recreate"], "run `./lab.sh up l7 --recreate`"),
    (["verify", "--json", "--stack", "l7"], "run `./lab.sh verify l7 --json`"),
    (["kubectl", "--stack", "l7", "get", "pods"], "run `./lab.sh kubectl l7 get pods`"),
])
def test_the_stack_given_as_an_option_is_said_to_be_positional(project, machine, capsys, argv, said):  # noqa: F811
    assert cli.main(argv, context(project, machine)) == 2
    assert capsys.readouterr().err == f"The stack is positional, not an option: {said}.\n"
    assert machine.calls() == []


def test_a_tools_own_stack_option_is_left_to_it(project, machine, monkeypatch):  # noqa: F811
    ran = []
    monkeypatch.setattr(cli, "_stream", lambda argv, env, cwd: ran.append(list(argv)) or 0)
    assert cli.main(["pulumi", "stack", "output", "--stack", "l7"], context(project, machine)) == 0
    assert ran == [["pulumi", "stack", "output", "--stack", "l7"]]


def test_a_stack_without_its_file_needs_new(project, machine, capsys):  # noqa: F811
    """A typo must not quietly make a new stack and a cluster `ambient-l4`."""
    ctx = context(project, machine)
    assert cli.main(["up", "l4"], ctx) == 1
    assert capsys.readouterr().err == (
        "There is no stack named l4 (no stacks/Pulumi.l4.yaml): use one of l4-only, l7, or create it with "
        "`./lab.sh up l4 --new`.\n")
    assert machine.calls() == [] and not (project / ".lab").exists()
    for command in (["destroy", "l4"], ["preflight", "l4"], ["tour", "l4", "--list"]):
        assert cli.main(command, ctx) == 1
        assert capsys.readouterr().err.startswith("There is no stack named l4 "), command
    assert cli.main(["up", "l4", "--new"], ctx) == 0, ctx.out.getvalue()
    assert machine.calls() == ["stack select --create l4 --secrets-provider passphrase", "up --yes --stack l4"]
    assert ctx.out.getvalue().startswith("New stack l4: wrote stacks/Pulumi.l4.yaml (the defaults).\n")
    assert cli.stack_config(project, "l4").cluster_name == "ambient-l4"
    assert cli.main(["preflight", "l4"], ctx) == 0, "the new stack is known from now on"


@pytest.mark.parametrize("name, said", [
    ("../x", "'../x' cannot name a stack: use letters, digits, '-', '_' and '.', starting with a letter or digit."),
])
def test_a_new_stack_needs_a_name_that_can_be_one(project, machine, capsys, name, said):  # noqa: F811
    assert cli.main(["up", name, "--new"], context(project, machine)) == 1
    assert capsys.readouterr().err.startswith(said)
    assert sorted(p.name for p in (project / "stacks").iterdir()) == ["Pulumi.l4-only.yaml", "Pulumi.l7.yaml"]


def test_a_stack_that_is_up_here_is_known_without_its_file(project, machine):  # noqa: F811
    """A stack brought up with --new, whose file was never written, can still be destroyed."""
    brought_up(project, "mine")
    assert cli.main(["destroy", "mine"], context(project, machine)) == 0
    assert "destroy --yes --stack mine" in machine.calls()


@pytest.mark.parametrize("content, said", [
    ("config: [1, 2]\n",
     "`config:` in {file} is a list, not a mapping of keys to values: write one `istio-ambient-lab:<key>: <value>` "
     "line per setting under it."),
    ("- config\n",
     "{file} holds a list, not a mapping with a `config:` section: make it `config:` followed by lines like "
     "`  istio-ambient-lab:meshMode: l7`."),
    ("config:\n  meshMode: l7\n",
     "{file} sets `meshMode` without a namespace, which pulumi refuses: write it as `istio-ambient-lab:meshMode`."),
    ("config:\n  istio-ambient:workers: 3\n",
     "{file} sets `istio-ambient:workers`, which the lab never reads (its keys start with `istio-ambient-lab:`): write "
     "it as `istio-ambient-lab:workers`."),
    ("config:\n  istio-ambient-lab:workers: [1, 2]\n",
     "`istio-ambient-lab:workers` in {file} is a list, but it takes a single value: give it one value, such as the "
     "default in Pulumi.yaml."),
])
def test_a_misshapen_stack_file_is_one_sentence(project, machine, capsys, content, said):  # noqa: F811
    stack_file = project / "stacks" / "Pulumi.l7.yaml"
    stack_file.write_text(content)
    assert cli.main(["preflight", "l7"], context(project, machine)) == 1
    assert capsys.readouterr().err == said.format(file=stack_file) + "\n"


def test_another_packages_settings_are_left_alone(project, machine):  # noqa: F811
    (project / "stacks" / "Pulumi.l7.yaml").write_text(
        "config:\n  kubernetes:enableServerSideApply: 'true'\n  istio-ambient-lab:meshMode: l7\n")
    assert cli.stack_config(project, "l7").mesh_mode == "l7"
