"""Wipe a filesystem's free space, and scan a device for leftover fingerprints.

Deleting a file frees its blocks without clearing them. :func:`wipe_free_space`
fills every free block with random data through ordinary files, syncs them,
and removes them again. Running as root, the fill also takes the blocks the
filesystem reserves for root. The fill files live in one hidden directory that
is always removed, also after errors and when the job is asked to stop.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from collections.abc import Iterable, Mapping

import structlog

from plugins._overwrite import CHUNK, Keystream, aligned_buffer, release
from plugins.base import JobContext, Method, PurgeResult, Refusal
from plugins.scan import FingerprintScanner, Hit

# NOTE: a fill killed with SIGKILL or a power loss leaves its directory
# behind, and a later run does not look for such leftovers.
FILL_PREFIX = ".lethe-free-space-"
#: Largest fill file; several smaller files keep each one under any
#: filesystem's maximum file size and let the fill give space back in steps.
FILE_SIZE = 1024 * 1024 * 1024
#: Bytes written by other processes during the fill that still count as noise
#: (metadata, logs); more than this means someone else needs the space.
#: NOTE: an estimate, checked only on ext4; the 1% of the fill added to it
#: covers the fill's own extent-tree blocks.
FOREIGN_ALLOWANCE = 2 * 1024 * 1024

_log = structlog.get_logger(__name__).bind(plugin="files", step="wipe-free-space")

UNREACHABLE = (
    "the filesystem journal, which may hold recent metadata and, in data=journal mode, file contents",
    "slack space after the end of live files in their last block",
    "metadata blocks: directory entries (names of deleted files), inode tables, extent trees",
    "data stored inline in inodes or directory blocks by small-file optimisations",
    "blocks the device remapped or over-provisioned (flash wear levelling, bad-sector spares)",
)


class _Crowded(Exception):
    """Another process consumed free space while the fill was running."""


def wipe_free_space(path: str, context: JobContext) -> PurgeResult:
    """Fill the free space of the filesystem holding ``path`` with random data.

    A context with ``dry_run`` set writes nothing and returns a ``blocked``
    result. Otherwise the function returns a ``purged`` result with the bytes covered and what the fill
    cannot reach, or a ``failed`` result when the job was stopped, another
    process needed the space, or the fill could not write. The fill files
    are removed in every case.
    """
    log = _log.bind(target=path)
    # The target directory may already be gone after its files were purged;
    # any existing ancestor on the same filesystem serves as well.
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        before = os.statvfs(path)
        root_stat = os.stat(path)
    except OSError as error:
        return _failed(
            path, f"cannot examine {path!r}: {os.strerror(error.errno or 0)}"
        )
    if not stat.S_ISDIR(root_stat.st_mode):
        path = os.path.dirname(os.path.abspath(path))
    directory = os.path.join(path, FILL_PREFIX + secrets.token_hex(6))
    free_before = before.f_bfree * before.f_frsize
    facts: dict[str, object] = {
        "filesystem_size": before.f_blocks * before.f_frsize,
        "free_before": free_before,
        "free_for_users_before": before.f_bavail * before.f_frsize,
        "reserved_included": os.geteuid() == 0,
        "unreachable": list(UNREACHABLE),
    }
    if context.dry_run:
        return PurgeResult(
            "wipe-free-space",
            "blocked",
            detail=f"dry run: would fill {free_before} free bytes of the filesystem holding {path}",
            method=Method.WIPE_FREE_SPACE,
            refusal=Refusal("dry-run", "a dry run writes nothing"),
            facts=facts,
        )
    log.info("fill.start", free=free_before)
    filler = _Filler(directory, root_stat.st_dev, before, context)
    try:
        os.mkdir(directory, 0o700)
        filler.fill()
        filler.sync()
    except _Crowded as crowded:
        log.warning(
            "fill.stopped",
            reason="space needed by another process",
            foreign=crowded.args[0],
        )
        return _failed(
            path,
            f"another process wrote {crowded.args[0]} bytes to the filesystem during the wipe; "
            "stopped and removed the fill files so it gets its space back; retry when the "
            "filesystem is quiet",
            facts | {"bytes_covered": filler.written},
        )
    except _StopRequested:
        return _failed(
            path,
            "stopped on request; the fill files were removed, free space is only partly wiped",
            facts | {"bytes_covered": filler.written},
        )
    except OSError as error:
        log.debug("fill.os_error", exc_info=True)
        return _failed(
            path,
            f"free-space fill failed: {os.strerror(error.errno or 0)}; the fill files were removed",
            facts | {"bytes_covered": filler.written},
        )
    finally:
        removed = filler.remove()
        if filler.full_since is not None:
            # Other writers got ENOSPC for this long, from the end of the fill
            # through the sync until the fill files were gone.
            facts["full_for_seconds"] = round(time.monotonic() - filler.full_since, 3)
        facts["fill_files"] = removed
    after = os.statvfs(path)
    facts.update(
        bytes_covered=filler.written,
        free_after=after.f_bfree * after.f_frsize,
        free_left_unfilled=filler.left_free,
    )
    log.info("fill.done", covered=filler.written, files=removed)
    return PurgeResult(
        "wipe-free-space",
        "purged",
        detail=(
            f"filled {filler.written} of {free_before} free bytes with random data, synced and "
            f"removed {removed} fill file(s); {filler.left_free} bytes stayed free"
        ),
        bytes=filler.written,
        method=Method.WIPE_FREE_SPACE,
        facts=facts,
    )


def _failed(
    path: str, detail: str, facts: Mapping[str, object] | None = None
) -> PurgeResult:
    _log.error("fill.failed", target=path, error=detail)
    return PurgeResult(
        "wipe-free-space",
        "failed",
        detail=detail,
        method=Method.WIPE_FREE_SPACE,
        facts=dict(facts or {}),
    )


class _StopRequested(Exception):
    pass


class _Filler:
    """Writes fill files until the filesystem reports it is full."""

    def __init__(
        self,
        directory: str,
        device: int,
        before: os.statvfs_result,
        context: JobContext,
    ) -> None:
        self.directory = directory
        self.device = device
        self.context = context
        self.block = before.f_frsize or 4096
        self.free_before = before.f_bfree * before.f_frsize
        self.written = 0
        self.left_free = 0
        self.full_since: float | None = None
        self.paths: list[str] = []
        self._allocated_closed = 0
        self._keystream = Keystream()

    def fill(self) -> None:
        buffer = aligned_buffer()
        view = memoryview(buffer)
        try:
            while True:
                if not self._fill_file(view):
                    break
        finally:
            release(view, buffer)
        self.full_since = time.monotonic()
        self.left_free = os.statvfs(self.directory).f_bfree * self.block

    def _fill_file(self, view: memoryview) -> bool:
        """Write one fill file; return False once the filesystem is full."""
        path = os.path.join(self.directory, f"fill-{len(self.paths):06d}")
        try:
            descriptor = _open_fill(path)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                return False
            raise
        self.paths.append(path)
        size = 0
        chunk = CHUNK
        try:
            while size < FILE_SIZE:
                if self.context.should_stop():
                    raise _StopRequested
                self._keystream.fill(self.written, view, chunk)
                try:
                    count = os.pwrite(descriptor, view[:chunk], size)
                except OSError as error:
                    if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise
                    if error.errno == errno.EFBIG:
                        return True
                    if chunk <= self.block:
                        return False
                    chunk = max(self.block, chunk // 8)
                    continue
                size += count
                self.written += count
                self.context.progress(count)
                self._check_foreign(descriptor)
            return True
        finally:
            os.fsync(descriptor)
            self._allocated_closed += os.fstat(descriptor).st_blocks * 512
            os.close(descriptor)

    def _check_foreign(self, descriptor: int) -> None:
        """Raise _Crowded when free space fell by more than the fill explains."""
        ours = self._allocated_closed + os.fstat(descriptor).st_blocks * 512
        now = os.statvfs(self.directory)
        consumed = self.free_before - now.f_bfree * now.f_frsize
        foreign = consumed - ours
        if foreign > FOREIGN_ALLOWANCE + ours // 100:
            raise _Crowded(foreign)

    def sync(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.sync()

    def remove(self) -> int:
        """Remove every fill file and the directory; return how many files there were."""
        removed = 0
        for path in self.paths:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass
        except OSError as error:
            _log.error(
                "fill.cleanup_failed",
                directory=self.directory,
                error=os.strerror(error.errno or 0),
            )
        return removed


def _open_fill(path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_DIRECT, 0o600)
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    # The filesystem does not take O_DIRECT (tmpfs, some FUSE filesystems).
    return os.open(path, flags, 0o600)


def device_of(path: str) -> str:
    """Return the block device node under the filesystem holding ``path``."""
    devno = os.stat(path).st_dev
    name = os.path.basename(
        os.path.realpath(f"/sys/dev/block/{os.major(devno)}:{os.minor(devno)}")
    )
    return f"/dev/{name}"


def scan_device(
    device: str,
    fingerprints: Mapping[str, Iterable[bytes]],
    progress=None,
) -> list[Hit]:
    """Scan a raw device with O_DIRECT for fingerprints, keyed by owner; return every hit."""
    scanner = FingerprintScanner()
    for owner, owned in fingerprints.items():
        scanner.add_all(owner, owned)
    return list(scanner.scan_file(device, progress=progress, direct=True))
