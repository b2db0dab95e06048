"""The README stays true: its first two commands exist, every config key is documented with its set line, and
the Follow the tutorial section names the tour's commands and only commands the CLI accepts."""

import os
import re
import shlex
from pathlib import Path

from lab.config import DEFAULTS
from tests.harness import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_starts_with_the_two_commands_a_newcomer_needs():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./lab.sh up", "./lab.sh test"]
    script = os.path.join(ROOT, "lab.sh")
    assert os.access(script, os.X_OK)
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert ci.rstrip().endswith("./lab.sh test"), "CI runs the README's test command"


def test_every_config_key_has_its_set_line():
    for key in DEFAULTS:
        assert f"`./lab.sh pulumi config set istio-ambient-lab:{key} " in README, key


def test_subcommands_it_names_exist():
    from lab import cli

    named = set(re.findall(r"\./lab\.sh ([a-z]+)", README))
    assert {"up", "destroy", "test", "verify", "dashboard", "pulumi"} <= named
    choices = set(cli._parser()._subparsers._group_actions[0].choices)
    assert named <= choices, named - choices


def _follow_the_tutorial() -> str:
    match = re.search(r"^## Follow the tutorial\n(.*?)^## ", README, re.S | re.M)
    assert match, "README has a Follow the tutorial section"
    return match.group(1)


def _placeholders_as_one(text: str) -> str:
    """<sleep's node> in the README, '<sleep node>' in the tour's listing: the same blank to fill."""
    return re.sub(r"'?<[^>]*>'?", "<>", text)


def _lab_commands(text: str) -> list[list[str]]:
    """Every ./lab.sh command of a text: in backticks, in a bash block, or inside eval "$(...)"."""
    found = re.findall(r"\./lab\.sh [^`\"$)#\n]*", _placeholders_as_one(text))
    return [shlex.split(command.strip())[1:] for command in found]


def test_every_follow_the_tutorial_command_is_one_the_cli_accepts():
    from lab import cli

    stacks = {path.name[len("Pulumi."):-len(".yaml")] for path in (Path(ROOT) / "stacks").glob("Pulumi.*.yaml")}
    commands = _lab_commands(_follow_the_tutorial())
    assert len(commands) >= 20
    for argv in commands:
        head = 1 if argv[0] in ("test", "pulumi") else 2 if argv[0] in ("kubectl", "istioctl") else len(argv)
        try:
            args = cli._parser().parse_args(argv[:head])
        except SystemExit:
            raise AssertionError(f"./lab.sh {shlex.join(argv)} is not a command the CLI accepts") from None
        if hasattr(args, "stack") and argv[0] != "pulumi":
            assert args.stack in stacks, f"./lab.sh {shlex.join(argv)} names a stack the project does not have"


def test_follow_the_tutorial_maps_every_step_of_the_tour():
    from lab import tour
    from lab.config import load

    section = _placeholders_as_one(_follow_the_tutorial())
    for stack, config in (("l4-only", load({}, "l4-only")), ("l7", load({"meshMode": "l7"}, "l7"))):
        for step in tour.steps(config):
            if step.skip_reason(stack, config) or (stack == "l7" and step.only_in is None):
                continue  # each step once: the both-modes steps on l4-only, the L7 ones on l7
            command = _placeholders_as_one(step.command(stack, {"stack": stack} if step.tool == "lab" else None))
            assert f"`{command}`" in section, f"README lacks the tour's step {step.title!r}: {command}"
