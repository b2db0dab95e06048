"""Secrets the lab makes for itself and keeps on this machine, never derived from anything guessable.

Kiali's login signing key seals the session cookie that carries a user's Kubernetes token (token login, on an
existing cluster): a key computed from the project and stack names could be computed by anyone. It is drawn at
random once per stack, kept in `.lab/secrets/` (0600, lab.private), and reaches Kiali only as a Pulumi secret.
Deleting `.lab/` draws a new one; Kiali then signs sessions anew, and users sign in again.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lab import private

SECRETS_ENV = "LAB_SECRETS_DIR"  # moves the folder (the tests point it at one of their own)


def kiali_signing_key(stack: str, project_root: Path) -> str:
    """The stack's Kiali signing key: 32 characters (an AES-256 key, as Kiali requires 16, 24 or 32)."""
    folder = Path(os.environ.get(SECRETS_ENV) or project_root / ".lab" / "secrets")
    path = folder / f"kiali-signing-key-{stack}"
    if path.is_file() and not path.is_symlink():
        key = path.read_text().strip()
        if len(key) == 32:
            return key
    key = secrets.token_hex(16)
    private.write_private(path, key + "\n")
    return key
