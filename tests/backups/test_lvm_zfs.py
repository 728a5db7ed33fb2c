"""LVM and ZFS snapshots, parsed and planned from command output fixtures.

Device-mapper and the ZFS kernel module are not available on the test
machine, so no logical volume or dataset can be created here. These tests
run the real parsing, planning and removal code against small stand-in
``lvs``, ``lvremove`` and ``zfs`` scripts that print the fixture files in
tests/backups/fixtures and record the arguments they were called with.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from plugins import snapshots
from plugins.base import Method

FIXTURES = Path(__file__).parent / "fixtures"
LVS = (FIXTURES / "lvs-report.json").read_text()
ZFS = (FIXTURES / "zfs-list-snapshots.txt").read_text()


def stand_in(directory: Path, name: str, listing: Path, calls: Path) -> None:
    """Write a script that records its arguments and prints ``listing`` for lists."""
    script = directory / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'case "$1" in list|--reportformat) ;; *) exit 0 ;; esac\n'
        f"/bin/cat {listing}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch) -> Path:
    """Put stand-in lvs, lvremove and zfs first on PATH; return the call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    calls.touch()
    stand_in(bin_dir, "lvs", FIXTURES / "lvs-report.json", calls)
    stand_in(bin_dir, "lvremove", FIXTURES / "lvs-report.json", calls)
    stand_in(bin_dir, "zfs", FIXTURES / "zfs-list-snapshots.txt", calls)
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def test_lvs_snapshots_of_origin_only():
    found = snapshots.lvm_snapshots_from(
        snapshots.parse_lvs(LVS), "/dev/mapper/vg0-data"
    )
    assert {s.name for s in found} == {"vg0/data-nightly", "vg0/data-before-upgrade"}


def test_lvs_time_size_and_id():
    found = snapshots.lvm_snapshots_from(snapshots.parse_lvs(LVS), "/dev/vg0/data")
    nightly = next(s for s in found if s.name == "vg0/data-nightly")
    assert nightly.created == "2024-05-02T01:00:00+00:00"
    assert nightly.size == 1073741824
    assert nightly.ident == "Xk2g4d-1111-2222-3333-4444-5555-666666"
    assert nightly.origin == "vg0/data"


def test_lvs_unrelated_device_has_none():
    found = snapshots.lvm_snapshots_from(snapshots.parse_lvs(LVS), "/dev/mapper/other")
    assert found == []


def test_zfs_snapshots_of_dataset_only():
    found = snapshots.parse_zfs_list(ZFS, "tank/data")
    assert [s.name for s in found] == [
        "tank/data@auto-2024-05-01",
        "tank/data@before-migration",
    ]


def test_zfs_time_and_size():
    found = snapshots.parse_zfs_list(ZFS, "tank/data")
    assert found[1].created == "2024-04-10T17:00:12+00:00"
    assert found[1].size == 41943040
    assert found[1].ident == "9912034456123098723"


def test_lvm_plan_permits_named_only(tools):
    items = list(
        snapshots.discover("/srv/data", "ext4", "/srv", "/", "/dev/mapper/vg0-data")
    )
    decisions = {
        i.attributes["snapshot"]: snapshots.plan(i, ["vg0/data-nightly"]) for i in items
    }
    assert decisions["vg0/data-nightly"].method == Method.REMOVE_SNAPSHOTS
    assert decisions["vg0/data-before-upgrade"].refusal.reason == "copy-kept"
    assert (
        "vg0/data-before-upgrade" in decisions["vg0/data-before-upgrade"].refusal.detail
    )


def test_lvm_plan_states_whole_volume(tools):
    item = next(
        iter(
            snapshots.discover("/srv/data", "ext4", "/srv", "/", "/dev/mapper/vg0-data")
        )
    )
    decision = snapshots.plan(item, ["vg0/*"])
    assert "whole logical volume vg0/data" in decision.residual[0]


def test_lvm_remove_runs_lvremove(tools):
    mount = ("ext4", "/srv", "/", "/dev/mapper/vg0-data")
    items = list(snapshots.discover("/srv/data", *mount))
    item = next(i for i in items if i.attributes["snapshot"] == "vg0/data-nightly")
    result = snapshots.remove(item, mount)
    assert result.status == "purged"
    assert "--yes vg0/data-nightly" in tools.read_text().splitlines()


def test_zfs_remove_runs_destroy(tools):
    mount = ("zfs", "/tank/data", "/", "tank/data")
    items = list(snapshots.discover("/tank/data/x", *mount))
    item = next(
        i for i in items if i.attributes["snapshot"].endswith("@before-migration")
    )
    result = snapshots.remove(item, mount)
    assert result.status == "purged"
    assert "destroy tank/data@before-migration" in tools.read_text().splitlines()


def test_zfs_replaced_snapshot_not_removed(tools):
    mount = ("zfs", "/tank/data", "/", "tank/data")
    item = next(iter(snapshots.discover("/tank/data/x", *mount)))
    changed = type(item)(**{**item.__dict__, "identity": {"tool": "zfs", "id": "1"}})
    result = snapshots.remove(changed, mount)
    assert result.status == "failed"
    assert "replaced after planning" in result.detail
    assert not any(
        line.startswith("destroy") for line in tools.read_text().splitlines()
    )


def test_lvs_missing_refuses_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    items = list(
        snapshots.discover("/srv/data", "ext4", "/srv", "/", "/dev/mapper/vg0-data")
    )
    assert [i.kind for i in items] == ["snapshot-listing"]
    detail = items[0].attributes["refusal"]["detail"]
    assert "the lvs command is not installed or not on PATH; install lvm2" in detail
