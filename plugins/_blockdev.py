"""Facts about a block device from sysfs and /proc, and who is using it.

``SYSFS`` and ``PROC`` are module attributes so tests can point the sysfs
readers at a recorded tree for device-mapper and RAID layouts that cannot be
built on the test machine.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

import psutil

from plugins.base import Refusal
from plugins.errors import AccessDenied, NotSupported, TargetNotFound

SYSFS = "/sys"
PROC = "/proc"


@dataclass(frozen=True)
class DeviceInfo:
    """Sysfs facts about one block device."""

    path: str
    name: str
    major: int
    minor: int
    size: int
    logical_block_size: int
    physical_block_size: int
    read_only: bool
    rotational: bool | None
    kind: str
    model: str = ""
    serial: str = ""
    wwid: str = ""
    backing_file: str = ""
    discard_max_bytes: int = 0
    is_partition: bool = False
    partitions: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    slaves: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def devno(self) -> str:
        return f"{self.major}:{self.minor}"

    def identity(self) -> dict[str, object]:
        """Facts that change when a different medium sits behind the same path."""
        return {
            "devno": self.devno,
            "size": self.size,
            "serial": self.serial,
            "wwid": self.wwid,
            "backing_file": self.backing_file,
        }


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _read_int(path: str, default: int = 0) -> int:
    text = _read(path)
    try:
        return int(text)
    except ValueError:
        return default


def _listdir(path: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(os.listdir(path)))
    except OSError:
        return ()


def sysfs_dir(devno: str) -> str:
    """Return the sysfs directory of a device number such as ``7:3``."""
    return os.path.realpath(os.path.join(SYSFS, "dev", "block", devno))


def _kind(name: str) -> str:
    for prefix, kind in (
        ("nvme", "nvme"),
        ("loop", "loop"),
        ("dm-", "device-mapper"),
        ("md", "raid"),
        ("sd", "scsi"),
        ("vd", "virtio"),
        ("zram", "zram"),
        ("mmcblk", "mmc"),
    ):
        if name.startswith(prefix):
            return kind
    return "other"


def inspect_device(path: str) -> DeviceInfo:
    """Return sysfs facts for the block device at ``path``.

    Raises TargetNotFound when nothing is there, NotSupported when the path
    is not a block device (the block plugin cannot erase it, so the job
    fails) and AccessDenied when it cannot be examined.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError as error:
        raise TargetNotFound(f"block device {path!r} not found") from error
    except PermissionError as error:
        raise AccessDenied(
            f"cannot examine {path!r}: permission denied; run as root"
        ) from error
    if not stat.S_ISBLK(status.st_mode):
        raise NotSupported(
            f"{path!r} is not a block device; use a path target for files and directories"
        )
    major, minor = os.major(status.st_rdev), os.minor(status.st_rdev)
    directory = sysfs_dir(f"{major}:{minor}")
    name = os.path.basename(directory)
    is_partition = os.path.exists(os.path.join(directory, "partition"))
    queue = os.path.join(
        directory if not is_partition else os.path.dirname(directory), "queue"
    )
    rotational = _read(os.path.join(queue, "rotational"))
    partitions = tuple(
        entry
        for entry in _listdir(directory)
        if os.path.exists(os.path.join(directory, entry, "partition"))
    )
    device_dir = os.path.join(
        directory if not is_partition else os.path.dirname(directory), "device"
    )
    return DeviceInfo(
        path=path,
        name=name,
        major=major,
        minor=minor,
        size=_read_int(os.path.join(directory, "size")) * 512,
        logical_block_size=_read_int(os.path.join(queue, "logical_block_size"), 512)
        or 512,
        physical_block_size=_read_int(os.path.join(queue, "physical_block_size"), 512)
        or 512,
        read_only=_read(os.path.join(directory, "ro")) == "1",
        rotational=None if rotational == "" else rotational == "1",
        kind=_kind(name),
        model=_read(os.path.join(device_dir, "model")),
        serial=_read(os.path.join(device_dir, "serial")),
        wwid=_read(os.path.join(device_dir, "wwid")),
        backing_file=_read(os.path.join(directory, "loop", "backing_file")),
        discard_max_bytes=_read_int(os.path.join(queue, "discard_max_bytes")),
        is_partition=is_partition,
        partitions=partitions,
        holders=_listdir(os.path.join(directory, "holders")),
        slaves=_listdir(os.path.join(directory, "slaves")),
    )


def present_size(info: DeviceInfo) -> int:
    """Return the device's current size in bytes, 0 when it is gone."""
    directory = sysfs_dir(info.devno)
    if os.path.basename(directory) != info.name:
        return 0
    return _read_int(os.path.join(directory, "size")) * 512


def _devnos(info: DeviceInfo) -> dict[str, str]:
    """Map the device number of the device and of each partition to its name."""
    numbers = {info.devno: info.name}
    directory = sysfs_dir(info.devno)
    for partition in info.partitions:
        devno = _read(os.path.join(directory, partition, "dev"))
        if devno:
            numbers[devno] = partition
    return numbers


def _device_nodes(numbers: dict[str, str]) -> set[str]:
    return {os.path.realpath(os.path.join("/dev", name)) for name in numbers.values()}


def _mounts() -> list[tuple[str, str, str]]:
    """Return (device number, source, mount point) for every mount."""
    mounts = []
    for line in _read(os.path.join(PROC, "self", "mountinfo")).splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split()
        source = tail[1] if len(tail) > 1 else ""
        mounts.append((fields[2], source, fields[4].replace("\\040", " ")))
    return mounts


