"""Every Python package the lab installs, transitive ones included, is pinned with its hashes, and the hashed file
is the one generated from the direct pins in requirements.in."""

import re
from pathlib import Path

from tests.harness import ROOT

LOCKED = (Path(ROOT) / "requirements.txt").read_text()
DIRECT = (Path(ROOT) / "requirements.in").read_text()


def _entries(text: str) -> list[tuple[str, str, list[str]]]:
    """(name, version, hashes) for each `name==version \\` block of a pip-compile output."""
    blocks = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)((?:\s*\\\s*\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.M)
    return [(name.lower(), version, re.findall(r"sha256:([0-9a-f]{64})", hashes)) for name, version, hashes in blocks]


def test_every_locked_package_has_hashes():
    entries = _entries(LOCKED)
    assert len(entries) >= 30, "transitive dependencies are locked too"
    assert all(hashes for _, _, hashes in entries), [name for name, _, hashes in entries if not hashes]
    assert "--find-links" not in LOCKED and "--index-url" not in LOCKED, "no machine's own package sources"


def test_the_locked_file_holds_every_direct_pin_at_its_version():
    locked = {name: version for name, version, _ in _entries(LOCKED)}
    direct = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", DIRECT, re.M))
    assert direct and all(locked.get(name.lower()) == version for name, version in direct.items()), (direct, locked)

