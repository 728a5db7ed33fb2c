"""The local-files plugin through the real ``lethe`` command on loop-device images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.files.conftest import canary_lines, raw_image

CANARY = "LETHE-CANARY-CLI"


@pytest.fixture
def lethe(tmp_path: Path):
    """Run the installed ``lethe`` command with a state directory of its own."""
    command = shutil.which("lethe") or str(Path(os.sys.executable).parent / "lethe")

    def run(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LETHE_STATE_DIR": str(tmp_path / "state"), **environment}
        return subprocess.run(
            [command, *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=300,
        )

    return run


def make_exports(root: Path) -> Path:
    target = root / "exports"
    (target / "2024").mkdir(parents=True)
    (target / "2024" / "customers-jane-doe.csv").write_bytes(
        canary_lines(CANARY, 3_000)
    )
    (target / "summary.txt").write_bytes(canary_lines(CANARY + "-SUMMARY", 100))
    os.sync()
    return target


def test_cli_plan_lists_refusals(lethe, ext4):
    target = make_exports(ext4.mountpoint)
    (target / "link-out").symlink_to("/etc/hostname")
    os.mkfifo(target / "pipe")
    result = lethe("plan", str(target))
    assert result.returncode == 1
    assert "refused (symlink)" in result.stdout
    assert "refused (special-file)" in result.stdout
    assert "ext4 journal" in result.stdout
    assert (target / "2024" / "customers-jane-doe.csv").exists()


def test_cli_purge_destroys_and_certifies(lethe, ext4):
    target = make_exports(ext4.mountpoint)
    result = lethe("purge", "--yes", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "destroyed and verified 4" in result.stdout
    assert not target.exists()
    assert raw_image(ext4).count(CANARY.encode()) == 0
    certificate = re.search(r"certificate: (\S+\.json)", result.stdout).group(1)
    assert lethe("certificate", "verify", certificate).returncode == 0


def test_cli_xfs_purge(lethe, xfs):
    target = make_exports(xfs.mountpoint)
    result = lethe("purge", "--yes", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not target.exists()
    assert raw_image(xfs).count(CANARY.encode()) == 0


def test_cli_readback_mismatch_exits_two(lethe, ext4):
    target = make_exports(ext4.mountpoint)
    result = lethe(
        "purge", "--yes", str(target), LETHE_TEST_INJECT_READBACK_MISMATCH="1"
    )
    assert result.returncode == 2
    assert "failed 2" in result.stdout  # both files; the directories verify
    assert "no certificate was issued" in result.stdout


def test_cli_btrfs_refused(lethe, btrfs):
    target = make_exports(btrfs.mountpoint)
    result = lethe("purge", "--yes", str(target))
    assert result.returncode == 1
    assert "copy-on-write" in result.stdout
    assert (target / "2024" / "customers-jane-doe.csv").read_bytes() == canary_lines(
        CANARY, 3_000
    )


def test_cli_missing_target_exits_three(lethe, tmp_path):
    result = lethe("plan", str(tmp_path / "no-such-exports"))
    assert result.returncode == 3
    assert "no-such-exports does not exist" in result.stdout + result.stderr
