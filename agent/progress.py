"""Progress reporting for purges of many items or many bytes (rich)."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol

from rich import filesize
from rich.console import Console
from rich.text import Text
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgress,
)

#: Below these totals a job finishes too fast for a bar to help.
MIN_ITEMS = 20
MIN_BYTES = 64 * 1024 * 1024


class Progress(Protocol):
    def start(self, phase: str, items: int, total_bytes: int) -> None: ...
    def advance_items(self, count: int) -> None: ...
    def advance_bytes(self, count: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    """Progress that shows nothing (not a terminal, or small jobs)."""

    def start(self, phase: str, items: int, total_bytes: int) -> None:
        pass

    def advance_items(self, count: int) -> None:
        pass

    def advance_bytes(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


#: Seconds between two updates of the bars; counts in between are summed.
UPDATE_INTERVAL = 0.1


class AmountColumn(ProgressColumn):
    """Done and total: a count for the items bar, sizes in binary units for bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._count = MofNCompleteColumn()
        self._size = DownloadColumn(binary_units=True)

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self._size.render(task)
        return self._count.render(task)


class SpeedColumn(ProgressColumn):
    """Throughput of the bytes bar in binary units; empty for the items bar."""

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") != "bytes":
            return Text("")
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        unit, suffix = filesize.pick_unit_and_suffix(
            int(speed), ["B", "KiB", "MiB", "GiB", "TiB"], 1024
        )
        return Text(f"{speed / unit:.1f} {suffix}/s", style="progress.data.speed")


class BarProgress:
    """Two rich bars on stderr: items done, and bytes done with throughput.

    Purges of small files report every file, and an update of a rich task
    costs microseconds, so counts are summed and handed to rich at most
    every UPDATE_INTERVAL seconds.
    """

    def __init__(self) -> None:
        self._bars: RichProgress | None = None
        self._items: TaskID | None = None
        self._bytes: TaskID | None = None
        self._pending_items = 0
        self._pending_bytes = 0
        self._updated = 0.0
        # Plugins may report bytes from their I/O threads.
        self._lock = threading.Lock()

    def start(self, phase: str, items: int, total_bytes: int) -> None:
        self.finish()
        if items < MIN_ITEMS and total_bytes < MIN_BYTES:
            return
        self._bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            AmountColumn(),
            SpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bars.start()
        self._items = self._bars.add_task(f"{phase} items", total=items)
        if total_bytes:
            self._bytes = self._bars.add_task(
                f"{phase} bytes", total=total_bytes, unit="bytes"
            )

    def advance_items(self, count: int) -> None:
        if self._bars is not None:
            with self._lock:
                self._pending_items += count
                self._update(force=False)

    def advance_bytes(self, count: int) -> None:
        if self._bars is not None:
            with self._lock:
                self._pending_bytes += count
                self._update(force=False)

    def _update(self, force: bool) -> None:
        moment = time.monotonic()
        if not force and moment - self._updated < UPDATE_INTERVAL:
            return
        self._updated = moment
        if self._bars is None:
            return
        if self._items is not None and self._pending_items:
            self._bars.advance(self._items, self._pending_items)
        if self._bytes is not None and self._pending_bytes:
            self._bars.advance(self._bytes, self._pending_bytes)
        self._pending_items = self._pending_bytes = 0

    def finish(self) -> None:
        if self._bars is not None:
            with self._lock:
                self._update(force=True)
            self._bars.stop()
        self._bars = self._items = self._bytes = None
        self._pending_items = self._pending_bytes = 0


def for_terminal() -> Progress:
    """Return bars when stderr is a terminal, otherwise no progress output."""
    return BarProgress() if sys.stderr.isatty() else NullProgress()
