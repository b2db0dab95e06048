"""One rule for what must never appear in plain text: in stack state, stack outputs, or anything printed.

Used by the unit tests on what the program registers and by the end-to-end tests on the exported state and the
captured `pulumi up` output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Private keys in PEM form and the kubeconfig fields that carry credentials.
_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"client-key-data\s*:"),
    re.compile(r"\btoken\s*:\s*[A-Za-z0-9._-]{20,}"),
)


def find_leaks(text: str, known_secrets: Iterable[str] = ()) -> list[str]:
    """What in `text` looks like a credential, or equals one of `known_secrets` (a passphrase, say).

    Returns:
        A description of each leak found; empty when the text is clean. The secret itself is never repeated.
    """
    found = [f"text matching {pattern.pattern!r}" for pattern in _PATTERNS if pattern.search(text)]
    found += [f"a known secret ({len(secret)} characters)" for secret in known_secrets if secret and secret in text]
    return found
