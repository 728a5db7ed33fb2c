"""The destroy path of the local-files plugin, and the raw device scan.

A batch of files goes through each stage together: open and check, one
overwrite pass for all, one flush, read-back, rename, flush, truncate and
unlink, flush. A batch of small files thus costs a few filesystem flushes
rather than several per file. Directories follow in waves, deepest first,
with the same few flushes and one ext4 checkpoint per wave.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import resource
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from plugins._files import mounts as mountinfo
from plugins._files.attribute import RawHit, attribute_hits
from plugins._files.overwrite import (
    SHARED_STREAM_BYTES,
    SHARED_STREAM_MAX,
    AlignedBuffer,
    FileOverwrite,
    Keystream,
    Pattern,
)
from plugins._files.paths import escape_path, is_within, unescape_path
from plugins.files import random_name
from plugins._files.walk import identity
from plugins.base import Method, PlannedItem, PurgeResult, Refusal
from plugins.scan import (
    FingerprintScanner,
    Hit,
    fingerprint_digest,
    token_fingerprints,
)

if TYPE_CHECKING:
    from plugins.files import FilesPlugin

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Failed(Exception):
    """One item's purge stopped; ``result`` records why and what state remains."""

    def __init__(self, result: PurgeResult) -> None:
        super().__init__(result.detail)
        self.result = result


@dataclass
class _Work:
    """One file in flight: its open descriptor, link names and progress."""

    planned: PlannedItem
    links: list[tuple[int, str]]  # (parent directory descriptor, name)
    descriptor: int
    overwrite: FileOverwrite
    patterns: list[Pattern]
    passes_done: int = 0
    renamed: list[str] = field(default_factory=list)
    #: The item key, kept apart because every stage looks it up.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.planned.item.key


@dataclass
class _Emptied:
    """A directory renamed to a random name, waiting for its removal."""

    key: str
    path: str
    parent_fd: int
    new_name: str
    device: int
    symlinks: int


