"""The README and docs/ stay true: the README starts with the two commands a newcomer needs and stays short, every
./lab.sh command in either is one the CLI accepts (with a stack the project has, a test path that exists), every
link resolves, every config key is documented with its set line, and docs/tour.md names the tour's commands."""

import os
import re
import shlex
from pathlib import Path

import pytest

from lab.config import DEFAULTS
from tests.harness import ROOT

README = Path(ROOT, "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted(Path(ROOT, "docs").glob("*.md"))}
PAGES = {"README.md": README, **{f"docs/{name}": text for name, text in DOCS.items()}}
STACKS = {path.name[len("Pulumi."):-len(".yaml")] for path in Path(ROOT, "stacks").glob("Pulumi.*.yaml")}
README_MAX_LINES = 180  # the newcomer's path; everything else belongs in docs/


def test_starts_with_the_two_commands_a_newcomer_needs():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./lab.sh up", "./lab.sh test"]
    assert README.index("```bash") < README.index("\n## "), "the two commands come before anything else"
    script = os.path.join(ROOT, "lab.sh")
    assert os.access(script, os.X_OK)
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert ci.rstrip().endswith("./lab.sh test"), "CI runs the README's test command"


def test_the_readme_is_the_newcomers_path_and_links_every_page_of_docs():
    assert len(README.splitlines()) <= README_MAX_LINES
    for heading in ("Prerequisites", "The two stacks", "Verify", "Follow the tutorial", "Destroy", "Configuration",
                    "Troubleshooting"):
        assert f"\n## {heading}\n" in README, heading
    assert "No lab has ever run with a data plane" in README
    assert DOCS, "docs/ holds the rest"
    for name in DOCS:
        assert f"](docs/{name})" in README, f"the README does not link docs/{name}"


def test_every_config_key_has_its_set_line():
    text = README + DOCS["configuration.md"]
    for key in DEFAULTS:
        assert f"`./lab.sh pulumi config set istio-ambient-lab:{key} " in text, key


def _placeholders_as_one(text: str) -> str:
    """<sleep's node> in the docs, '<sleep node>' in the tour's listing: the same blank to fill."""
    return re.sub(r"'?<[^>]*>'?", "<>", text)


def _lab_commands(text: str) -> list[list[str]]:
    """Every ./lab.sh command of a page, as its words after ./lab.sh: each line of a bash block (comments are prose),
    and each inline code span that is a command (after VAR=value words, or inside eval "$(...)")."""
    text = _placeholders_as_one(text)
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            found += re.findall(r"(?:^|\$\()\s*(?:[A-Z_]+=\S+\s+)*(\./lab\.sh\b[^#)\n]*)", line.split(" #")[0])
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S)):
        span = " ".join(span.split())  # a span may wrap onto the next line
        found += re.findall(r"^(?:[A-Z_]+=\S+ )*(\./lab\.sh .*)$", span)
        found += re.findall(r"\$\((\./lab\.sh [^)]*)\)", span)
    return [shlex.split(command.strip())[1:] for command in found if command.strip() != "./lab.sh"]


def _stacks_made_in(text: str) -> set[str]:
    """Stacks a page creates before using them: `pulumi stack init NAME`, `up NAME --new`."""
    return set(re.findall(r"\./lab\.sh pulumi stack init ([\w.-]+)", text)) | set(
        re.findall(r"\./lab\.sh up ([\w.-]+) --new", text))


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_command_of_a_page_is_one_the_cli_accepts(page):
    from lab import cli

    text = PAGES[page]
    stacks = STACKS | _stacks_made_in(text) | {"<>"}
    commands = _lab_commands(text)
    if page == "README.md":
        assert len(commands) >= 15
    for argv in commands:
        head = 1 if argv[0] in ("test", "pulumi") else 2 if argv[0] in ("kubectl", "istioctl") else len(argv)
        shown = f"{page}: ./lab.sh {shlex.join(argv)}"
        assert not cli._stack_as_option(argv), shown
        try:
            args = cli._parser().parse_args(argv[:head])
        except SystemExit:
            raise AssertionError(f"{shown} is not a command the CLI accepts") from None
        if hasattr(args, "stack"):
            assert args.stack in stacks, f"{shown} names a stack the project does not have"
        if argv[0] == "test":
            for word in argv[1:]:
                if word.startswith("tests"):
                    assert Path(ROOT, word.split("::")[0]).exists(), f"{shown}: no {word}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_script_a_page_runs_exists(page):
    for block in re.findall(r"```bash\n(.*?)```", PAGES[page], re.S):
        for line in block.splitlines():
            first = line.split()[0] if line.split() else ""
            if "/" in first and not first.startswith(("./lab.sh", "~", "/")):
                assert os.access(Path(ROOT, first), os.X_OK), f"{page}: {first} is not an executable of the project"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_link_of_a_page_resolves(page):
    folder = Path(ROOT, page).parent
    for target in re.findall(r"\]\(([^)\s]+)\)", PAGES[page]):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (folder / path).resolve() if path else Path(ROOT, page)
        assert linked.exists(), f"{page} links {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{page} links {target}: no such heading"


def test_no_project_file_points_at_notes_outside_the_project():
    """The notes the project was written from (REFERENCE and the seed tutorial) live on the machine the project was written on, not in the repository."""
    for path in Path(ROOT).rglob("*"):
        if path.suffix in (".py", ".md", ".sh", ".yaml", ".toml") and not {"venv", ".lab", ".git"} & set(path.parts):
            assert "REFERENCE" + ".md" not in path.read_text(encoding="utf-8", errors="replace"), path


def test_the_tour_page_names_only_commands_the_cli_accepts_and_enough_of_them():
    assert len(_lab_commands(DOCS["tour.md"])) >= 20


def test_the_tour_page_maps_every_step_of_the_tour():
    from lab import tour
    from lab.config import load

    page = _placeholders_as_one(DOCS["tour.md"])
    for stack, config in (("l4-only", load({}, "l4-only")), ("l7", load({"meshMode": "l7"}, "l7"))):
        for step in tour.steps(config):
            if step.skip_reason(stack, config) or (stack == "l7" and step.only_in is None):
                continue  # each step once: the both-modes steps on l4-only, the L7 ones on l7
            command = _placeholders_as_one(step.command(stack, {"stack": stack} if step.tool == "lab" else None))
            assert f"`{command}`" in page, f"docs/tour.md lacks the tour's step {step.title!r}: {command}"


def test_the_tour_beside_the_readme_says_how_to_get_istioctl():
    section = README[README.index("## Follow the tutorial"):]
    section = section[:section.index("\n## ", 1)]
    assert "./lab.sh tour l4-only" in section and "LAB_TRUST_PUBLISHED_CHECKSUMS=1" in section
