"""A small plugin over a real temporary directory, for engine and CLI tests.

It handles ``testdir:///path`` targets: every regular file directly or
deeply under the path is an item. Files whose name starts with ``keep`` are
refused (reason ``hold``); symlinks are refused (reason ``symlink``). Purge
overwrites with zeros, then unlinks. Verification checks that the path is
gone and reports the raw scan as run only when fingerprints are present.

Target options inject faults by file name: ``fail_purge`` and
``fail_verify`` (lists of names), ``fail_complete`` (a failed target-wide
step), ``sleep`` (seconds spent per purged item,
so a test can kill the process mid-purge), ``stop_marker`` (a file: after
the first purged item, when it exists, the plugin removes it and sends its
own process SIGTERM, as an operator would), ``stop_while_planning`` (the
plugin sends its own process SIGTERM after discovering the first item).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    TargetInfo,
)
from plugins.errors import ItemChanged, TargetNotFound


class DirPlugin(Plugin):
    name = "testdir"
    schemes = ("testdir",)
    methods = (Method.CLEAR_OVERWRITE,)
    batch_size = 2

    @property
    def root(self) -> Path:
        return Path(self.target.parts.path)

    def describe(self) -> TargetInfo:
        if not self.root.is_dir():
            raise TargetNotFound(f"directory {self.root} does not exist")
        return TargetInfo(
            media={"media_type": "directory", "filesystem": "test"},
            notes=("test plugin",),
            residual=("the test plugin does not scan raw storage",),
        )

    def discover(self) -> Iterator[Item]:
        for directory, _subdirectories, files in os.walk(self.root):
            for name in sorted(files):
                path = Path(directory, name)
                status = path.lstat()
                identity = {"inode": status.st_ino, "mtime_ns": status.st_mtime_ns}
                yield Item(str(path), "file", status.st_size, identity, {"name": name})
                if self.target.options.get("stop_while_planning"):
                    os.kill(os.getpid(), signal.SIGTERM)

    def plan_item(self, item: Item) -> Decision:
        path = Path(item.key)
        if path.is_symlink():
            return Decision(refusal=Refusal("symlink", "symbolic link"))
        if path.name.startswith("keep"):
            return Decision(refusal=Refusal("hold", "kept by the test"))
        if not path.exists():
            raise ItemChanged(f"{path} vanished")
        content = path.read_bytes()
        return Decision(
            method=Method.CLEAR_OVERWRITE,
            fingerprints=(content[:32],) if len(content) >= 8 else (),
            params={"passes": self.context.settings.get("passes", 1)},
        )

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        options = self.target.options
        for planned in batch:
            if self.context.should_stop():
                return
            path = Path(planned.item.key)
            if path.name in options.get("fail_purge", ()):
                yield PurgeResult(planned.item.key, "failed", "injected purge failure")
                continue
            status = path.lstat()
            resumed = planned.decision.params.get("resumed", False)
            if status.st_ino != planned.item.identity["inode"] or (
                not resumed and status.st_mtime_ns != planned.item.identity["mtime_ns"]
            ):
                yield PurgeResult(
                    planned.item.key, "failed", "item changed since planning"
                )
                continue
            with open(path, "r+b") as stream:
                stream.write(b"\0" * status.st_size)
                stream.flush()
                os.fsync(stream.fileno())
            time.sleep(options.get("sleep", 0))
            os.unlink(path)
            self.context.progress(status.st_size)
            yield PurgeResult(
                planned.item.key,
                "purged",
                bytes=status.st_size,
                method=Method.CLEAR_OVERWRITE,
            )
            marker = options.get("stop_marker")
            if marker and os.path.exists(marker):
                os.unlink(marker)
                os.kill(os.getpid(), signal.SIGTERM)

    def complete(self) -> Iterator[PurgeResult]:
        if self.target.options.get("fail_complete"):
            yield PurgeResult(
                "compact", "failed", "injected failure of a target-wide step"
            )

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        for planned in batch:
            path = Path(planned.item.key)
            checks = [Check("path gone", not os.path.lexists(path), str(path))]
            if path.name in self.target.options.get("fail_verify", ()):
                checks.append(Check("read-back", False, "injected read-back mismatch"))
            if planned.decision.fingerprints:
                checks.append(
                    Check(
                        "raw scan",
                        True,
                        f"{len(planned.decision.fingerprints)} fingerprints absent",
                    )
                )
            else:
                checks.append(Check("raw scan", True, "not run: no fingerprints"))
            yield Evidence(planned.item.key, tuple(checks))
