"""Snapshot bad input: a missing tool, a snapshot gone before the purge."""

from __future__ import annotations

import subprocess
from pathlib import Path

from agent.config import Config
from agent.engine import Engine
from agent.registry import Registry
from plugins.base import Target
from plugins.files import FilesPlugin
from tests.helpers.driver import run_plugin

ALLOW = {"remove_snapshots": ["snaps/*"], "wipe_free_space": True, "keep_root": True}


def test_missing_btrfs_tool_refuses_listing(snapshot_volume, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    run = run_plugin(
        FilesPlugin, str(snapshot_volume.subvolume), options=ALLOW, purge=False
    )
    listing = [e for e in run.refused if e.item.kind == "snapshot-listing"]
    assert len(listing) == 1
    detail = listing[0].decision.refusal.detail
    assert "the btrfs command is not installed or not on PATH" in detail
    assert "install btrfs-progs" in detail


def test_missing_btrfs_tool_keeps_file(snapshot_volume, tmp_path, monkeypatch):
    """Unknown snapshots might share the file's blocks, so the file is refused too."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    run = run_plugin(
        FilesPlugin, str(snapshot_volume.subvolume), options=ALLOW, purge=False
    )
    reasons = run.refusal_reasons()
    assert reasons[str(snapshot_volume.canary_file)] == "copy-on-write"


def engine_for(state_dir: Path) -> Engine:
    state_dir.mkdir(mode=0o700)
    registry = Registry()
    registry.add(FilesPlugin)
    return Engine(Config(), state_dir, registry=registry)


def test_vanished_snapshot_fails_alone(snapshot_volume, tmp_path):
    engine = engine_for(tmp_path / "state")
    try:
        target = Target(str(snapshot_volume.subvolume), ALLOW)
        job_id = engine.plan([target], {"scan_device": False}, dry_run=False)
        subprocess.run(
            ["btrfs", "subvolume", "delete", str(snapshot_volume.snapshots[0])],
            check=True,
            capture_output=True,
        )
        outcome = engine.purge(job_id)
        rows = {row.key: row for row in engine.journal.items(job_id)}
    finally:
        engine.close()
    gone = rows["snapshot:btrfs:snaps/data-1"]
    assert outcome.exit_code == 2
    assert gone.state == "failed"
    assert "disappeared between plan and purge; nothing was removed" in gone.detail
    assert rows["snapshot:btrfs:snaps/data-2"].state == "verified"
    assert outcome.certificate is None


def test_vanished_snapshot_touches_nothing_else(snapshot_volume, tmp_path):
    """Only planned items change: an unplanned snapshot made after the plan stays."""
    engine = engine_for(tmp_path / "state")
    late = snapshot_volume.filesystem.mountpoint / "late"
    try:
        target = Target(str(snapshot_volume.subvolume), ALLOW)
        job_id = engine.plan([target], {"scan_device": False}, dry_run=False)
        subprocess.run(
            [
                "btrfs",
                "subvolume",
                "snapshot",
                "-r",
                str(snapshot_volume.subvolume),
                str(late),
            ],
            check=True,
            capture_output=True,
        )
        engine.purge(job_id)
        keys = {row.key for row in engine.journal.items(job_id)}
    finally:
        engine.close()
    assert (late / "c.csv").exists()
    assert "snapshot:btrfs:late" not in keys
