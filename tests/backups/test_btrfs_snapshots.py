"""btrfs snapshots of a target's subvolume: listed, refused or removed and wiped."""

from __future__ import annotations

from plugins.files import FilesPlugin
from tests.backups.conftest import CANARY
from tests.files.conftest import raw_image
from tests.helpers.driver import run_plugin

ALLOW = {"remove_snapshots": ["snaps/*"], "wipe_free_space": True, "keep_root": True}


def snapshot_names(run) -> set[str]:
    return {
        entry.item.attributes["snapshot"]
        for entry in run.planned
        if entry.item.kind == "snapshot"
    }


def test_plan_lists_both_snapshots(snapshot_volume):
    run = run_plugin(FilesPlugin, str(snapshot_volume.subvolume), purge=False)
    assert snapshot_names(run) == {"snaps/data-1", "snaps/data-2"}


def test_plan_shows_time_size_and_scope(snapshot_volume):
    run = run_plugin(FilesPlugin, str(snapshot_volume.subvolume), purge=False)
    snapshot = next(e.item for e in run.planned if e.item.kind == "snapshot")
    assert snapshot.attributes["created"].startswith("20")
    assert snapshot.attributes["size"] >= snapshot_volume.canary_file.stat().st_size
    assert "removing it destroys every file in it" in snapshot.attributes["covers"]


def test_without_permission_refused_and_intact(snapshot_volume):
    before = snapshot_volume.canary_file.read_bytes()
    run = run_plugin(
        FilesPlugin,
        str(snapshot_volume.subvolume),
        options={"wipe_free_space": True, "keep_root": True},
    )
    reasons = run.refusal_reasons()
    assert reasons["snapshot:btrfs:snaps/data-1"] == "copy-kept"
    assert reasons["snapshot:btrfs:snaps/data-2"] == "copy-kept"
    assert reasons[str(snapshot_volume.canary_file)] == "copy-on-write"
    refusal = next(
        e.decision.refusal for e in run.refused if e.item.key.endswith("data-1")
    )
    assert "snaps/data-1" in refusal.detail
    assert run.results == []
    for snapshot in snapshot_volume.snapshots:
        assert (snapshot / "c.csv").read_bytes() == before
    assert snapshot_volume.canary_file.read_bytes() == before


def test_removal_and_wipe_leave_no_canary(snapshot_volume):
    image = snapshot_volume.filesystem
    assert raw_image(image).count(CANARY.encode()) > 0  # control
    run = run_plugin(
        FilesPlugin,
        str(snapshot_volume.subvolume),
        options=ALLOW,
        settings={"scan_device": True},
    )
    assert run.refused == []
    assert set(run.statuses().values()) == {"purged"}
    assert {r.key: r.status for r in run.completion}["wipe-free-space"] == "purged"
    assert run.unverified() == []
    for snapshot in snapshot_volume.snapshots:
        assert not snapshot.exists()
    assert raw_image(image).count(CANARY.encode()) == 0


def test_removal_without_wipe_leaves_canary(snapshot_volume):
    """Control: removing snapshots and the file without the wipe leaves the bytes."""
    image = snapshot_volume.filesystem
    run = run_plugin(
        FilesPlugin,
        str(snapshot_volume.subvolume),
        options=ALLOW,
        settings={"scan_device": True},
        purge=False,
    )
    from plugins.base import JobContext, Target

    plugin = FilesPlugin(
        Target(str(snapshot_volume.subvolume), ALLOW), JobContext(dry_run=False)
    )
    plugin.describe()
    for entry in run.permitted:
        plugin.copies.purge(entry)
    assert raw_image(image).count(CANARY.encode()) > 0
