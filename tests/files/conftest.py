"""Fixtures for the local-files plugin tests: filesystems on loop devices."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.files import FilesPlugin
from tests.conftest import require_root, require_tool
from tests.helpers.driver import DriverRun, run_plugin
from tests.helpers.loopfs import LoopFilesystem, loop_filesystem

MKFS_TOOL = {"ext4": "mkfs.ext4", "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs"}


def raw_image(filesystem: LoopFilesystem) -> bytes:
    """Return the image file's bytes after flushing the filesystem.

    The image is read through its own file rather than the loop device, so a
    block-device page cache filled by an earlier read cannot return stale data.
    """
    os.sync()
    subprocess.run(["blockdev", "--flushbufs", filesystem.device], check=False)
    return filesystem.image.read_bytes()


def make_filesystem(
    tmp_path: Path, fstype: str, size_mib: int = 64
) -> Iterator[LoopFilesystem]:
    require_root()
    require_tool(MKFS_TOOL[fstype])
    require_tool("losetup")
    with loop_filesystem(tmp_path, fstype, size_mib) as filesystem:
        yield filesystem


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[LoopFilesystem]:
    yield from make_filesystem(tmp_path, "ext4")


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[LoopFilesystem]:
    yield from make_filesystem(tmp_path, "xfs")


@pytest.fixture
def btrfs(tmp_path: Path) -> Iterator[LoopFilesystem]:
    yield from make_filesystem(tmp_path, "btrfs")


def purge(path: Path | str, options: dict | None = None, **settings) -> DriverRun:
    """Plan, purge and verify one path target with the files plugin."""
    return run_plugin(FilesPlugin, str(path), options=options, settings=settings)


def plan(path: Path | str, options: dict | None = None, **settings) -> DriverRun:
    """Plan one path target without purging."""
    return run_plugin(
        FilesPlugin, str(path), options=options, settings=settings, purge=False
    )


def canary_lines(tag: str, count: int) -> bytes:
    """Return ``count`` distinct lines that all contain ``tag``."""
    return b"".join(
        f"{tag}-{index:06d} customer record line\n".encode() for index in range(count)
    )
