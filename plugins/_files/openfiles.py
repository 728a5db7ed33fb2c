"""Which files running processes hold open or mapped, found with psutil."""

from __future__ import annotations

import os
import time

import psutil


class OpenFiles:
    """A snapshot of the (device, inode) pairs open in any process.

    Covers open file descriptors and memory-mapped files (``map_files`` is
    readable by root only, so mapped files are missed otherwise).
    """

    def __init__(self) -> None:
        self._holders: dict[tuple[int, int], list[str]] = {}
        self.taken = 0.0

    def refresh(self, max_age: float = 0.0) -> None:
        """Take a new snapshot unless the current one is younger than ``max_age`` seconds."""
        if self.taken and time.monotonic() - self.taken < max_age:
            return
        holders: dict[tuple[int, int], list[str]] = {}
        for process in psutil.process_iter(["name"]):
            label = f"pid {process.pid} ({process.info['name']})"
            for path in _process_files(process):
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                names = holders.setdefault((status.st_dev, status.st_ino), [])
                if label not in names:
                    names.append(label)
        self._holders = holders
        self.taken = time.monotonic()

    def holders(self, device: int, inode: int) -> list[str]:
        """Return the processes that hold the file open, as "pid N (name)"."""
        return self._holders.get((device, inode), [])


def _process_files(process: psutil.Process) -> list[str]:
    paths = []
    try:
        for handle in process.open_files():
            paths.append(f"/proc/{process.pid}/fd/{handle.fd}")
    except (psutil.Error, OSError):
        return paths
    try:
        with os.scandir(f"/proc/{process.pid}/map_files") as entries:
            paths.extend(entry.path for entry in entries)
    except OSError:
        pass
    return paths
