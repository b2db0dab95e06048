"""Everything under .lab/ is private from the moment it exists, whatever the umask, and no write follows a link."""

import os
import stat

import pytest

from lab import private


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_folders_are_0700_under_umask_000(tmp_path, open_umask):
    folder = private.private_dir(tmp_path / "project" / ".lab" / "reports")
    assert mode(tmp_path / "project" / ".lab") == 0o700 and mode(folder) == 0o700
    (tmp_path / "project" / ".lab").chmod(0o777)
    private.private_dir(tmp_path / "project" / ".lab" / "tools")
    assert mode(tmp_path / "project" / ".lab") == 0o700, "an existing .lab/ is tightened too"


def test_files_are_0600_under_umask_000(tmp_path, open_umask):
    path = private.write_private(tmp_path / ".lab" / "reports" / "l7.json", "{}")
    assert mode(path) == 0o600 and path.read_text() == "{}"
    assert os.listdir(path.parent) == ["l7.json"], "no temporary file left"


def test_a_symlink_planted_at_the_destination_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".lab" / "reports").mkdir(parents=True)
    (tmp_path / ".lab" / "reports" / "l7.json").symlink_to(victim)
    private.write_private(tmp_path / ".lab" / "reports" / "l7.json", "report")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / ".lab" / "reports" / "l7.json").is_symlink()


def test_a_symlinked_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".lab").mkdir()
    (tmp_path / ".lab" / "tools").symlink_to(elsewhere)
    with pytest.raises(OSError, match="is a symlink"):
        private.private_dir(tmp_path / ".lab" / "tools")


def test_the_state_and_passphrase_are_private_under_umask_000(tmp_path, open_umask):
    from lab import cli

    paths = cli.Paths(tmp_path)
    cli.pulumi_env(paths, {})
    assert mode(paths.lab) == 0o700 and mode(paths.state) == 0o700 and mode(paths.passphrase) == 0o600


def test_a_passphrase_symlink_is_replaced_not_read_or_followed(tmp_path):
    from lab import cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("someone else's passphrase\n")
    (tmp_path / ".lab").mkdir()
    (tmp_path / ".lab" / "passphrase").symlink_to(elsewhere)
    cli.ensure_passphrase(tmp_path / ".lab" / "passphrase")
    assert not (tmp_path / ".lab" / "passphrase").is_symlink()
    assert elsewhere.read_text() == "someone else's passphrase\n"


def test_diagnostics_are_private(tmp_path, open_umask):
    """Diagnostics and the verify report write through write_private (tested above); a whole collect, end to end."""
    from lab import diagnostics

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kind", "kubectl"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    folder = diagnostics.collect(tmp_path / ".lab" / "diagnostics", target="kind", cluster_name="none",
                                 apps_namespace="default", kubeconfig=None, context=None,
                                 env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert mode(tmp_path / ".lab") == 0o700 and mode(folder) == 0o700 and mode(folder / "summary.txt") == 0o600



def test_a_folder_outside_lab_is_the_users_and_left_as_it_is(tmp_path):
    """`verify --report-file /tmp/r.json`: /tmp keeps its mode, and may be a symlink (it is one on macOS)."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    (tmp_path / "link").symlink_to(mine)
    path = private.write_private(tmp_path / "link" / "report.json", "{}")
    assert path.read_text() == "{}" and mode(path) == 0o600
    assert mode(mine) == 0o755


def test_a_lab_folder_of_another_user_is_refused_in_one_sentence(tmp_path, monkeypatch):
    """Another user who owns `.lab/` could replace a tool first on the lab's PATH, or read the passphrase."""
    (tmp_path / ".lab").mkdir()
    me = os.getuid()
    monkeypatch.setattr(private.os, "getuid", lambda: me + 1)  # so `.lab/` is someone else's
    with pytest.raises(private.NotPrivate) as refused:
        private.write_private(tmp_path / ".lab" / "passphrase", "secret")
    assert str(refused.value) == (
        f"{tmp_path / '.lab'} belongs to another user (uid {me}), who could replace the lab's tools or read its "
        f"secrets there; run the lab from a checkout of your own, or have that user remove {tmp_path / '.lab'}.")
    assert not (tmp_path / ".lab" / "passphrase").exists()
    monkeypatch.setattr(private.os, "getuid", lambda: me)
    assert private.private_dir(tmp_path / ".lab" / "tools").is_dir(), "the owner's own .lab/ is fine"
