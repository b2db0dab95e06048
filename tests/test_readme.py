"""The README stays true: its first two commands exist, every config key is documented with its set line."""

import os
import re

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
