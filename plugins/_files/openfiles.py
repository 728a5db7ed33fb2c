"""Open and memory-mapped files of running processes, found with psutil."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import psutil


class OpenFiles:
    """A snapshot of the (device, inode) pairs open in any process.

    Covers open file descriptors and memory-mapped files (``map_files`` is
    readable by root only, so mapped files are missed otherwise). psutil
    lists the processes; each descriptor is then one stat(2) of its
    /proc/PID/fd entry, which costs less than psutil's open_files(), as
    that also reads the entry's link and fdinfo.
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
            for path in _process_files(pid):
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                pids = holders.setdefault((status.st_dev, status.st_ino), [])
                if pid not in pids:
                    pids.append(pid)
        self._holders = holders
        self.taken = time.monotonic()

    def holders(self, device: int, inode: int) -> list[str]:
        """Return the processes that hold the file open, as "pid N (name)"."""
        return [_label(pid) for pid in self._holders.get((device, inode), [])]


def _label(pid: int) -> str:
    try:
        return f"pid {pid} ({psutil.Process(pid).name()})"
    except psutil.Error:
        return f"pid {pid} (exited)"


def _process_files(pid: int) -> Iterator[str]:
    """Yield the /proc paths of a process's descriptors and mapped files."""
    for folder in ("fd", "map_files"):
        try:
            with os.scandir(f"/proc/{pid}/{folder}") as entries:
                paths = [entry.path for entry in entries]
        except OSError:
            continue  # the process exited, or map_files needs root
        yield from paths
