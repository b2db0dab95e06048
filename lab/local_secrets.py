"""Secrets the lab makes for itself and keeps on this machine, never derived from anything guessable.

Kiali's login signing key seals the session cookie that carries a user's Kubernetes token (token login, on an
existing cluster): a key computed from the project and stack names could be computed by anyone. It is drawn at
random once per stack, kept in `.lab/secrets/` (0600, lab.private), and reaches Kiali only as a Pulumi secret.
Deleting `.lab/` draws a new one; Kiali then signs sessions anew, and users sign in again.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from lab import private

SECRETS_ENV = "LAB_SECRETS_DIR"  # moves the folder (the tests point it at one of their own)


def _folder(project_root: Path, env: Mapping[str, str] | None = None) -> Path:
    return Path((os.environ if env is None else env).get(SECRETS_ENV) or Path(project_root) / ".lab" / "secrets")


def kiali_signing_key(stack: str, project_root: Path) -> str:
    """The stack's Kiali signing key: 32 characters (an AES-256 key, as Kiali requires 16, 24 or 32)."""
    path = _folder(project_root) / f"kiali-signing-key-{stack}"
    if path.is_file() and not path.is_symlink():
        key = path.read_text().strip()
        if len(key) == 32:
            return key
    key = secrets.token_hex(16)
    private.write_private(path, key + "\n")
    return key


def known_secrets(project_root: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret kept here (each stack's Kiali signing key): 32 hex characters look like nothing in particular,
    so the leak rule (lab.leaks) finds them only when handed them as known secrets. `env`: the environment the
    program ran in (default: this process's)."""
    try:
        paths = sorted(_folder(project_root, env).glob("kiali-signing-key-*"))
        return [key for key in (path.read_text().strip() for path in paths if path.is_file()) if key]
    except OSError:  # not readable: nothing to compare with, and printing must not fail for it
        return []
