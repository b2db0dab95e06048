"""Make kind, kubectl and pulumi available without touching system paths.

A tool already on PATH (or in ``.lab/tools``) at or above its minimum version is reused. Otherwise the pinned
release for this machine is downloaded into ``.lab/tools``, and installed only when its SHA-256 matches both the
digest pinned in ``lab/tools.py`` and the checksum file published with the release. Downloads go to a temporary
file in the same folder and are renamed into place after verification, so an interrupted download leaves nothing
half-installed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lab import https, private
from lab.tools import RELEASES, TRUST_PUBLISHED_VARIABLE, Release


class LabError(Exception):
    """A failure whose message is one sentence telling the user what to do."""


Runner = Callable[..., "subprocess.CompletedProcess[str]"]
Version = tuple[int, int, int]

_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_DOWNLOAD_TIMEOUT_SECONDS = 60
_CHECKSUM_FILE_LIMIT = 1 << 20


def run_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its output; a missing or hung program becomes a failed result, not an exception.

    Args:
        argv: The command and its arguments.
        env: The child's whole environment (None: inherit).
        cwd: The child's working directory (None: inherit).
        timeout: Seconds before the command is stopped and reported as failed (exit 124).

    Returns:
        The completed process; exit 127 when the program does not exist, 126 when it cannot be run.
    """
    argv = [str(part) for part in argv]
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=None if env is None else dict(env), cwd=cwd,
            timeout=timeout, check=False,
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: command not found")
    except PermissionError:
        return subprocess.CompletedProcess(argv, 126, "", f"{argv[0]}: permission denied")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"{argv[0]}: no answer after {timeout:g} s")


def last_line(text: str) -> str:
    """The last non-blank line of a command's output: usually the one that says what went wrong."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def normalize_arch(machine: str) -> str | None:
    """The release spelling (amd64, arm64) of a CPU name from ``uname -m``, or None when the lab can't run there."""
    return _ARCHITECTURES.get(machine.lower())


def host_platform(
    system: Callable[[], str] = platform.system, machine: Callable[[], str] = platform.machine
) -> tuple[str, str]:
    """This machine's (os, arch) as release assets spell them, e.g. ("linux", "amd64").

    Raises:
        LabError: On anything but linux/darwin with amd64/arm64.
    """
    os_name, arch = system().lower(), normalize_arch(machine())
    if os_name not in ("linux", "darwin") or arch is None:
        raise LabError(
            f"The lab runs on linux or darwin with amd64 or arm64, and this machine is {os_name}/{machine()}: "
            "use a supported machine."
        )
    return os_name, arch


def parse_version(output: str) -> Version | None:
    """The first x.y.z version in a tool's version output; kubectl's JSON is read from ``clientVersion``."""
    text = output.strip()
    if text.startswith("{"):
        try:
            text = json.loads(text)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            return None
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def version_text(version: Version | None) -> str:
    """A version as people write it (v1.2.3), or "an unknown version"."""
    return "an unknown version" if version is None else "v" + ".".join(map(str, version))


# How each tool reports its own version.
_VERSION_ARGS = {
    "kind": ("version",),
    "kubectl": ("version", "--client", "-o", "json"),
    "pulumi": ("version",),
    "istioctl": ("version", "--remote=false"),  # the client alone: no cluster needed to say which it is
}


@dataclass(frozen=True)
class FoundTool:
    """A tool found on the search path, with the version it reports (None when unreadable)."""

    path: Path
    version: Version | None

    def satisfies(self, release: Release) -> bool:
        """Whether this copy is at least the release's minimum (exactly its version, for an exact release)."""
        if release.exact:
            return self.version == parse_version(release.version)
        return self.version is not None and self.version >= parse_version(release.minimum)


