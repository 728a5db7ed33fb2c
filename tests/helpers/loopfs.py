"""Filesystems on loop devices that a test creates, mounts and tears down."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}
#: Smallest image each mkfs accepts, in MiB.
MIN_SIZE_MIB = {"ext4": 8, "xfs": 300, "btrfs": 120}


@dataclass(frozen=True)
class LoopFilesystem:
    """A mounted filesystem on a loop device backed by ``image``."""

    image: Path
    device: str
    mountpoint: Path
    fstype: str

    def raw_bytes(self) -> bytes:
        """Return the whole image as the disk holds it, after syncing."""
        os.sync()
        with open(self.device, "rb") as handle:
            return handle.read()

    def raw_count(self, needle: bytes) -> int:
        """Count occurrences of ``needle`` in the raw device."""
        return self.raw_bytes().count(needle)


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def loop_filesystem(
    directory: Path,
    fstype: str = "ext4",
    size_mib: int = 64,
    mount_options: str = "",
    mkfs_options: tuple[str, ...] = (),
    direct_io: bool = False,
) -> Iterator[LoopFilesystem]:
    """Create an image in ``directory``, format it, attach and mount it.

    ``direct_io`` attaches the loop device with ``--direct-io=on``, so its
    writes go to the disk under the image rather than into the image file's
    page cache. Everything is undone in reverse order on
    exit, including after failures.
    """
    size_mib = max(size_mib, MIN_SIZE_MIB[fstype])
    image = directory / f"{fstype}.img"
    mountpoint = directory / f"{fstype}-mnt"
    mountpoint.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    subprocess.run(
        [*MKFS[fstype], *mkfs_options, str(image)], check=True, capture_output=True
    )
    attach = ["losetup", "--find", "--show", str(image)]
    if direct_io:
        attach.insert(1, "--direct-io=on")
    device = _run(*attach).strip()
    try:
        command = ["mount", device, str(mountpoint)]
        if mount_options:
            command[1:1] = ["-o", mount_options]
        subprocess.run(command, check=True, capture_output=True)
        try:
            yield LoopFilesystem(image, device, mountpoint, fstype)
        finally:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
