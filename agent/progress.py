"""Progress reporting for purges of many items or many bytes (rich)."""

from __future__ import annotations

import sys
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
    """Two rich bars on stderr: items done, and bytes done with throughput."""

    def __init__(self) -> None:
        self._bars: RichProgress | None = None
        self._items: TaskID | None = None
        self._bytes: TaskID | None = None

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
        if self._bars is not None and self._items is not None:
            self._bars.advance(self._items, count)

    def advance_bytes(self, count: int) -> None:
        if self._bars is not None and self._bytes is not None:
            self._bars.advance(self._bytes, count)

    def finish(self) -> None:
        if self._bars is not None:
            self._bars.stop()
        self._bars = self._items = self._bytes = None


def for_terminal() -> Progress:
    """Return bars when stderr is a terminal, otherwise no progress output."""
    return BarProgress() if sys.stderr.isatty() else NullProgress()
