"""Parsing of btrfs-progs 6.2 output, captured from a loop-device filesystem."""

from __future__ import annotations

from datetime import datetime, timedelta

from plugins import snapshots

LIST_OUTPUT = (
    "ID 257 gen 7 cgen 7 top level 5 otime 2026-12-04 16:49:45 "
    "parent_uuid 01984f33-7406-3d45-9962-71999d212864 "
    "uuid d3958e95-567e-7f4d-a97b-af6129c8fde0 path snaps/s1\n"
)
SHOW_OUTPUT = """snaps/s1
\tName: \t\t\ts1
\tUUID: \t\t\td3958e95-567e-7f4d-a97b-af6129c8fde0
\tParent UUID: \t\t01984f33-7406-3d45-9962-71999d212864
\tReceived UUID: \t\t-
\tCreation time: \t\t2026-12-04 16:49:45 +0000
\tSubvolume ID: \t\t257
\tFlags: \t\t\treadonly
\tSnapshot(s):
"""


def test_list_line_fields():
    (entry,) = snapshots.parse_btrfs_list(LIST_OUTPUT)
    assert entry["parent"] == "01984f33-7406-3d45-9962-71999d212864"
    assert entry["uuid"] == "d3958e95-567e-7f4d-a97b-af6129c8fde0"
    assert entry["path"] == "snaps/s1"
    assert entry["otime"] == "2026-12-04 16:49:45"


def test_show_fields():
    fields = snapshots.parse_btrfs_show(SHOW_OUTPUT)
    assert fields["UUID"] == "d3958e95-567e-7f4d-a97b-af6129c8fde0"
    assert fields["Creation time"] == "2026-12-04 16:49:45 +0000"
    assert "Snapshot(s)" not in fields


def test_list_time_read_as_local():
    """``list`` prints otime in local time without a zone."""
    converted = snapshots.btrfs_time("2026-12-04 16:49:45")
    assert datetime.fromisoformat(converted).utcoffset() == timedelta(0)


def test_show_time_to_iso():
    assert (
        snapshots.btrfs_time("2026-12-04 16:49:45 +0000") == "2026-12-04T16:49:45+00:00"
    )