def find_tool(release: Release, search_path: str, run: Runner = run_captured) -> FoundTool | None:
    """Look a tool up on a search path and ask it for its version.

    Args:
        release: The tool's pinned release.
        search_path: A PATH-style list of folders.
        run: The process runner.

    Returns:
        What was found, or None when no executable of that name is on the path.
    """
    location = shutil.which(release.name, path=search_path)
    if location is None:
        return None
    result = run([location, *_VERSION_ARGS[release.name]], timeout=30)
    version = parse_version(result.stdout) if result.returncode == 0 else None
    return FoundTool(Path(location), version)


def published_digest(checksum_file: str, asset_name: str) -> str | None:
    """The digest a release's checksum file gives for an asset.

    Handles ``sha256sum`` lines (``<digest>  <file>``, kind and pulumi) and a lone digest (kubectl.sha256).
    """
    lone: list[str] = []
    for line in checksum_file.splitlines():
        parts = line.split()
        if not parts or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        if len(parts) == 1:
            lone.append(parts[0].lower())
        elif PurePosixPath(parts[-1].lstrip("*")).name == asset_name:
            return parts[0].lower()
    return lone[0] if len(lone) == 1 else None


def _download_failed(url: str, reason: object, release: Release) -> LabError:
    return LabError(
        f"Could not download {url} ({reason}): check your network connection or proxy, or install "
        f"{release.name} {release.accepted} yourself and put it on your PATH."
    )


def _fetch_text(url: str, release: Release) -> str:
    try:
        with https.open_https(url, _DOWNLOAD_TIMEOUT_SECONDS) as response:
            return response.read(_CHECKSUM_FILE_LIMIT).decode("utf-8", errors="replace")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _download_failed(url, getattr(error, "reason", error), release) from None


