"""Devices in use are refused, and bad input gives a clear error."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from plugins import _blockdev
from plugins.block import BlockPlugin
from plugins.errors import InvalidTarget, NotSupported, TargetNotFound
from tests.block.conftest import attach, detach, raw_count
from tests.conftest import require_tool
from tests.helpers.driver import run_plugin
from tests.helpers.loopfs import loop_filesystem


def test_mounted_device_refused(tmp_path):
    with loop_filesystem(tmp_path, "ext4", 16) as filesystem:
        run = run_plugin(BlockPlugin, f"block://{filesystem.device}", purge=False)

    refusal = run.planned[0].decision.refusal
    assert refusal is not None
    assert refusal.reason == "mounted"
    assert "-mnt" in refusal.detail


def test_mounted_partition_refuses_whole_disk(tmp_path):
    require_tool("sfdisk")
    image = tmp_path / "parted.img"
    with open(image, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    subprocess.run(
        ["sfdisk", "-q", str(image)],
        input=b"label: dos\n,,L\n",
        check=True,
        capture_output=True,
    )
    device = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        partition = _partition_node(device, tmp_path)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", partition], check=True, capture_output=True
        )
        subprocess.run(
            ["mount", partition, str(mountpoint)], check=True, capture_output=True
        )
        try:
            run = run_plugin(BlockPlugin, f"block://{device}", purge=False)
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
    finally:
        detach(device)

    refusal = run.planned[0].decision.refusal
    assert refusal is not None
    assert refusal.reason == "mounted"
    assert f"{os.path.basename(device)}p1 on" in refusal.detail


def _partition_node(device: str, directory) -> str:
    """Return a node for the first partition, made by hand where no udev runs."""
    name = os.path.basename(device) + "p1"
    if os.path.exists(f"/dev/{name}"):
        return f"/dev/{name}"
    if not os.path.exists(f"/sys/class/block/{name}/dev"):
        # losetup --partscan does not always register the partitions here.
        subprocess.run(["partx", "-a", device], check=True, capture_output=True)
    with open(f"/sys/class/block/{name}/dev") as handle:
        major, minor = map(int, handle.read().split(":"))
    node = str(directory / name)
    os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    return node


def test_device_open_in_process_refused(loop_device):
    device = loop_device(8)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; f = open({device!r}, 'rb'); print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        run = run_plugin(BlockPlugin, f"block://{device}")
    finally:
        holder.communicate("")

    refusal = run.planned[0].decision.refusal
    assert refusal is not None
    assert refusal.reason == "in-use"
    assert f"pid {holder.pid}" in refusal.detail
    assert run.results == []
    assert raw_count(device) == 16


def test_exclusive_holder_refused(loop_device):
    device = loop_device(8)
    descriptor = os.open(device, os.O_RDONLY | os.O_EXCL)
    try:
        info = _blockdev.inspect_device(device)
        probe = _blockdev.exclusive_probe(device)
    finally:
        os.close(descriptor)

    assert info.name.startswith("loop")
    assert "holds it exclusively" in probe


def test_stacked_device_refused_from_recorded_sysfs(tmp_path, monkeypatch):
    # Device-mapper is not available on the test machine, so this sysfs tree
    # is a recorded layout: sdb1 is a physical volume under an LVM volume.
    sysfs = tmp_path / "sys"
    disk = sysfs / "devices" / "pci" / "block" / "sdb"
    (disk / "sdb1" / "holders").mkdir(parents=True)
    (disk / "sdb1" / "partition").write_text("1\n")
    (disk / "sdb1" / "dev").write_text("8:17\n")
    (disk / "holders").mkdir()
    (disk / "slaves").mkdir()
    dm = sysfs / "devices" / "virtual" / "block" / "dm-0"
    (dm / "dm").mkdir(parents=True)
    (dm / "dm" / "name").write_text("vg0-data\n")
    (dm / "dm" / "uuid").write_text("LVM-abc\n")
    (disk / "sdb1" / "holders" / "dm-0").symlink_to(dm)
    (sysfs / "class" / "block").mkdir(parents=True)
    (sysfs / "class" / "block" / "dm-0").symlink_to(dm)
    (sysfs / "dev" / "block").mkdir(parents=True)
    (sysfs / "dev" / "block" / "8:16").symlink_to(disk)
    monkeypatch.setattr(_blockdev, "SYSFS", str(sysfs))
    info = _blockdev.DeviceInfo(
        path="/dev/sdb",
        name="sdb",
        major=8,
        minor=16,
        size=1 << 30,
        logical_block_size=512,
        physical_block_size=512,
        read_only=False,
        rotational=True,
        kind="scsi",
        partitions=("sdb1",),
    )

    detail = _blockdev._stack_members(info)

    assert "dm-0 (over sdb1) (LVM volume vg0-data)" in detail


def test_system_disk_from_recorded_layout(tmp_path, monkeypatch):
    # A recorded layout: / is an LVM volume (dm-0, 253:0) on partition sda2.
    sysfs = tmp_path / "sys"
    disk = sysfs / "devices" / "pci" / "block" / "sda"
    (disk / "sda2").mkdir(parents=True)
    (disk / "sda2" / "partition").write_text("2\n")
    (disk / "sda2" / "dev").write_text("8:2\n")
    (disk / "dev").write_text("8:0\n")
    dm = sysfs / "devices" / "virtual" / "block" / "dm-0"
    (dm / "slaves").mkdir(parents=True)
    (dm / "slaves" / "sda2").symlink_to(disk / "sda2")
    (sysfs / "dev" / "block").mkdir(parents=True)
    for devno, target in (("253:0", dm), ("8:2", disk / "sda2"), ("8:0", disk)):
        (sysfs / "dev" / "block" / devno).symlink_to(target)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "27 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw\n"
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    )
    monkeypatch.setattr(_blockdev, "SYSFS", str(sysfs))
    monkeypatch.setattr(_blockdev, "PROC", str(proc))

    names = _blockdev.system_devices()

    assert names == {"dm-0", "sda2", "sda"}


def test_read_only_device_fails_without_writing(loop_device):
    device = loop_device(8, read_only=True)

    run = run_plugin(BlockPlugin, f"block://{device}")

    result = run.results[0]
    assert result.status == "failed"
    assert "read-only" in result.detail
    assert "nothing was written" in result.detail
    assert any("read-only" in line for line in run.planned[0].decision.residual)
    assert run.evidence == []
    assert raw_count(device) == 16


def test_regular_file_not_supported(tmp_path):
    path = tmp_path / "plain.img"
    path.write_bytes(b"x" * 4096)

    with pytest.raises(NotSupported, match="is not a block device"):
        run_plugin(BlockPlugin, f"block://{path}")


def test_missing_device_not_found(tmp_path):
    with pytest.raises(TargetNotFound, match="not found"):
        run_plugin(BlockPlugin, f"block://{tmp_path}/nothing")


def test_unknown_option_rejected():
    with pytest.raises(InvalidTarget, match="unknown option"):
        run_plugin(BlockPlugin, "block:///dev/loop0", options={"passes": 3})


def test_device_disappearing_mid_pass(loop_device, tmp_path):
    # A loop device that is open cannot vanish at once: losetup -d only marks
    # it for removal at the last close. The purge reopens the device for each
    # pass, so a detach during pass 1 makes pass 2 find the device gone.
    image = tmp_path / "vanishing.img"
    with open(image, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    device = attach(image)
    try:
        progress_seen = threading.Event()
        from plugins.base import JobContext, PlannedItem, Target

        context = JobContext(
            job_id="test",
            dry_run=False,
            settings={"passes": 2},
            progress=lambda done: progress_seen.set(),
        )
        plugin = BlockPlugin(Target(f"block://{device}"), context)
        item = next(plugin.discover())
        planned = [PlannedItem(item, plugin.plan_item(item))]

        def detach_soon() -> None:
            progress_seen.wait(10)
            detach(device)

        detacher = threading.Thread(target=detach_soon)
        detacher.start()
        results = list(plugin.purge(planned))
        detacher.join()
    finally:
        time.sleep(0.1)
        detach(device)

    assert results[0].status == "failed"
    assert "disappeared" in results[0].detail
    assert "partly overwritten" in results[0].detail


def test_device_shrinking_mid_pass(tmp_path):
    # The image is cut to 8 MiB and the loop device gets its new capacity
    # while the first pass runs, so writes past the new end fail at once.
    image = tmp_path / "shrinking.img"
    with open(image, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    device = attach(image)
    try:
        from plugins.base import JobContext, PlannedItem, Target

        def shrink(done: int) -> None:
            if os.path.getsize(image) > 8 * 1024 * 1024:
                os.truncate(image, 8 * 1024 * 1024)
                subprocess.run(["losetup", "--set-capacity", device], check=True)

        context = JobContext(job_id="test", dry_run=False, progress=shrink)
        plugin = BlockPlugin(Target(f"block://{device}"), context)
        item = next(plugin.discover())
        planned = [PlannedItem(item, plugin.plan_item(item))]
        results = list(plugin.purge(planned))
    finally:
        detach(device)

    assert results[0].status == "failed"
    assert "disappeared or shrank during pass 1" in results[0].detail
