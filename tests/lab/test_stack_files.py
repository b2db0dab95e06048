"""The tracked stack files stay as the user wrote them, whatever pulumi writes into them while it runs."""

from pathlib import Path

from lab import cli, stack_files

L7 = b"# Adds a waypoint.\nconfig:\n  istio-ambient-lab:meshMode: l7\n"


def _stacks(tmp_path: Path) -> Path:
    folder = tmp_path / "stacks"
    folder.mkdir()
    (folder / "Pulumi.l7.yaml").write_bytes(L7)
    return folder


def test_a_salt_pulumi_adds_is_taken_out_and_comments_come_back(tmp_path):
    folder = _stacks(tmp_path)
    with stack_files.salt_kept_out(folder):
        # What pulumi's first `stack init` does: re-serialise the file (no comment) with a salt on top.
        (folder / "Pulumi.l7.yaml").write_bytes(b"encryptionsalt: v1:abc:v1:def:ghi\nconfig:\n  istio-ambient-lab:meshMode: l7\n")
    assert (folder / "Pulumi.l7.yaml").read_bytes() == L7


def test_a_real_config_change_stays_without_the_salt(tmp_path):
    folder = _stacks(tmp_path)
    with stack_files.salt_kept_out(folder):
        (folder / "Pulumi.l7.yaml").write_bytes(
            b"encryptionsalt: v1:abc\nconfig:\n  istio-ambient-lab:meshMode: l7\n  istio-ambient-lab:workers: 1\n")
    assert (folder / "Pulumi.l7.yaml").read_bytes() == b"config:\n  istio-ambient-lab:meshMode: l7\n  istio-ambient-lab:workers: 1\n"


def test_a_new_stack_file_pulumi_creates_has_no_salt(tmp_path):
    folder = _stacks(tmp_path)
    with stack_files.salt_kept_out(folder):
        (folder / "Pulumi.mine.yaml").write_bytes(b"encryptionsalt: v1:abc\n")
    assert (folder / "Pulumi.mine.yaml").read_bytes() == b""


def test_a_stale_salt_left_from_an_earlier_run_goes_before_pulumi_runs(tmp_path):
    folder = _stacks(tmp_path)
    (folder / "Pulumi.l7.yaml").write_bytes(b"encryptionsalt: v1:old\n" + L7)
    seen = []
    with stack_files.salt_kept_out(folder):
        seen.append((folder / "Pulumi.l7.yaml").read_bytes())
    assert seen == [L7]
    assert (folder / "Pulumi.l7.yaml").read_bytes() == L7


def test_pulumi_reads_the_salt_from_the_state(tmp_path):
    env = cli.pulumi_env(cli.Paths(tmp_path), {})
    assert env[stack_files.FALLBACK_ENV] == "true"


def test_every_lab_command_keeps_the_tracked_stack_files(tmp_path, monkeypatch):
    folder = _stacks(tmp_path)

    def pulumi_writes_a_salt():
        (folder / "Pulumi.l7.yaml").write_bytes(b"encryptionsalt: v1:abc\nconfig:\n  istio-ambient-lab:meshMode: l7\n")
        return 0

    monkeypatch.setattr(cli, "cmd_pulumi", lambda ctx, args: pulumi_writes_a_salt())
    assert cli.main(["pulumi", "stack", "init", "l7"], cli.Context(cli.Paths(tmp_path), env={})) == 0
    assert (folder / "Pulumi.l7.yaml").read_bytes() == L7


def test_pulumis_rewrite_of_the_same_values_as_strings_gets_the_users_bytes_back(tmp_path):
    """Found by the engine tier: the real CLI re-serialises `ingressHostPort: 8081` as `"8081"` (and booleans as
    strings) when it adds the salt; that is the same config, so the user's own file comes back."""
    folder = tmp_path / "stacks"
    folder.mkdir()
    mine = b"config:\n  istio-ambient-lab:ingressHostPort: 8081\n  istio-ambient-lab:verify: false\n"
    (folder / "Pulumi.l7.yaml").write_bytes(mine)
    with stack_files.salt_kept_out(folder):
        (folder / "Pulumi.l7.yaml").write_bytes(b'encryptionsalt: v1:abc\nconfig:\n  istio-ambient-lab:ingressHostPort: '
                                                b'"8081"\n  istio-ambient-lab:verify: "false"\n')
    assert (folder / "Pulumi.l7.yaml").read_bytes() == mine