def find_mounts(info: DeviceInfo) -> list[str]:
    """Return "name on mountpoint" for each mount of the device or its partitions."""
    numbers = _devnos(info)
    nodes = _device_nodes(numbers)
    found = []
    for devno, source, mountpoint in _mounts():
        if devno in numbers:
            found.append(f"{numbers[devno]} on {mountpoint}")
        elif source.startswith("/") and os.path.realpath(source) in nodes:
            found.append(f"{os.path.basename(source)} on {mountpoint}")
    for line in _read(os.path.join(PROC, "swaps")).splitlines()[1:]:
        swap = line.split()[0] if line.split() else ""
        if swap and os.path.realpath(swap) in nodes:
            found.append(f"{os.path.basename(swap)} as swap")
    return found


def lower_devices(devno: str, seen: set[str] | None = None) -> set[str]:
    """Return the names of every device under ``devno``: slaves, and whole disks of partitions."""
    seen = set() if seen is None else seen
    directory = sysfs_dir(devno)
    name = os.path.basename(directory)
    if name in seen or not os.path.isdir(directory):
        return seen
    seen.add(name)
    if os.path.exists(os.path.join(directory, "partition")):
        parent = _read(os.path.join(os.path.dirname(directory), "dev"))
        if parent:
            lower_devices(parent, seen)
    for slave in _listdir(os.path.join(directory, "slaves")):
        slave_devno = _read(os.path.join(directory, "slaves", slave, "dev"))
        if slave_devno:
            lower_devices(slave_devno, seen)
    return seen


def system_devices() -> set[str]:
    """Return the names of devices under the running system's /, /boot, /usr and /var.

    btrfs reports an anonymous device number (0:N) in mountinfo, so for those
    mounts the device comes from the mount source instead.
    """
    names: set[str] = set()
    for devno, source, mountpoint in _mounts():
        if mountpoint not in ("/", "/boot", "/boot/efi", "/usr", "/var"):
            continue
        if devno.startswith("0:") and source.startswith("/dev/"):
            try:
                rdev = os.stat(source).st_rdev
            except OSError:
                continue
            devno = f"{os.major(rdev)}:{os.minor(rdev)}"
        if not devno.startswith("0:"):
            lower_devices(devno, names)
    return names


def find_openers(info: DeviceInfo) -> list[str]:
    """Return "name (pid N)" for each process with the device or a partition open.

    psutil lists the process ids. Their descriptors are read from /proc
    because psutil's open_files() reports regular files only, never device
    nodes. Names are looked up only for the processes found, because
    reading every process's name took most of the time of this check.
    """
    numbers = {
        os.makedev(*map(int, devno.split(":"))): name
        for devno, name in _devnos(info).items()
    }
    openers = []
    for pid in psutil.pids():
        fd_dir = os.path.join(PROC, str(pid), "fd")
        for entry in _listdir(fd_dir):
            try:
                status = os.stat(os.path.join(fd_dir, entry))
            except OSError:
                continue
            if stat.S_ISBLK(status.st_mode) and status.st_rdev in numbers:
                openers.append(f"{_process_name(pid)} (pid {pid})")
                break
    return openers


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "exited process"


def exclusive_probe(path: str) -> str:
    """Open the device with O_EXCL and close it; return why that failed, or ""."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return "the kernel holds it exclusively (mount, swap, device-mapper, RAID or another O_EXCL opener)"
        return f"exclusive open failed: {os.strerror(error.errno or 0)}"
    os.close(descriptor)
    return ""


def refusals(info: DeviceInfo) -> list[Refusal]:
    """Return every reason the device must not be destroyed now, most serious first."""
    found: list[Refusal] = []
    system = system_devices()
    if info.name in system or set(info.partitions) & system:
        found.append(Refusal("system-disk", f"{info.path} holds the running system"))
    mounts = find_mounts(info)
    if mounts:
        found.append(Refusal("mounted", f"{info.path} is mounted: {', '.join(mounts)}"))
    stack = _stack_members(info)
    if stack:
        found.append(
            Refusal(
                "device-stack",
                f"{info.path} is part of an active device stack: {stack}",
            )
        )
    openers = find_openers(info)
    if openers:
        found.append(Refusal("in-use", f"{info.path} is open in {', '.join(openers)}"))
    probe = exclusive_probe(info.path)
    if probe and not found:
        found.append(Refusal("in-use", f"{info.path}: {probe}"))
    return found


def _stack_members(info: DeviceInfo) -> str:
    directory = sysfs_dir(info.devno)
    parts = []
    holders = list(info.holders)
    for partition in info.partitions:
        holders += [
            f"{h} (over {partition})"
            for h in _listdir(os.path.join(directory, partition, "holders"))
        ]
    if holders:
        parts.append("used by " + ", ".join(_describe_stacked(h) for h in holders))
    if info.slaves:
        parts.append(
            f"built on {', '.join(info.slaves)}; destroy the members or stop the stack first"
        )
    return "; ".join(parts)


def _describe_stacked(holder: str) -> str:
    name = holder.split(" ", 1)[0]
    directory = os.path.join(SYSFS, "class", "block", name)
    dm_name = _read(os.path.join(directory, "dm", "name"))
    uuid = _read(os.path.join(directory, "dm", "uuid"))
    if uuid.startswith("LVM-"):
        return f"{holder} (LVM volume {dm_name})"
    if uuid.startswith("CRYPT-"):
        return f"{holder} (dm-crypt mapping {dm_name})"
    if dm_name:
        return f"{holder} (device-mapper {dm_name})"
    if name.startswith("md"):
        return f"{holder} (RAID array)"
    return holder
