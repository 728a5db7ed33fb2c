"""Content that a purged file shares with files that stay.

The raw scan finds a purged file's fingerprints inside an identical file
outside the target. Those hits are explained by the live file and do not
fail verification; a copy of the same bytes in free space still does.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from plugins._files import attribute
from plugins._files.extents import fiemap
from tests.files.conftest import canary_lines, make_filesystem, purge, raw_image

CANARY = "LETHE-SHARED-F1"
CONTENT = canary_lines(CANARY, 2_000)


@pytest.fixture(params=["ext4", "xfs"])
def filesystem(request, tmp_path):
    yield from make_filesystem(tmp_path, request.param)


@pytest.fixture(scope="module", params=["ext4", "xfs"])
def purged_next_to_copy(request, tmp_path_factory):
    """A purge of a target whose export has a live twin outside the target.

    Yields the filesystem, the twin's path and the driver's run.
    """
    directory = tmp_path_factory.mktemp(request.param)
    for filesystem in make_filesystem(directory, request.param):
        target, twin = lay_out(filesystem.mountpoint)
        yield filesystem, twin, purge(target)


@pytest.fixture(scope="module", params=["ext4", "xfs"])
def laid_out(request, tmp_path_factory):
    """The same layout, not purged: the filesystem, target and twin."""
    directory = tmp_path_factory.mktemp(request.param)
    for filesystem in make_filesystem(directory, request.param):
        yield filesystem, *lay_out(filesystem.mountpoint)


def scan_check(run):
    evidence = {item.key: item for item in run.evidence}
    (key,) = [key for key in evidence if key.endswith("customers.csv")]
    return {check.name: check for check in evidence[key].checks}["device-scan"]


def lay_out(mountpoint):
    """A target holding one export and an identical copy outside the target."""
    target = mountpoint / "exports"
    target.mkdir()
    (target / "customers.csv").write_bytes(CONTENT)
    outside = mountpoint / "outside"
    outside.mkdir()
    (outside / "twin.csv").write_bytes(CONTENT)
    os.sync()
    return target, outside / "twin.csv"


def test_identical_live_copy_outside_target_verifies(purged_next_to_copy):
    filesystem, twin, run = purged_next_to_copy
    assert run.unverified() == []


def test_identical_live_copy_is_named_in_evidence(purged_next_to_copy):
    filesystem, twin, run = purged_next_to_copy
    assert f"explained by live file {twin}" in scan_check(run).detail


def test_identical_live_copy_stays_intact(purged_next_to_copy):
    filesystem, twin, run = purged_next_to_copy
    assert twin.read_bytes() == CONTENT


def test_purged_copy_leaves_only_the_live_copy(purged_next_to_copy):
    filesystem, twin, run = purged_next_to_copy
    assert raw_image(filesystem).count(CANARY.encode()) == CONTENT.count(
        CANARY.encode()
    )


def test_free_space_copy_fails(filesystem):
    target, twin = lay_out(filesystem.mountpoint)
    ghost = filesystem.mountpoint / "outside" / "ghost.csv"
    ghost.write_bytes(CONTENT)
    os.sync()
    subprocess.run(["rm", str(ghost)], check=True)
    os.sync()
    run = purge(target)
    assert not scan_check(run).passed


def test_copy_removed_with_rm_inside_target_fails(filesystem):
    target, twin = lay_out(filesystem.mountpoint)
    second = target / "second.csv"
    second.write_bytes(CONTENT)
    os.sync()
    subprocess.run(["rm", str(second)], check=True)
    os.sync()
    run = purge(target)
    assert "fingerprint hit(s)" in scan_check(run).detail


def test_walk_beyond_file_limit_fails_as_unattributed(ext4, monkeypatch):
    monkeypatch.setattr(attribute, "FILE_LIMIT", 0)
    target, twin = lay_out(ext4.mountpoint)
    run = purge(target)
    assert "could not attribute" in scan_check(run).detail


def physical_start(path):
    """Return the raw-device offset of the first byte of ``path``."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return fiemap(descriptor)[0][1]
    finally:
        os.close(descriptor)


def test_live_file_explains_a_hit_in_its_extent(laid_out):
    filesystem, target, twin = laid_out
    found = attribute.attribute_hits(
        str(filesystem.mountpoint),
        twin.stat().st_dev,
        [attribute.RawHit(physical_start(twin), CONTENT[:64])],
        set(),
        set(),
    )
    assert found.explained == {0: str(twin)}


def test_purged_inode_never_explains_a_hit(laid_out):
    filesystem, target, twin = laid_out
    status = twin.stat()
    found = attribute.attribute_hits(
        str(filesystem.mountpoint),
        status.st_dev,
        [attribute.RawHit(physical_start(twin), CONTENT[:64])],
        set(),
        {status.st_ino},
    )
    assert found.explained == {}


def test_purged_path_never_explains_a_hit(laid_out):
    filesystem, target, twin = laid_out
    found = attribute.attribute_hits(
        str(filesystem.mountpoint),
        twin.stat().st_dev,
        [attribute.RawHit(physical_start(twin), CONTENT[:64])],
        {str(twin)},
        set(),
    )
    assert found.explained == {}


def test_differing_bytes_stay_unexplained(laid_out):
    filesystem, target, twin = laid_out
    found = attribute.attribute_hits(
        str(filesystem.mountpoint),
        twin.stat().st_dev,
        [attribute.RawHit(physical_start(twin), b"not what the file holds")],
        set(),
        set(),
    )
    assert found.explained == {}
