"""Mounts, block devices and media facts from /proc and /sys, and filesystem ioctls."""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import struct
from dataclasses import dataclass, field

#: Filesystems where an overwrite in place cannot reach every copy of the
#: data: copy-on-write and log-structured filesystems write new blocks, and
#: network or FUSE filesystems hide where and how often the data is stored.
COPY_ON_WRITE = {
    "btrfs": "btrfs writes changed data to new blocks (copy-on-write) and snapshots share old ones",
    "zfs": "ZFS writes changed data to new blocks (copy-on-write) and snapshots share old ones",
    "bcachefs": "bcachefs writes changed data to new blocks (copy-on-write)",
    "f2fs": "f2fs is log-structured and writes changed data to new blocks",
    "nilfs2": "nilfs2 is log-structured and keeps old blocks as checkpoints",
    "overlay": "overlayfs copies a lower-layer file up; the lower copy stays",
    "aufs": "aufs copies a lower-layer file up; the lower copy stays",
}
NETWORK = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
    "lustre",
)

# EXT4_IOC_CHECKPOINT = _IOW('f', 43, __u32); the ZEROOUT flag zeroes the
# journal's blocks after the checkpoint (Linux 5.13 and later).
EXT4_IOC_CHECKPOINT = 0x4004662B
EXT4_IOC_CHECKPOINT_FLAG_ZEROOUT = 2


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    mount_point: str
    major: int
    minor: int
    fstype: str
    source: str
    options: tuple[str, ...] = field(default_factory=tuple)
    #: Directory of the filesystem shown at the mount point (a btrfs
    #: subvolume mounted with subvol= has its own path here).
    root: str = "/"

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field_text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    raw = field_text.encode("utf-8", "surrogateescape")
    out = bytearray()
    index = 0
    while index < len(raw):
        octal = raw[index + 1 : index + 4]
        if raw[index] == 0x5C and len(octal) == 3 and octal.isdigit():
            out.append(int(octal, 8))
            index += 4
        else:
            out.append(raw[index])
            index += 1
    return os.fsdecode(bytes(out))


def read_mounts() -> list[Mount]:
    """Parse /proc/self/mountinfo."""
    mounts = []
    with open(
        "/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape"
    ) as handle:
        for line in handle:
            before, _, after = line.rstrip("\n").partition(" - ")
            fields = before.split(" ")
            tail = after.split(" ")
            major, minor = (int(part) for part in fields[2].split(":"))
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    major=major,
                    minor=minor,
                    fstype=tail[0],
                    source=_unescape(tail[1]) if len(tail) > 1 else "",
                    options=tuple(fields[5].split(",")),
                    root=_unescape(fields[3]),
                )
            )
    return mounts


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """Return the mount that contains ``path``: the last-mounted longest prefix."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point
        inside = point == "/" or path == point or path.startswith(point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    return best


def is_copy_on_write(fstype: str) -> str | None:
    """Return why overwrite cannot reach every copy on ``fstype``, or None."""
    if fstype in COPY_ON_WRITE:
        return COPY_ON_WRITE[fstype]
    if fstype in NETWORK:
        return f"{fstype} is a network filesystem; the server decides where and how often data is stored"
    if fstype.startswith("fuse") or fstype == "fuseblk":
        return f"{fstype} is a FUSE filesystem; its daemon decides where data is stored"
    return None


def _sys_read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def block_device(major: int, minor: int) -> str | None:
    """Return /dev/NAME for a device number, or None when it is not a block device."""
    if major == 0:
        return None
    link = f"/sys/dev/block/{major}:{minor}"
    if not os.path.exists(link):
        return None
    return "/dev/" + os.path.basename(os.path.realpath(link))


def ext4_has_journal(major: int, minor: int) -> bool | None:
    """Tell whether the mounted ext4 filesystem on a device has a journal.

    Reads /sys/fs/ext4/NAME/journal_task, which contains the journal
    thread's pid, or "<none>" for a filesystem made without a journal.
    Returns None when that file is missing (older kernels) or unreadable.
    """
    device = block_device(major, minor)
    if device is None:
        return None
    try:
        with open(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task") as handle:
            task = handle.read().strip()
    except OSError:
        return None
    return task != "<none>"


def source_device(mount: Mount) -> str | None:
    """Return the mount's source when it is a block device, else None.

    btrfs reports an anonymous device number per subvolume, so its device
    comes from the mount source instead.
    """
    # NOTE: a btrfs spanning several devices is scanned on this one only.
    if not mount.source.startswith("/dev/"):
        return None
    try:
        return mount.source if stat.S_ISBLK(os.stat(mount.source).st_mode) else None
    except OSError:
        return None


def _disk_name(name: str) -> str:
    # A partition's sysfs directory sits inside its disk's directory.
    real = os.path.realpath(f"/sys/class/block/{name}")
    if os.path.exists(os.path.join(real, "partition")):
        return os.path.basename(os.path.dirname(real))
    return name


def media_facts(device: str | None, depth: int = 0) -> dict[str, object]:
    """Return model, serial, rotational flag and loop backing file from sysfs."""
    if device is None:
        return {}
    name = os.path.basename(device)
    disk = _disk_name(name)
    facts: dict[str, object] = {"device": device}
    model = _sys_read(f"/sys/block/{disk}/device/model")
    serial = _sys_read(f"/sys/block/{disk}/device/serial") or _sys_read(
        f"/sys/block/{disk}/serial"
    )
    if model:
        facts["model"] = model
    if serial:
        facts["serial"] = serial
    rotational = _sys_read(f"/sys/block/{disk}/queue/rotational")
    if rotational is not None:
        facts["rotational"] = rotational == "1"
    backing = _sys_read(f"/sys/block/{disk}/loop/backing_file")
    if backing:
        facts["backing_file"] = backing
        if depth == 0:
            facts["backing"] = _backing_facts(backing)
    return facts


def _backing_facts(backing: str) -> dict[str, object]:
    try:
        status = os.stat(backing)
    except OSError:
        return {}
    device = block_device(os.major(status.st_dev), os.minor(status.st_dev))
    return media_facts(device, depth=1)


def non_rotational(facts: dict[str, object]) -> bool:
    """Tell whether the medium, or a loop device's backing disk, is flash."""
    backing = facts.get("backing")
    if isinstance(backing, dict) and backing.get("rotational") is False:
        return True
    return facts.get("rotational") is False and "backing_file" not in facts


