"""Copies of a ``path`` target's data outside it: snapshots and backup files.

The files plugin hands this class its discovery, planning, purge and
verification of items that are not the selected files themselves:

- volume snapshots (btrfs, LVM, ZFS) of the volume under the target, removed
  only when the target option ``remove_snapshots`` matches their names;
- files on a copy-on-write filesystem, which an overwrite cannot reach: when
  every snapshot of the volume is removed and ``wipe_free_space`` is set,
  they are unlinked and the free-space wipe overwrites the freed blocks;
- backup files declared under the target option ``backups`` that hold
  fingerprints of the selected files, purged when ``backups.purge`` is true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from plugins import snapshots
from plugins._files.paths import escape_path, unescape_path
from plugins._files.walk import identity, make_item
from plugins.backups import (
    BackupConfig,
    BackupScanner,
    Selection,
    backup_files,
    describe_match,
)
from plugins.base import (
    Check,
    Decision,
    Item,
    Method,
    PlannedItem,
    PurgeResult,
    Refusal,
)
from plugins.errors import InvalidTarget, MissingDependency, TargetUnreachable

if TYPE_CHECKING:
    from plugins.files import FilesPlugin

#: Filesystems where unlinking plus a free-space wipe reaches every block of
#: a file once no snapshot shares them.
WIPEABLE_COPY_ON_WRITE = ("btrfs",)


class Copies:
    """Snapshots and backups of one files-plugin target."""

    def __init__(self, plugin: FilesPlugin) -> None:
        self.plugin = plugin
        options = plugin.target.options
        patterns = options.get("remove_snapshots", [])
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise InvalidTarget(
                f"target {escape_path(plugin.root)}: remove_snapshots must be a list "
                "of snapshot names or shell patterns"
            )
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.backups = BackupConfig.from_option(
            options.get("backups"), escape_path(plugin.root)
        )
        self.selection = Selection()
        self._snapshot_items: list[Item] | None = None
        self._removed_btrfs = False
        self.unlinked = False

    # -- discovery ----------------------------------------------------------

    def _mount_facts(self) -> tuple[str, str, str, str] | None:
        mount = self.plugin._mount()
        if mount is None:
            return None
        return (mount.fstype, mount.mount_point, mount.root, mount.source)

    def snapshot_items(self) -> list[Item]:
        """List the snapshots of the target's volume once per job."""
        if self._snapshot_items is None:
            facts = self._mount_facts()
            self._snapshot_items = (
                list(snapshots.discover(self.plugin.root, *facts)) if facts else []
            )
        return self._snapshot_items

    def discover(self) -> Iterator[Item]:
        """Yield snapshots, then backups that match the files planned so far."""
        yield from self.snapshot_items()
        yield from self._backups()

    def _backups(self) -> Iterator[Item]:
        if not self.backups.paths or not self.selection:
            return
        scanner = BackupScanner(self.selection)
        for path in backup_files(self.backups, self.plugin.root):
            try:
                status = os.lstat(path)
            except OSError:
                continue  # removed since the directory was listed
            try:
                match = scanner.scan(path)
            except OSError as error:
                self.plugin.log.warning(
                    "backup not readable", path=escape_path(path), error=error.strerror
                )
                detail = (
                    f"cannot read backup {escape_path(path)}: {error.strerror}, so it "
                    "may contain copies of the selected data; run as a user who can read it"
                )
                yield make_item(
                    path, "file", status, Refusal("permission", detail), copy="backup"
                )
                continue
            if match is None:
                continue
            yield make_item(
                path,
                "file",
                status,
                self._backup_refusal(path, status),
                copy="backup",
                holds=list(match.owners),
                members=list(match.members),
                hits=match.hits,
                detail=describe_match(match),
            )

    def _backup_refusal(self, path: str, status: os.stat_result) -> Refusal | None:
        """Apply the file refusals to a backup, except being on another filesystem."""
        if status.st_nlink > 1:
            return Refusal(
                "hard-link",
                f"backup {escape_path(path)} has {status.st_nlink} hard links; "
                "the other names would keep the data",
            )
        refusal = self.plugin._classify_file(path, status)
        if refusal is not None and refusal.reason == "mount-point":
            return None
        return refusal

    def remember(
        self, item: Item, content: Sequence[bytes], data_fields: Sequence[bytes]
    ) -> None:
        """Keep the fingerprints of a selected file for the backup scan."""
        if item.attributes.get("copy") != "backup":
            self.selection.add(item.key, content, data_fields)

    # -- planning -----------------------------------------------------------

    def plan_snapshot(self, item: Item) -> Decision:
        return snapshots.plan(item, self.patterns)

    def backup_refusal(self, item: Item) -> Refusal | None:
        """Refuse a matching backup unless ``backups.purge`` allows purging it."""
        if self.backups.purge:
            return None
        return Refusal(
            "copy-kept",
            f"backup {item.key} {item.attributes.get('detail', 'holds selected data')}; "
            "it is kept because the target option backups.purge is not true "
            "(purging it destroys the whole backup file)",
        )

    def may_unlink(self) -> bool:
        """Tell whether files an overwrite cannot reach may be unlinked and wiped.

        That needs a filesystem that frees every block of an unlinked file
        and the target option ``wipe_free_space``.
        """
        facts = self._mount_facts()
        return (
            facts is not None
            and facts[0] in WIPEABLE_COPY_ON_WRITE
            and self.plugin.wipe_free_space
        )

    def copy_on_write_decision(
        self, item: Item, refusal: dict, fingerprints: tuple[bytes, ...]
    ) -> Decision | None:
        """Plan unlink plus free-space wipe for a file an overwrite cannot reach.

        Returns None, so the copy-on-write refusal remains, unless
        :meth:`may_unlink` is true. Refuses while any snapshot is kept.
        """
        if not self.may_unlink():
            return None
        kept = [
            entry.attributes.get("snapshot", entry.label)
            for entry in self.snapshot_items()
            if snapshots.plan(entry, self.patterns).refusal is not None
        ]
        if kept:
            return Decision(
                refusal=Refusal(
                    "copy-on-write",
                    f"{refusal['detail']}; snapshot(s) {', '.join(kept)} are kept and "
                    "share its blocks, so deleting the file would not remove its data",
                )
            )
        return Decision(
            method=Method.WIPE_FREE_SPACE,
            fingerprints=fingerprints,
            params={"remove": "unlink"},
            residual=(
                (
                    "metadata blocks (file names, small files stored inline) that "
                    "the free-space wipe of data blocks does not reach"
                ),
            ),
        )

    # -- purge --------------------------------------------------------------

    def purge(self, planned: PlannedItem) -> PurgeResult:
        item = planned.item
        if item.kind == snapshots.KIND:
            result = snapshots.remove(item, self._mount_facts())
            if result.status == "purged" and item.attributes["tool"] == "btrfs":
                self._removed_btrfs = True
            return result
        return self._unlink(item)

    def _unlink(self, item: Item) -> PurgeResult:
        """Rename a copy-on-write file to a random name and unlink it."""
        from plugins.files import random_name

        path = unescape_path(item.key)
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            return PurgeResult(
                item.key, "failed", f"{item.key} disappeared between plan and purge"
            )
        if identity(status) != dict(item.identity):
            return PurgeResult(
                item.key,
                "failed",
                f"{item.key} changed after the plan; it was not removed",
            )
        directory, name = os.path.split(path)
        renamed = os.path.join(directory, random_name(len(os.fsencode(name))))
        try:
            os.rename(path, renamed)
            os.unlink(renamed)
            descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            return PurgeResult(
                item.key, "failed", f"removing {item.key} failed: {error.strerror}"
            )
        self.unlinked = True
        return PurgeResult(
            item.key,
            "purged",
            f"renamed and unlinked {item.key}; the free-space wipe overwrites its freed blocks",
            bytes=item.size,
            method=Method.WIPE_FREE_SPACE,
        )

    def complete(self) -> Iterator[PurgeResult]:
        """Wait for btrfs to free deleted snapshots before the free-space wipe."""
        if not self._removed_btrfs:
            return
        facts = self._mount_facts()
        try:
            snapshots.settle(facts[1])
        except (MissingDependency, TargetUnreachable) as error:
            yield PurgeResult("settle-snapshots", "failed", str(error))
            return
        yield PurgeResult(
            "settle-snapshots",
            "purged",
            f"btrfs freed the blocks of the removed snapshots on {escape_path(facts[1])}",
            method=Method.REMOVE_SNAPSHOTS,
        )

    @property
    def needs_wipe(self) -> bool:
        return self.unlinked or self._removed_btrfs

    # -- verify -------------------------------------------------------------

    def verify_snapshot(self, planned: PlannedItem) -> Check:
        return snapshots.verify(planned.item, self._mount_facts())


def field_values(path: str) -> list[bytes]:
    """Return distinctive field values from the start of a selected file."""
    from plugins.files import WHOLE_READ_LIMIT
    from plugins.scan import field_fingerprints

    try:
        with open(path, "rb") as handle:
            return field_fingerprints(handle.read(WHOLE_READ_LIMIT))
    except OSError:
        return []
