"""Files and folders under `.lab/` that are the user's alone, from the moment they exist.

`.lab/tools` is first on the PATH of every lab command and `.lab/` holds the state, the passphrase and
kubeconfigs: on a shared machine, another user who could write there could replace a tool or read a secret. So
every folder is made 0700 whatever the umask, and every file is written to a fresh 0600 temporary file in its
folder and renamed into place: a rename replaces a symlink planted at the destination instead of following it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

LAB_DIR = ".lab"


class NotPrivate(OSError):
    """A folder under `.lab/` the lab cannot make its own: a symlink, or another user's. The message is one
    sentence saying what to do."""


def private_dir(path: Path) -> Path:
    """Makes `path` and every missing folder above it up to `.lab/` with mode 0700, and tightens `.lab/` itself.

    A folder outside any `.lab/` (a report file the user named) is the user's: made if missing, never re-moded, and
    it may be a symlink.

    Raises:
        NotPrivate: a folder at or below `.lab/` is a symlink (someone pointed it elsewhere) or another user's (who
            could replace a tool or read a secret there).
        OSError: a folder cannot be made.
    """
    path = Path(path)
    chain = [path, *path.parents]
    top = next((i for i, folder in enumerate(chain) if folder.name == LAB_DIR), None)
    if top is None:
        path.mkdir(parents=True, exist_ok=True)
        return path
    chain[top].parent.mkdir(parents=True, exist_ok=True)  # the checkout itself: the user's, left as it is
    for folder in reversed(chain[: top + 1]):
        if folder.is_symlink():
            raise NotPrivate(f"{folder} is a symlink; remove it so the lab can make its own private folder there")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        owner = folder.stat().st_uid
        if owner != os.getuid():
            raise NotPrivate(f"{folder} belongs to another user (uid {owner}), who could replace the lab's tools or "
                             f"read its secrets there; run the lab from a checkout of your own, or have that user "
                             f"remove {chain[top]}.")
        folder.chmod(0o700)  # mkdir's mode goes through the umask only one way; chmod is exact
    return path


def write_private(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    """Writes `content` to `path` (mode 0600 by default) in its private folder, whole or not at all."""
    path = Path(path)
    private_dir(path.parent)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600, O_EXCL: never a link
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