def syncfs(descriptor: int) -> None:
    """Flush the whole filesystem that contains ``descriptor`` (syncfs(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(descriptor) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def checkpoint_ext4(descriptor: int, zero_journal: bool = False) -> None:
    """Write every journaled ext4 metadata block home (needs CAP_SYS_ADMIN).

    A directory block that is freed while its last change is only in the
    journal keeps its previous version, file names included, at its home
    location; a checkpoint before the free writes the wiped version there.
    ``zero_journal`` also zeroes the journal's own blocks afterwards.
    """
    flags = EXT4_IOC_CHECKPOINT_FLAG_ZEROOUT if zero_journal else 0
    fcntl.ioctl(descriptor, EXT4_IOC_CHECKPOINT, struct.pack("I", flags))


def zero_ext4_journal(mount_point: str) -> None:
    """Checkpoint the ext4 journal and zero its blocks (needs CAP_SYS_ADMIN)."""
    descriptor = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        checkpoint_ext4(descriptor, zero_journal=True)
    finally:
        os.close(descriptor)


def xfs_log_range(device: str) -> tuple[int, int] | None:
    """Return the byte range of an internal xfs log on ``device``, or None.

    Reads the primary superblock: sb_blocksize at byte 4, sb_logstart at 48
    (a filesystem block number split into allocation group and block),
    sb_agblocks at 84, sb_logblocks at 96 and sb_agblklog at 124, all
    big-endian.
    """
    try:
        with open(device, "rb") as handle:
            block = handle.read(512)
    except OSError:
        return None
    if len(block) < 128 or block[:4] != b"XFSB":
        return None
    blocksize = struct.unpack_from(">I", block, 4)[0]
    logstart = struct.unpack_from(">Q", block, 48)[0]
    agblocks = struct.unpack_from(">I", block, 84)[0]
    logblocks = struct.unpack_from(">I", block, 96)[0]
    agblklog = block[124]
    if logstart == 0:
        return None  # external log device
    group, group_block = logstart >> agblklog, logstart & ((1 << agblklog) - 1)
    start = (group * agblocks + group_block) * blocksize
    return start, start + logblocks * blocksize
