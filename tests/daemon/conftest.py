"""Fixtures for the daemon tests: a tmpfs for targets and a daemon rig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.rig import DaemonRig, mount_tmpfs, unmount


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "fs"
    mount_tmpfs(mount_point, "128m")
    try:
        yield mount_point
    finally:
        unmount(mount_point)


@pytest.fixture
def rig(tmp_path: Path, tmpfs: Path) -> Iterator[DaemonRig]:
    rig = DaemonRig(tmp_path, tmpfs)
    try:
        yield rig
    finally:
        rig.close()
