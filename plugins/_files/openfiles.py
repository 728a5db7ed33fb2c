"""Open and memory-mapped files of running processes, found with psutil."""

from __future__ import annotations

import os
import time

import psutil

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class OpenFiles:
    """A snapshot of the (device, inode) pairs open in any process.

    Covers open file descriptors and memory-mapped files. psutil lists the
    processes. Each descriptor is one stat(2) of its /proc/PID/fd entry,
    relative to the open fd directory, which costs less than psutil's
    open_files(), as that also reads the entry's link and fdinfo. Mapped
    files come from /proc/PID/maps, which names each mapping's device and
    inode; as root, one /proc/PID/map_files entry per mapped file is then
    stat'ed as well, because on btrfs the device in maps (the
    filesystem's) differs from st_dev (the subvolume's).
    """

    def __init__(self) -> None:
        self._holders: dict[tuple[int, int], list[int]] = {}
        self.taken = 0.0

    def refresh(self, max_age: float = 0.0) -> None:
        """Take a new snapshot unless the current one is younger than ``max_age`` seconds."""
        if self.taken and time.monotonic() - self.taken < max_age:
            return
        holders: dict[tuple[int, int], list[int]] = {}
        for pid in psutil.pids():
            for key in _process_files(pid):
                pids = holders.setdefault(key, [])
                if pid not in pids:
                    pids.append(pid)
        self._holders = holders
        self.taken = time.monotonic()

    def holders(self, device: int, inode: int) -> list[str]:
        """Return the processes that hold the file open, as "pid N (name)"."""
        pids = self._holders.get((device, inode))
        if not pids:
            return []
        return [_label(pid) for pid in pids]


def _label(pid: int) -> str:
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid} (exited)"


def _process_files(pid: int) -> set[tuple[int, int]]:
    """Return the (device, inode) pairs of a process's descriptors and mapped files."""
    found = _descriptor_files(pid)
    found.update(_mapped_files(pid))
    return found


def _descriptor_files(pid: int) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    try:
        directory = os.open(f"/proc/{pid}/fd", _DIRECTORY_FLAGS)
    except OSError:
        return found  # the process exited, or it belongs to another user
    try:
        for name in os.listdir(directory):
            try:
                status = os.stat(name, dir_fd=directory)
            except OSError:
                continue
            found.add((status.st_dev, status.st_ino))
    except OSError:
        pass
    finally:
        os.close(directory)
    return found


def _mapped_files(pid: int) -> set[tuple[int, int]]:
    """Return the files a process maps, one stat of map_files each where readable."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return set()
    ranges: dict[tuple[int, int], bytes] = {}
    for line in lines:
        # address perms offset major:minor inode [path]
        fields = line.split(None, 5)
        if len(fields) < 5 or fields[4] == b"0":
            continue
        major, _, minor = fields[3].partition(b":")
        key = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]))
        ranges.setdefault(key, fields[0])
    if not ranges:
        return set()
    try:
        directory = os.open(f"/proc/{pid}/map_files", _DIRECTORY_FLAGS)
    except OSError:
        # map_files needs CAP_SYS_ADMIN: the device numbers from maps are
        # the best available, and they match st_dev except on btrfs.
        return set(ranges)
    found: set[tuple[int, int]] = set()
    try:
        for key, address in ranges.items():
            try:
                status = os.stat(address, dir_fd=directory)
            except OSError:
                found.add(key)  # unmapped since maps was read, or not allowed
                continue
            found.add((status.st_dev, status.st_ino))
    finally:
        os.close(directory)
    return found
