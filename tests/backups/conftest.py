"""Fixtures for snapshot and backup tests: a btrfs volume with snapshots."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool
from tests.files.conftest import canary_lines
from tests.helpers.loopfs import LoopFilesystem, loop_filesystem

CANARY = "LETHE-SNAPSHOT-CANARY-5d1e"
#: Lines of canary text in the file; about 300 KiB, far above the size btrfs
#: stores inline in metadata, so the data sits in data extents.
CANARY_LINES = 8_000


@dataclass(frozen=True)
class SnapshotVolume:
    """A btrfs filesystem with subvolume ``data`` and two read-only snapshots."""

    filesystem: LoopFilesystem
    subvolume: Path
    canary_file: Path
    snapshots: tuple[Path, ...]


def btrfs(*arguments: str) -> None:
    subprocess.run(["btrfs", *arguments], check=True, capture_output=True)


@pytest.fixture
def snapshot_volume(tmp_path: Path) -> Iterator[SnapshotVolume]:
    require_root()
    require_tool("mkfs.btrfs")
    require_tool("btrfs")
    require_tool("losetup")
    with loop_filesystem(tmp_path, "btrfs", 160) as filesystem:
        subvolume = filesystem.mountpoint / "data"
        btrfs("subvolume", "create", str(subvolume))
        # A name shorter than the shortest fingerprinted token: btrfs keeps
        # names in metadata blocks, which a data-block wipe does not reach.
        canary_file = subvolume / "c.csv"
        canary_file.write_bytes(canary_lines(CANARY, CANARY_LINES))
        (filesystem.mountpoint / "snaps").mkdir()
        snapshots = []
        for name in ("data-1", "data-2"):
            snapshot = filesystem.mountpoint / "snaps" / name
            btrfs("subvolume", "snapshot", "-r", str(subvolume), str(snapshot))
            snapshots.append(snapshot)
        btrfs("filesystem", "sync", str(filesystem.mountpoint))
        yield SnapshotVolume(filesystem, subvolume, canary_file, tuple(snapshots))