class BatchPurge:
    """Purge one batch: files in stages, directories one by one after them."""

    def __init__(self, plugin: FilesPlugin, batch: Sequence[PlannedItem]) -> None:
        self.plugin = plugin
        self.batch = batch
        self.context = plugin.context
        self.log = plugin.log
        self._directories: dict[str, int] = {}
        self._directory_paths: dict[int, str] = {}
        self._writable_directories: dict[int, bool] = {}
        self._buffer = AlignedBuffer()
        self._scratch = AlignedBuffer()
        # Directories changed since the last ext4 checkpoint.
        self._changed: set[str] = set()

    def close(self) -> None:
        self._close_directories()
        self._buffer.close()
        self._scratch.close()

    def _close_directories(self) -> None:
        for descriptor in self._directories.values():
            os.close(descriptor)
        self._directories.clear()
        self._directory_paths.clear()
        self._writable_directories.clear()

    def run(self) -> Iterator[PurgeResult]:
        # Files first, then directories in discovery order: a directory comes
        # after everything in it, so this keeps every directory after its
        # contents and lets one checkpoint cover many emptied directories.
        from plugins._files.mask import mask_files

        masks = [p for p in self.batch if p.decision.method == Method.MASK]
        files = [
            p
            for p in self.batch
            if p.item.kind == "file" and p.decision.method == Method.CLEAR_OVERWRITE
        ]
        yield from self._files(files)
        yield from mask_files(self, masks)
        done = {id(planned) for planned in files + masks}
        directories = []
        for planned in self.batch:
            if id(planned) in done:
                continue
            if self.context.should_stop():
                return
            if planned.decision.permitted:
                directories.append(planned)
                continue
            refusal = planned.decision.refusal
            result = PurgeResult(
                planned.item.key, "blocked", refusal.detail, refusal=refusal
            )
            self._log_result(result)
            yield result
        yield from self._remove_directories(directories)

    # -- directories ----------------------------------------------------------

    def _remove_directories(self, group: list[PlannedItem]) -> Iterator[PurgeResult]:
        """Remove directories in waves, each after every directory inside it.

        A wave contains directories with no other waiting directory inside
        them, so one flush after the renames, one ext4 checkpoint and one
        flush after the removals serve the whole wave.
        """
        pending = group
        while pending:
            if self.context.should_stop():
                return
            wave: list[PlannedItem] = []
            waiting: list[PlannedItem] = []
            parents: set[str] = set()
            for planned in pending:
                path = unescape_path(planned.item.key)
                # Discovery yields a directory after its contents, so a
                # directory named in ``parents`` has a child earlier in the list.
                (waiting if path in parents else wave).append(planned)
                parents.add(os.path.dirname(path))
            try:
                results = self._remove_wave(wave)
            finally:
                self._close_directories()
            for result in results:
                self._log_result(result)
                yield result
            pending = waiting

    def _remove_wave(self, wave: list[PlannedItem]) -> list[PurgeResult]:
        results: dict[str, PurgeResult] = {}
        emptied: list[_Emptied] = []
        for planned in wave:
            key = planned.item.key
            try:
                outcome = self._empty_and_rename(planned)
            except _Failed as failure:
                results[key] = failure.result
                continue
            except OSError as error:
                self.log.debug("directory removal failed", item=key, exc_info=True)
                results[key] = _failed(
                    key,
                    f"could not remove directory {key}: {error.strerror}; "
                    "what the purge had removed from it stays removed",
                )
                continue
            if isinstance(outcome, PurgeResult):
                results[key] = outcome
            else:
                emptied.append(outcome)
        emptied = self._flush_directories(emptied, results, "after rename")
        self._checkpoint_wave(emptied)
        for entry in emptied:
            try:
                os.rmdir(entry.new_name, dir_fd=entry.parent_fd)
            except OSError as error:
                results[entry.key] = _failed(
                    entry.key,
                    f"could not remove directory {entry.key} (renamed to "
                    f"{escape_path(entry.new_name)}): {error.strerror}",
                )
                continue
            self._changed.add(os.path.dirname(entry.path))
        emptied = [entry for entry in emptied if entry.key not in results]
        emptied = self._flush_directories(emptied, results, "after removal")
        for entry in emptied:
            links = entry.symlinks
            detail = "renamed and removed" + (
                f"; removed {links} symbolic link(s) in it" if links else ""
            )
            results[entry.key] = PurgeResult(
                entry.key,
                "purged",
                detail,
                method=Method.CLEAR_OVERWRITE,
                facts={"symlinks_removed": links},
            )
        return [results[p.item.key] for p in wave if p.item.key in results]

    def _empty_and_rename(self, planned: PlannedItem) -> _Emptied | PurgeResult:
        """Remove the directory's recorded symbolic links and rename it if empty.

        Returns a blocked result when entries the plan did not select remain.
        """
        item = planned.item
        path = unescape_path(item.key)
        parent, name = os.path.split(path)
        parent_fd = self._open_directory(parent, item.key)
        status = self._lstat(name, parent_fd, item.key)
        if not stat.S_ISDIR(status.st_mode) or (status.st_dev, status.st_ino) != (
            item.identity["dev"],
            item.identity["ino"],
        ):
            raise _fail(
                item.key, f"{item.key} was replaced after the plan; it was not touched"
            )
        descriptor = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
        try:
            recorded = self.plugin._symlinks.pop(path, None)
            if recorded is None:
                # A resumed job skips discovery; the plan kept the links.
                recorded = [
                    (unescape_path(name), int(inode))
                    for name, inode in planned.decision.params.get("symlinks", ())
                ]
            links = remove_symlinks(descriptor, recorded)
            if links:
                self._changed.add(path)
            remaining = os.listdir(descriptor)
        finally:
            os.close(descriptor)
        if remaining:
            shown = ", ".join(escape_path(entry) for entry in sorted(remaining)[:3])
            refusal = Refusal(
                "not-empty",
                f"{item.key} still holds {len(remaining)} entr{'y' if len(remaining) == 1 else 'ies'} "
                f"({shown}) that the plan did not select; it was left in place",
            )
            return PurgeResult(item.key, "blocked", refusal.detail, refusal=refusal)
        try:
            new_name = _rename_random(parent_fd, name)
        except OSError as error:
            raise _fail(
                item.key, f"could not remove directory {item.key}: {error.strerror}"
            ) from None
        return _Emptied(item.key, path, parent_fd, new_name, status.st_dev, links)

    def _flush_directories(
        self, emptied: list[_Emptied], results: dict[str, PurgeResult], stage: str
    ) -> list[_Emptied]:
        """Flush each filesystem of the wave once; a failure fails its directories."""
        by_device: dict[int, list[_Emptied]] = {}
        for entry in emptied:
            by_device.setdefault(entry.device, []).append(entry)
        for members in by_device.values():
            try:
                mountinfo.syncfs(members[0].parent_fd)
            except OSError as error:
                for entry in members:
                    results[entry.key] = _failed(
                        entry.key,
                        f"flushing the directory {entry.key} to the device {stage} "
                        f"failed: {error.strerror}; purge it again",
                    )
        return [entry for entry in emptied if entry.key not in results]

    def _checkpoint_wave(self, emptied: list[_Emptied]) -> None:
        """Checkpoint each ext4 filesystem whose emptied directories are only journaled."""
        changed = [entry for entry in emptied if entry.path in self._changed]
        devices: dict[int, _Emptied] = {}
        for entry in changed:
            devices.setdefault(entry.device, entry)
        for entry in devices.values():
            self._checkpoint(entry.parent_fd, entry.path)
        if changed:
            self._changed.clear()

    # -- files --------------------------------------------------------------

    def _files(self, group: list[PlannedItem]) -> Iterator[PurgeResult]:
        # Every file of a group stays open from its check to its unlink.
        limit = open_file_limit()
        for start in range(0, len(group), limit):
            yield from self._file_group(group[start : start + limit])

    def _file_group(self, group: list[PlannedItem]) -> Iterator[PurgeResult]:
        if not group:
            return
        results: dict[str, PurgeResult] = {}
        works: list[_Work] = []
        for planned in group:
            if self.context.should_stop():
                break  # items not started stay planned in the journal
            try:
                works.append(self._prepare(planned))
            except _Failed as failure:
                results[planned.item.key] = failure.result
        try:
            works = self._overwrite(works, results)
            works = self._remove(works, results)
        finally:
            for work in works:
                _close(work.descriptor)
        for planned in group:
            result = results.get(planned.item.key)
            if result is not None:
                self._log_result(result)
                yield result

    def _prepare(self, planned: PlannedItem) -> _Work:
        item = planned.item
        links = []
        for path in _link_paths(item):
            if planned.decision.params.get("resumed") and not os.path.lexists(path):
                path = self._renamed_leftover(path, item)
            parent, name = os.path.split(path)
            parent_fd = self._open_directory(parent, item.key)
            status = self._lstat(name, parent_fd, item.key)
            if (status.st_dev, status.st_ino) != (
                item.identity["dev"],
                item.identity["ino"],
            ):
                raise _fail(
                    item.key,
                    f"{escape_path(path)} was replaced after the plan; nothing was overwritten",
                )
            if not self._writable(parent_fd):
                raise _fail(
                    item.key,
                    f"the directory of {escape_path(path)} is not writable, so the file could not "
                    "be removed after an overwrite; nothing was overwritten. Fix the directory's "
                    "permissions or attributes (chattr -i) and purge again",
                )
            links.append((parent_fd, name))
        parent_fd, name = links[0]
        try:
            descriptor = os.open(name, os.O_RDWR | _OPEN_FLAGS, dir_fd=parent_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _fail(
                    item.key, f"{item.key} is now a symbolic link; it was not touched"
                ) from None
            raise _fail(
                item.key,
                f"cannot open {item.key} for writing: {error.strerror}; nothing was overwritten",
            ) from None
        try:
            status = os.fstat(descriptor)
            expected = item.identity
            found = identity(status)
            if planned.decision.params.get("resumed"):
                # An overwrite interrupted by a crash changed the time, and a
                # crash after the truncation left the size at 0.
                expected = dict(expected)
                expected.pop("mtime_ns", None)
                found.pop("mtime_ns", None)
                if found.get("size") == 0:
                    expected.pop("size", None)
                    found.pop("size", None)
            if not stat.S_ISREG(status.st_mode) or found != expected:
                raise _fail(
                    item.key,
                    f"{item.key} changed after the plan (inode, size or time differ); nothing was overwritten",
                )
            holders = self.plugin._open.holders(status.st_dev, status.st_ino)
            if holders:
                refusal = Refusal(
                    "open-file",
                    f"{item.key} is open in {', '.join(holders[:3])}; nothing was overwritten",
                )
                raise _Failed(
                    PurgeResult(item.key, "blocked", refusal.detail, refusal=refusal)
                )
            overwrite = FileOverwrite(descriptor, status.st_size)
        except OSError as error:
            os.close(descriptor)
            raise _fail(
                item.key,
                f"cannot inspect {item.key}: {error.strerror}; nothing was overwritten",
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        params = planned.decision.params or self.plugin._method_params()
        patterns = [Pattern.random() for _ in range(int(params.get("passes", 1)))]
        if params.get("final_zero"):
            patterns.append(Pattern())
        return _Work(planned, links, descriptor, overwrite, patterns)

    def _overwrite(
        self, works: list[_Work], results: dict[str, PurgeResult]
    ) -> list[_Work]:
        passes = max((len(work.patterns) for work in works), default=0)
        for index in range(passes):
            if index and self.context.should_stop():
                self.log.warning(
                    "stopping after pass", passes_done=index, passes_planned=passes
                )
                break
            _share_keystreams(works, index)
            for work in works:
                if index >= len(work.patterns):
                    continue
                try:
                    work.overwrite.write_pass(
                        work.patterns[index],
                        self._buffer,
                        self.context.progress,
                        spare=self._scratch,
                    )
                    work.passes_done = index + 1
                except OSError as error:
                    done = getattr(error, "done", 0)
                    results[work.key] = _failed(
                        work.key,
                        f"overwrite pass {index + 1} of {len(work.patterns)} of {work.key} "
                        f"stopped after {done} of {work.overwrite.allocated} bytes: "
                        f"{error.strerror}. The file keeps its name and may be partly "
                        "overwritten; free space or fix the device, then purge it again",
                    )
            works = self._drop_failed(works, results)
            works = self._flush(works, results, f"after pass {index + 1}")
            if index + 1 < passes:
                _release_keystreams(works, index)
        if _inject_mismatch(self.context.settings):
            for work in works:
                work.overwrite.corrupt_for_test()
        for work in works:
            try:
                work.overwrite.drop_cache()
            except OSError:
                self.log.debug("fadvise failed", item=work.key, exc_info=True)
        for work in works:
            self._read_back(work)
        return works

    def _read_back(self, work: _Work) -> None:
        fraction = float(work.planned.decision.params.get("readback", 1.0))
        pattern = work.patterns[work.passes_done - 1] if work.passes_done else None
        if pattern is None:
            self.plugin._readback[work.key] = (
                True,
                "no data to read back (the file holds no allocated data)",
            )
            return
        if fraction <= 0:
            self.plugin._readback[work.key] = (True, "off: readback is 0")
            return
        try:
            mismatch = work.overwrite.read_back(
                pattern, fraction, self._buffer, self._scratch
            )
        except OSError as error:
            mismatch = f"read failed: {error.strerror}"
        share = "all data" if fraction >= 1 else f"{fraction:.0%} of the data"
        if mismatch:
            self.plugin._readback[work.key] = (
                False,
                f"read-back of {share} after pass {work.passes_done} ({pattern.name}): {mismatch}",
            )
        else:
            self.plugin._readback[work.key] = (
                True,
                f"read {share} back after pass {work.passes_done} ({pattern.name}); it matched",
            )

    def _remove(
        self, works: list[_Work], results: dict[str, PurgeResult]
    ) -> list[_Work]:
        for work in works:
            try:
                # _prepare checked the open file's fstat against these.
                expected = (work.planned.item.identity["dev"], work.planned.item.identity["ino"])
                for parent_fd, name in work.links:
                    work.renamed.append(_rename_own_link(parent_fd, name, expected))
            except _Replaced as replaced:
                results[work.key] = _failed(
                    work.key,
                    f"{work.key} was overwritten, but its name {escape_path(replaced.name)} "
                    "now leads to another file, which was left as it is; plan again "
                    "to include the new file",
                )
            except OSError as error:
                results[work.key] = _failed(
                    work.key,
                    f"{work.key} was overwritten, but renaming it failed: {error.strerror}; "
                    "its old name and the overwritten file remain",
                )
        works = self._flush(self._drop_failed(works, results), results, "after rename")
        for work in works:
            try:
                os.ftruncate(work.descriptor, 0)
                for (parent_fd, _), new_name in zip(work.links, work.renamed):
                    os.unlink(new_name, dir_fd=parent_fd)
                    self._changed.add(self._directory_paths[parent_fd])
            except OSError as error:
                results[work.key] = _failed(
                    work.key,
                    f"{work.key} was overwritten and renamed to {', '.join(work.renamed)}, but "
                    f"removing it failed: {error.strerror}",
                )
        works = self._flush(self._drop_failed(works, results), results, "after unlink")
        for work in works:
            overwrite = work.overwrite
            passes = f"{work.passes_done} pass(es)"
            if work.passes_done < len(work.patterns):
                passes += (
                    f" of {len(work.patterns)} planned (the job was asked to stop)"
                )
            results[work.key] = PurgeResult(
                work.key,
                "purged",
                f"overwrote {overwrite.allocated} allocated bytes with {passes}, renamed, truncated and unlinked",
                bytes=overwrite.allocated,
                method=Method.CLEAR_OVERWRITE,
                facts={
                    "size": overwrite.size,
                    "allocated": overwrite.allocated,
                    "passes": work.passes_done,
                    "direct_io": overwrite.direct,
                    "links": len(work.links),
                    "readback": self.plugin._readback.get(work.key, (False, ""))[1],
                },
            )
        return works

    def _drop_failed(
        self, works: list[_Work], results: dict[str, PurgeResult]
    ) -> list[_Work]:
        if not results:
            return works
        kept = []
        for work in works:
            if work.key in results:
                _close(work.descriptor)
            else:
                kept.append(work)
        return kept

    def _flush(
        self, works: list[_Work], results: dict[str, PurgeResult], stage: str
    ) -> list[_Work]:
        """Flush each filesystem of the batch once (syncfs); a failure fails its files."""
        by_device: dict[int, list[_Work]] = {}
        for work in works:
            by_device.setdefault(work.planned.item.identity["dev"], []).append(work)
        for members in by_device.values():
            try:
                mountinfo.syncfs(members[0].descriptor)
            except OSError as error:
                for work in members:
                    results[work.key] = _failed(
                        work.key,
                        f"flushing {work.key} to the device {stage} failed: {error.strerror}; "
                        "the state on the device is unknown, so purge it again",
                    )
        return self._drop_failed(works, results)

    # -- helpers ------------------------------------------------------------

    def _checkpoint(self, descriptor: int, path: str) -> None:
        """On ext4, write the emptied directory's wiped block home before it is freed."""
        mount = self.plugin._mount(path)
        if mount is None or mount.fstype not in ("ext3", "ext4") or os.geteuid() != 0:
            return
        try:
            mountinfo.checkpoint_ext4(descriptor)
        except OSError as error:
            # NOTE: without the checkpoint (Linux before 5.13) the freed
            # directory block may keep older names; the device scan reports them.
            self.log.debug("journal checkpoint failed", error=error.strerror)

    def _writable(self, descriptor: int) -> bool:
        """Tell whether entries of the open directory can be renamed and removed."""
        writable = self._writable_directories.get(descriptor)
        if writable is None:
            writable = os.access(".", os.W_OK, dir_fd=descriptor)
            self._writable_directories[descriptor] = writable
        return writable

    def _open_directory(self, directory: str, key: str) -> int:
        """Open a directory without following symbolic links below the target root."""
        if directory in self._directories:
            return self._directories[directory]
        root = self.plugin.root
        try:
            if is_within(directory, root) and directory != root:
                parent_fd = self._open_directory(os.path.dirname(directory), key)
                descriptor = os.open(
                    os.path.basename(directory), _DIRECTORY_FLAGS, dir_fd=parent_fd
                )
            else:
                descriptor = os.open(directory, _DIRECTORY_FLAGS)
        except OSError as error:
            raise _fail(
                key,
                f"cannot open directory {escape_path(directory)}: {error.strerror}; nothing was changed",
            ) from None
        self._directories[directory] = descriptor
        self._directory_paths[descriptor] = directory
        return descriptor

    def _renamed_leftover(self, path: str, item) -> str:
        """Return the random name a crash left the file under, to finish its removal."""
        from plugins.files import find_renamed_leftover

        leftover = find_renamed_leftover(path, item.identity)
        if leftover is None:
            raise _fail(
                item.key, f"{item.key} no longer exists; it changed after the plan"
            )
        self.log.info(
            "finishing an interrupted removal",
            item=item.key,
            leftover=escape_path(leftover),
        )
        return leftover

    def _lstat(self, name: str, parent_fd: int, key: str) -> os.stat_result:
        try:
            return os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            raise _fail(
                key, f"{key} no longer exists; it changed after the plan"
            ) from None
        except OSError as error:
            raise _fail(
                key, f"cannot inspect {key}: {error.strerror}; nothing was changed"
            ) from None

    def _log_result(self, result: PurgeResult) -> None:
        if result.status == "purged":
            self.log.info("item purged", item=result.key, bytes=result.bytes)
        elif result.status == "blocked":
            self.log.warning(
                "item blocked",
                item=result.key,
                reason=result.refusal.reason if result.refusal else "",
            )
        else:
            self.log.error("item failed", item=result.key, detail=result.detail)


#: Descriptors kept free for directories, the journal and the device scan.
_SPARE_DESCRIPTORS = 256


def open_file_limit() -> int:
    """Return how many files a group may hold open, raising RLIMIT_NOFILE if allowed.

    Many systems start processes with a soft limit of 1024 descriptors and a
    far higher hard limit, so the soft limit is raised towards the hard one
    as far as a full batch needs.
    """
    from plugins.files import FilesPlugin

    wanted = FilesPlugin.batch_size + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return FilesPlugin.batch_size
    return max(16, min(FilesPlugin.batch_size, soft - _SPARE_DESCRIPTORS))


def _inject_mismatch(settings) -> bool:
    """Tell whether a test asked to corrupt the data after the last pass.

    Test-only: the setting ``inject_readback_mismatch`` or the environment
    variable LETHE_TEST_INJECT_READBACK_MISMATCH=1 (for tests through the
    CLI) flips one byte, so that read-back and verification must fail.
    """
    if settings.get("inject_readback_mismatch"):
        return True
    return os.environ.get("LETHE_TEST_INJECT_READBACK_MISMATCH") == "1"


def _share_keystreams(works: list[_Work], index: int) -> None:
    """Give the small files of pass ``index`` patterns cut from shared keystreams."""
    small = [
        work
        for work in works
        if index < len(work.patterns)
        and work.patterns[index].key
        and not work.overwrite.direct
        and work.overwrite.size <= SHARED_STREAM_MAX
    ]
    per_stream = SHARED_STREAM_BYTES // SHARED_STREAM_MAX
    for start in range(0, len(small), per_stream):
        group = small[start : start + per_stream]
        if len(group) < 2:
            continue
        stream = Keystream([work.overwrite.size for work in group])
        for work, pattern in zip(group, stream.patterns()):
            work.patterns[index] = pattern


def _release_keystreams(works: list[_Work], index: int) -> None:
    """Drop the shared keystreams of a pass that no read-back needs."""
    for work in works:
        if index < len(work.patterns) and work.patterns[index].stream is not None:
            work.patterns[index] = dataclasses.replace(
                work.patterns[index], stream=None
            )


def _fail(key: str, detail: str) -> _Failed:
    return _Failed(_failed(key, detail))


def _failed(key: str, detail: str) -> PurgeResult:
    return PurgeResult(key, "failed", detail, method=Method.CLEAR_OVERWRITE)


def _close(descriptor: int) -> None:
    try:
        os.close(descriptor)
    except OSError:
        pass


def _link_paths(item) -> list[str]:
    links = item.attributes.get("links")
    return (
        [unescape_path(link) for link in links] if links else [unescape_path(item.key)]
    )


class _Replaced(Exception):
    """A planned name led to another file than the one overwritten."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _rename_own_link(parent_fd: int, name: str, expected: tuple[int, int]) -> str:
    """Rename ``name`` to a random name, if it still leads to the open file.

    ``expected`` is the device and inode number of the open file. The name
    is checked after the rename, which is atomic, so a file moved onto the
    name while the purge ran is renamed back and never unlinked.
    """
    new_name = _rename_random(parent_fd, name)
    found = os.stat(new_name, dir_fd=parent_fd, follow_symlinks=False)
    if (found.st_dev, found.st_ino) != expected:
        if not _rename_noreplace(parent_fd, new_name, name):
            os.rename(new_name, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        raise _Replaced(name)
    return new_name


def _rename_random(parent_fd: int, name: str) -> str:
    """Rename an entry to a random name of the same byte length, so the old name's bytes are overwritten."""
    length = len(os.fsencode(name))
    while True:
        new_name = random_name(length)
        try:
            if _rename_noreplace(parent_fd, name, new_name):
                return new_name
        except FileExistsError:
            continue  # the random name is taken; draw another
        try:
            os.lstat(new_name, dir_fd=parent_fd)
        except FileNotFoundError:
            break
    os.rename(name, new_name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    return new_name


#: renameat2(2) flag that makes the rename fail with EEXIST instead of
#: replacing an existing entry (linux/fs.h).
_RENAME_NOREPLACE = 1
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _rename_noreplace(parent_fd: int, name: str, new_name: str) -> bool:
    """Rename within one directory unless ``new_name`` exists (one system call).

    Returns False when the C library or the filesystem lacks renameat2 with
    RENAME_NOREPLACE, so the caller checks and renames in two steps.
    """
    if _renameat2 is None:
        return False
    result = _renameat2(
        parent_fd, os.fsencode(name), parent_fd, os.fsencode(new_name), _RENAME_NOREPLACE
    )
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(error, os.strerror(error), name)


def remove_symlinks(directory_fd: int, links: list[tuple[str, int]]) -> int:
    """Remove the listed symbolic links that are still the same links; return how many."""
    removed = 0
    for name, inode in links:
        try:
            status = os.lstat(name, dir_fd=directory_fd)
        except OSError:
            continue
        if not stat.S_ISLNK(status.st_mode) or status.st_ino != inode:
            continue
        new_name = _rename_random(directory_fd, name)
        os.unlink(new_name, dir_fd=directory_fd)
        removed += 1
    if removed:
        os.fsync(directory_fd)
    return removed


def remove_recorded_symlinks(plugin: FilesPlugin) -> int:
    """Remove symbolic links recorded at discovery whose directories were kept."""
    # NOTE: a resumed job has no discovery, so links directly in a kept
    # directory (the target root with keep_root, a mount point) stay.
    removed = 0
    for directory, links in list(plugin._symlinks.items()):
        try:
            descriptor = os.open(directory, _DIRECTORY_FLAGS)
        except OSError:
            continue
        try:
            removed += remove_symlinks(descriptor, links)
        except OSError as error:
            plugin.log.error(
                "symlink removal failed",
                directory=escape_path(directory),
                error=error.strerror,
            )
        finally:
            os.close(descriptor)
    plugin._symlinks.clear()
    return removed


@dataclass
class ScanOutcome:
    """The findings of the raw scan of one item's device, for that item."""

    ran: bool
    detail: str
    hits: list[str] = field(default_factory=list)
    #: Hits whose bytes belong to a live file that the job did not purge.
    explained: list[str] = field(default_factory=list)
    #: Offsets of the item's name inside an xfs log, which cannot be cleared.
    residual: list[int] = field(default_factory=list)


def scan_device(plugin: FilesPlugin) -> dict[str, ScanOutcome]:
    """Scan each block device once for the fingerprints of the items purged on it."""
    by_device: dict[int, list[str]] = {}
    for key, device in plugin._purged_devices.items():
        by_device.setdefault(device, []).append(key)
    outcomes: dict[str, ScanOutcome] = {}
    for device_number, keys in by_device.items():
        mount = mount_of_device(plugin, device_number)
        outcome = _scan_one(plugin, mount, keys)
        for key in keys:
            outcomes[key] = outcome.get(key) or ScanOutcome(False, "")
    return outcomes


def mount_of_device(plugin: FilesPlugin, device_number: int) -> mountinfo.Mount | None:
    major, minor = os.major(device_number), os.minor(device_number)
    root = plugin._mount()
    if root is not None and (root.major, root.minor) == (major, minor):
        return root
    plugin._mount()  # loads the mount table
    matches = [m for m in plugin._mounts if (m.major, m.minor) == (major, minor)]
    return matches[-1] if matches else root


def _scan_one(
    plugin: FilesPlugin, mount: mountinfo.Mount | None, keys: list[str]
) -> dict[str, ScanOutcome]:
    device = mountinfo.block_device(mount.major, mount.minor) if mount else None
    if mount is not None and device is None:
        device = mountinfo.source_device(mount)
    if mount is None or device is None:
        detail = "not run: no block device holds the filesystem"
        return {key: ScanOutcome(False, detail) for key in keys}
    try:
        descriptor = os.open(
            mount.mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        )
        try:
            mountinfo.syncfs(descriptor)
        finally:
            os.close(descriptor)
        os.close(os.open(device, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as error:
        detail = f"not run: cannot read {device}: {error.strerror}"
        return {key: ScanOutcome(False, detail) for key in keys}
    scanner = FingerprintScanner()
    names: dict[str, set[str]] = {}
    for key in keys:
        scanner.add_all(key, plugin._purged_fingerprints.get(key, ()))
        basenames = [os.fsencode(os.path.basename(unescape_path(key)))]
        names[key] = {
            fingerprint_digest(token) for token in token_fingerprints(*basenames)
        }
    log_range = mountinfo.xfs_log_range(device) if mount.fstype == "xfs" else None
    detail = f"{device} ({mount.fstype}, {len(scanner)} fingerprints)"
    outcomes = {key: ScanOutcome(True, detail) for key in keys}
    found: list[Hit] = []
    try:
        for hit in scanner.scan_file(device, direct=True):
            in_log = log_range is not None and log_range[0] <= hit.offset < log_range[1]
            if in_log and hit.digest in names.get(hit.owner, set()):
                outcomes[hit.owner].residual.append(hit.offset)
                continue
            found.append(hit)
    except OSError as error:
        plugin.log.error("device scan failed", device=device, error=error.strerror)
        detail = f"not run: reading {device} failed: {error.strerror}"
        return {key: ScanOutcome(False, detail) for key in keys}
    if found:
        _attribute(plugin, mount, keys, found, outcomes)
    plugin.log.info(
        "device scanned",
        device=device,
        fingerprints=len(scanner),
        items_with_hits=sum(1 for outcome in outcomes.values() if outcome.hits),
        hits_explained=sum(len(outcome.explained) for outcome in outcomes.values()),
    )
    return outcomes


def _attribute(
    plugin: FilesPlugin,
    mount: mountinfo.Mount,
    keys: list[str],
    found: list[Hit],
    outcomes: dict[str, ScanOutcome],
) -> None:
    """Sort scan hits into those live unpurged files explain and residue."""
    by_digest = {
        fingerprint_digest(fingerprint): fingerprint
        for key in keys
        for fingerprint in plugin._purged_fingerprints.get(key, ())
    }
    raw = sorted({(hit.offset, hit.digest) for hit in found})
    index = {place: number for number, place in enumerate(raw)}
    paths: set[str] = set()
    inodes: set[int] = set()
    for key in keys:
        inode, links = plugin._purged_files.get(key, (None, []))
        if inode is not None:
            inodes.add(inode)
        paths.update(links)
    attribution = attribute_hits(
        mount.mount_point,
        os.makedev(mount.major, mount.minor),
        [RawHit(offset, by_digest[digest]) for offset, digest in raw],
        paths,
        inodes,
    )
    for hit in found:
        where = f"fingerprint {hit.digest[:12]} at byte {hit.offset}"
        owner = attribution.explained.get(index[(hit.offset, hit.digest)])
        if owner is not None:
            outcomes[hit.owner].explained.append(
                f"{where} explained by live file {escape_path(owner)}"
            )
        elif attribution.complete:
            outcomes[hit.owner].hits.append(where)
        else:
            outcomes[hit.owner].hits.append(
                f"{where} (could not attribute: the walk of "
                f"{escape_path(mount.mount_point)} stopped after "
                f"{attribution.files_examined} files or met an unreadable directory)"
            )
    plugin.log.info(
        "scan hits attributed",
        device_number=os.makedev(mount.major, mount.minor),
        hits=len(raw),
        explained=len(attribution.explained),
        files_examined=attribution.files_examined,
        complete=attribution.complete,
    )
