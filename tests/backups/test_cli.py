"""Snapshots through the ``lethe`` command: plan summary, purge and certificate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.backups.conftest import CANARY
from tests.files.conftest import raw_image


@pytest.fixture
def lethe(tmp_path: Path):
    command = shutil.which("lethe") or str(Path(os.sys.executable).parent / "lethe")

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LETHE_STATE_DIR": str(tmp_path / "state")}
        return subprocess.run(
            [command, *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=300,
        )

    return run


def write_config(tmp_path: Path, subvolume: Path, remove: list[str]) -> str:
    config = tmp_path / "lethe.yaml"
    options = {"remove_snapshots": remove, "wipe_free_space": True, "keep_root": True}
    config.write_text(
        yaml.safe_dump({"targets": [{"url": str(subvolume), "options": options}]})
    )
    return str(config)


def test_cli_plan_lists_kept_snapshots(lethe, snapshot_volume, tmp_path):
    config = write_config(tmp_path, snapshot_volume.subvolume, [])
    result = lethe("plan", "-c", config, "--json")
    summary = json.loads(result.stdout)
    copies = {copy["key"]: copy for copy in summary["copies"]}
    assert result.returncode == 1
    assert set(copies) == {"snapshot:btrfs:snaps/data-1", "snapshot:btrfs:snaps/data-2"}
    assert copies["snapshot:btrfs:snaps/data-1"]["reason"] == "copy-kept"


def test_cli_plan_text_names_snapshot(lethe, snapshot_volume, tmp_path):
    config = write_config(tmp_path, snapshot_volume.subvolume, [])
    result = lethe("plan", "-c", config)
    assert "btrfs snapshot snaps/data-2 (created 20" in result.stdout
    assert "): kept (copy-kept)" in result.stdout


def test_cli_purge_certifies_removed_snapshots(lethe, snapshot_volume, tmp_path):
    config = write_config(tmp_path, snapshot_volume.subvolume, ["snaps/*"])
    result = lethe("purge", "-c", config, "--yes", "--json")
    outcome = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    certificate = json.loads(Path(outcome["certificate"]).read_text())
    states = {copy["key"]: copy["state"] for copy in certificate["copies"]}
    assert states == {
        "snapshot:btrfs:snaps/data-1": "verified",
        "snapshot:btrfs:snaps/data-2": "verified",
    }
    assert raw_image(snapshot_volume.filesystem).count(CANARY.encode()) == 0
