"""Keeps the tracked stack files (stacks/Pulumi.<stack>.yaml) as the user wrote them while pulumi runs.

The passphrase secrets provider writes an `encryptionsalt:` line into the stack file on `stack init` and again on
any later run that finds it missing. The salt belongs to the state the lab keeps in `.lab/` (the passphrase there
encrypted it), not to the checkout: committed, or left behind after `.lab/` is deleted, it makes the next stack of
that name fail with "incorrect passphrase". So the lab runs pulumi with PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER
(pulumi reads the salt from the stack's state when the file has none) and takes the line out again afterwards.
Everything else pulumi changes in a stack file (`./lab.sh pulumi config set ...`) stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

FALLBACK_ENV = "PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"
_SALT_LINE = re.compile(rb"^encryptionsalt:[^\n]*(\n|$)", re.MULTILINE)


def without_salt(content: bytes) -> bytes:
    """The stack file's text with its top-level encryptionsalt line taken out."""
    return _SALT_LINE.sub(b"", content)


def _as_pulumi_reads_it(value: object) -> object:
    """Config as pulumi holds it: every scalar a string (it re-writes `8081` as `"8081"`, `true` as `"true"`)."""
    if isinstance(value, dict):
        return {str(key): _as_pulumi_reads_it(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_pulumi_reads_it(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if value is None else str(value)


def _config_of(content: bytes) -> object:
    try:
        return _as_pulumi_reads_it(yaml.safe_load(without_salt(content)))
    except yaml.YAMLError:
        return None


def _stack_files(stack_dir: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(stack_dir.glob("Pulumi.*.yaml"))}


@contextmanager
def salt_kept_out(stack_dir: Path) -> Iterator[None]:
    """Runs the body, then leaves every stack file as it was but for real config changes, and without a salt.

    A file whose content means the same as before (pulumi re-serialised it, added the salt, dropped comments) gets
    its old bytes back, comments included; a file whose config really changed keeps pulumi's text, less the salt.
    A salt already in a file before the run is taken out first: with the fallback, the state's salt is the one used.
    """
    before = _stack_files(stack_dir) if stack_dir.is_dir() else {}
    for path, content in before.items():
        if without_salt(content) != content:
            path.write_bytes(without_salt(content))
    try:
        yield
    finally:
        for path, content in (_stack_files(stack_dir) if stack_dir.is_dir() else {}).items():
            old = before.get(path)
            if old is not None and _config_of(old) == _config_of(content):
                kept = without_salt(old)
            else:
                kept = without_salt(content)
            if kept != content:
                path.write_bytes(kept)
