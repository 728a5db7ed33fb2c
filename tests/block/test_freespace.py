"""Free-space wipe of ext4 images after plain rm of canary files."""

from __future__ import annotations

import os
from pathlib import Path

from plugins import freespace
from plugins.base import JobContext, Method
from plugins.freespace import FILL_PREFIX, device_of, scan_device, wipe_free_space
from tests.conftest import require_root
from tests.helpers.loopfs import loop_filesystem

CANARY = b"LETHE-FREE-SPACE-CANARY name=Grace Hopper ssn=078-05-1120 "


def write_canaries(directory: Path, files: int = 20) -> list[bytes]:
    """Write files full of numbered canary lines, sync them, and rm them plainly."""
    owned = []
    for index in range(files):
        line = CANARY + f"file={index:03d}\n".encode()
        path = directory / f"export-{index:03d}.csv"
        with open(path, "wb") as handle:
            handle.write(line * 2000)
            handle.flush()
            os.fsync(handle.fileno())
        owned.append(line)
    os.sync()
    for index in range(files):
        os.unlink(directory / f"export-{index:03d}.csv")
    os.sync()
    return owned


def leftovers(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(FILL_PREFIX)]


def test_wipe_removes_deleted_canaries(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 32) as filesystem:
        lines = write_canaries(filesystem.mountpoint)
        fingerprints = {"canaries": [CANARY]}
        before = scan_device(filesystem.device, fingerprints)
        assert len(before) >= 20  # control: plain rm leaves the canaries

        result = wipe_free_space(
            str(filesystem.mountpoint), JobContext(job_id="test", dry_run=False)
        )

        after = scan_device(filesystem.device, fingerprints)
        left = leftovers(filesystem.mountpoint)
        assert device_of(str(filesystem.mountpoint)) == os.path.realpath(
            filesystem.device
        )

    assert result.status == "purged"
    assert result.method is Method.WIPE_FREE_SPACE
    assert after == []
    assert left == []
    assert result.bytes >= 0.9 * result.facts["free_before"]
    assert result.facts["reserved_included"] is True
    assert 0 <= result.facts["full_for_seconds"] < 60
    assert any("journal" in entry for entry in result.facts["unreachable"])
    assert len(lines) == 20


def test_wipe_covers_root_reserved_space(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 32) as filesystem:
        result = wipe_free_space(
            str(filesystem.mountpoint), JobContext(job_id="test", dry_run=False)
        )

    reserved = result.facts["free_before"] - result.facts["free_for_users_before"]
    assert reserved > 0
    assert result.bytes > result.facts["free_for_users_before"]


def test_wipe_stops_when_another_writer_needs_space(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 64) as filesystem:
        intruder = filesystem.mountpoint / "database.wal"
        calls = []

        def other_process_writes(done: int) -> None:
            # The progress hook runs between two fill chunks; a write of
            # 8 MiB here simulates another process growing a file.
            calls.append(done)
            if len(calls) == 1:
                with open(intruder, "wb") as handle:
                    handle.write(os.urandom(8 * 1024 * 1024))
                    os.fsync(handle.fileno())

        context = JobContext(
            job_id="test", dry_run=False, progress=other_process_writes
        )
        result = wipe_free_space(str(filesystem.mountpoint), context)
        left = leftovers(filesystem.mountpoint)
        intruder_size = intruder.stat().st_size

    assert result.status == "failed"
    assert "another process wrote" in result.detail
    assert left == []
    assert intruder_size == 8 * 1024 * 1024


def test_wipe_stop_request_cleans_up(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 32) as filesystem:
        chunks = []
        context = JobContext(
            job_id="test",
            dry_run=False,
            progress=chunks.append,
            should_stop=lambda: len(chunks) >= 2,
        )
        result = wipe_free_space(str(filesystem.mountpoint), context)
        left = leftovers(filesystem.mountpoint)

    assert result.status == "failed"
    assert "stopped on request" in result.detail
    assert left == []


def test_wipe_cleans_up_after_error(tmp_path, monkeypatch):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 16) as filesystem:
        real_pwrite = os.pwrite
        writes = []

        def failing_pwrite(descriptor, data, offset):
            writes.append(offset)
            if len(writes) == 3:
                raise OSError(5, "Input/output error")
            return real_pwrite(descriptor, data, offset)

        monkeypatch.setattr(freespace.os, "pwrite", failing_pwrite)
        result = wipe_free_space(
            str(filesystem.mountpoint), JobContext(job_id="test", dry_run=False)
        )
        monkeypatch.undo()
        left = leftovers(filesystem.mountpoint)

    assert result.status == "failed"
    assert "Input/output error" in result.detail
    assert left == []


def test_wipe_dry_run_writes_nothing(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 16) as filesystem:
        before = os.statvfs(filesystem.mountpoint).f_bfree
        result = wipe_free_space(
            str(filesystem.mountpoint), JobContext(job_id="test", dry_run=True)
        )
        after = os.statvfs(filesystem.mountpoint).f_bfree

    assert result.status == "blocked"
    assert result.detail.startswith("dry run: would fill")
    assert after == before


def test_wipe_walks_up_from_removed_directory(tmp_path):
    require_root()
    with loop_filesystem(tmp_path, "ext4", 16) as filesystem:
        gone = filesystem.mountpoint / "exports" / "2024"
        result = wipe_free_space(str(gone), JobContext(job_id="test", dry_run=False))

    assert result.status == "purged"