def _download(url: str, folder: Path, release: Release) -> tuple[Path, str]:
    """Stream a URL into a new hidden file in ``folder``; return its path and SHA-256. Nothing is left on failure."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=f".{release.name}-", suffix=".part")
    partial = Path(name)
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, https.open_https(url, _DOWNLOAD_TIMEOUT_SECONDS) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        # http.client returns a short body without complaint when the server hangs up early.
        if expected is not None and received != int(expected):
            raise LabError(
                f"The download of {url} stopped after {received} of {expected} bytes: run the command again."
            )
        return partial, digest.hexdigest()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        partial.unlink(missing_ok=True)
        raise _download_failed(url, getattr(error, "reason", error), release) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _install_binary(download: Path, target: Path) -> None:
    download.chmod(0o755)
    os.replace(download, target)


def _install_archive(archive: Path, folder: Path, release: Release) -> None:
    """Move the regular files of the archive's ``archive_dir`` (pulumi/; the top for istioctl) into ``folder``, the
    tool itself last."""
    top = (release.archive_dir,) if release.archive_dir else ()
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{release.name}-"))
    try:
        names = []
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                parts = PurePosixPath(member.name).parts
                # Only plain files directly in that folder: no links, no paths that could climb out.
                if len(parts) != len(top) + 1 or parts[:-1] != top or not member.isfile():
                    continue
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                with source, open(staging / parts[-1], "wb") as out:
                    shutil.copyfileobj(source, out)
                (staging / parts[-1]).chmod(0o755)
                names.append(parts[-1])
        if release.name not in names:
            expected = "/".join((*top, release.name))
            raise LabError(f"The {release.name} archive has no {expected}: install {release.name} yourself and put "
                           "it on your PATH.")
        # Renamed last, so a pulumi in the tools folder always means its helpers are there too.
        for name in sorted(names, key=lambda name: name == release.name):
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def refuse_unpinned(release: Release, os_name: str, arch: str, env: Mapping[str, str]) -> None:
    """Stop before anything is said to be installing when nothing can be: no pinned digest and no trust switch.

    Raises:
        LabError: The asset is unpinned and LAB_TRUST_PUBLISHED_CHECKSUMS is not 1; the sentence says both ways out.
    """
    platform_name = f"{os_name}/{arch}"
    if release.sha256.get(platform_name) is None and env.get(TRUST_PUBLISHED_VARIABLE) != "1":
        raise LabError(
            f"No SHA-256 of {release.name} v{release.version} for {platform_name} is pinned in lab/tools.py: "
            f"install {release.name} {release.accepted} yourself and put it on your PATH, or set "
            f"{TRUST_PUBLISHED_VARIABLE}=1 to trust the checksum file published with the release alone."
        )


def install(release: Release, tools_dir: Path, os_name: str, arch: str, env: Mapping[str, str]) -> Path:
    """Download, verify and install one tool's pinned release into ``tools_dir``.

    Args:
        release: The tool's pinned release.
        tools_dir: The project-local tools folder (created if missing).
        os_name: "linux" or "darwin".
        arch: "amd64" or "arm64".
        env: Environment holding the base URL overrides and the trust switch.

    Returns:
        The installed executable.

    Raises:
        LabError: The asset is unpinned, a download failed, or a digest did not match.
    """
    platform_name = f"{os_name}/{arch}"
    pinned = release.sha256.get(platform_name)
    refuse_unpinned(release, os_name, arch, env)
    base = env.get(release.base_url_variable, release.base_url).rstrip("/")
    # Plain http would let anyone on the path swap the download and its checksum file together.
    if not base.startswith("https://"):
        raise LabError(f"{release.base_url_variable} is {base}, which is not an https:// address: point it at an "
                       "https:// mirror or unset it.")
    asset_url = f"{base}/{release.asset_path(os_name, arch)}"
    checksums_url = f"{base}/{release.checksums_path(os_name, arch)}"
    asset_name = PurePosixPath(release.asset_path(os_name, arch)).name

    published = published_digest(_fetch_text(checksums_url, release), asset_name)
    if published is None:
        raise LabError(
            f"The checksum file {checksums_url} lists no SHA-256 for {asset_name}: install {release.name} "
            f"{release.accepted} yourself and put it on your PATH."
        )
    private.private_dir(tools_dir)  # first on every lab command's PATH: nobody else may write here
    download, actual = _download(asset_url, tools_dir, release)
    try:
        for expected, source in ((pinned, "pinned in lab/tools.py"), (published, f"from {checksums_url}")):
            if expected is not None and actual != expected:
                raise LabError(
                    f"Refusing to install {release.name} v{release.version} ({platform_name}): expected SHA-256 "
                    f"{expected} ({source}) but the download has {actual}; try again, and report it if it "
                    "happens again."
                )
        target = tools_dir / release.name
        if release.archive:
            _install_archive(download, tools_dir, release)
        else:
            _install_binary(download, target)
        return target
    finally:
        download.unlink(missing_ok=True)


def ensure_tools(
    tools_dir: Path,
    names: Iterable[str] = ("kind", "kubectl", "pulumi"),
    *,
    env: Mapping[str, str],
    run: Runner = run_captured,
    platform_: tuple[str, str] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Reuse or install each named tool, reporting what was done.

    Args:
        tools_dir: The project-local tools folder; searched before the user's PATH.
        names: Which of kind, kubectl, pulumi are needed.
        env: The user's environment (PATH, base URL overrides, trust switch).
        run: The process runner used to ask tools for their versions.
        platform_: (os, arch) to install for; None detects this machine.
        progress: Receives one line per tool.

    Returns:
        Each tool's executable.

    Raises:
        LabError: When a tool is missing or too old and cannot be installed.
    """
    search_path = os.pathsep.join([str(tools_dir), env.get("PATH", "")])
    executables = {}
    for name in names:
        release = RELEASES[name]
        found = find_tool(release, search_path, run)
        if found is not None and found.satisfies(release):
            progress(f"{name} {version_text(found.version)}: using {found.path}")
            executables[name] = found.path
            continue
        os_name, arch = platform_ or host_platform()
        refuse_unpinned(release, os_name, arch, env)
        reason = "not found" if found is None else f"{found.path} is {version_text(found.version)}"
        progress(f"{name}: {reason}, installing v{release.version} for {os_name}/{arch} into {tools_dir}")
        executables[name] = install(release, tools_dir, os_name, arch, env)
    return executables
