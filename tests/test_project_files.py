"""Pulumi.yaml and the stack files: no misspelt keys (Pulumi silently ignores them), and one truth for defaults."""

import pytest

from lab.config import DEFAULTS, load
from tests.harness import PROJECT, STACKS, merged_config, project_file, stack_file

PROJECT_KEYS = {
    "name", "runtime", "description", "main", "stackConfigDir", "backend", "options", "template", "config",
    "plugins", "author", "website", "license", "packages",
}
CONFIG_SPEC_KEYS = {"type", "description", "default", "secret", "items", "value"}
STACK_KEYS = {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}


def test_project_file_shape():
    project = project_file()
    assert set(project) <= PROJECT_KEYS, f"unknown top-level keys: {set(project) - PROJECT_KEYS}"
    assert project["name"] == PROJECT
    assert project["stackConfigDir"] == "stacks"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert project["config"]["pulumi:disable-default-providers"] == {"value": ["kubernetes"]}


def test_every_config_key_is_typed_described_and_defaulted_as_the_code_says():
    declared = {k: v for k, v in project_file()["config"].items() if ":" not in k}
    assert set(declared) == set(DEFAULTS)
    for key, spec in declared.items():
        assert set(spec) <= CONFIG_SPEC_KEYS, f"{key}: unknown keys {set(spec) - CONFIG_SPEC_KEYS}"
        assert spec["type"] in ("string", "integer", "boolean"), key
        assert spec["description"].strip(), key
        default = spec["default"]
        as_text = ("true" if default else "false") if isinstance(default, bool) else str(default)
        assert as_text == DEFAULTS[key], f"{key}: Pulumi.yaml says {default!r}, lab/config.py says {DEFAULTS[key]!r}"


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_hold_only_known_keys_that_differ(stack):
    content = stack_file(stack)
    assert set(content) <= STACK_KEYS
    for key, value in (content.get("config") or {}).items():
        namespace, _, name = key.partition(":")
        assert namespace == PROJECT and name in DEFAULTS, f"{stack}: unknown key {key}"
        assert str(value) != DEFAULTS[name], f"{stack}: {key} repeats the default"
    raw = {k.split(":", 1)[1]: v for k, v in merged_config(stack).items() if k.startswith(PROJECT + ":")}
    assert load(raw, stack).mesh_mode == stack
