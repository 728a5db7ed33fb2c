"""Sectors that cannot be written are counted and reported with their offsets.

Device-mapper's error target is not available on the test machine. Instead
the loop device sits on a sparse file inside a filesystem that is full. The
allocated first 2 MiB take writes. Every write into the holes fails in the
loop driver with ENOSPC, which reaches the purge as EIO.
"""

from __future__ import annotations

import errno
import os

from plugins.block import BlockPlugin
from tests.block.conftest import attach, detach
from tests.helpers.driver import run_plugin
from tests.helpers.loopfs import loop_filesystem

MIB = 1024 * 1024


def fill_up(directory) -> None:
    """Write a file until the filesystem has no free block left."""
    block = b"\0" * (64 * 1024)
    with open(directory / "filler", "wb", buffering=0) as handle:
        for size in (64 * 1024, 4096):
            while True:
                try:
                    handle.write(block[:size])
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
        os.fsync(handle.fileno())


def test_write_errors_counted_with_offsets(tmp_path):
    with loop_filesystem(tmp_path, "ext4", 16) as filesystem:
        backing = filesystem.mountpoint / "backing.img"
        with open(backing, "wb") as handle:
            handle.write(os.urandom(2 * MIB))
            handle.truncate(6 * MIB)
            os.fsync(handle.fileno())
        fill_up(filesystem.mountpoint)
        device = attach(backing)
        try:
            run = run_plugin(BlockPlugin, f"block://{device}")
        finally:
            detach(device)

    result = run.results[0]
    failed = result.facts["passes"][0]["failed_sectors"]
    assert result.status == "failed"
    assert failed > 0
    assert failed <= 4 * MIB // 512
    assert int(result.facts["passes"][0]["failed_offsets"][0], 16) >= 2 * MIB
    assert f"could not write {failed} sector(s)" in result.detail
    assert run.evidence == []
