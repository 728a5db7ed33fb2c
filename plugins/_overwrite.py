"""Overwrite passes and read-back over a block device with large O_DIRECT I/O.

Random passes use an AES-128-CTR keystream addressed by byte offset, so the
read-back regenerates the expected bytes chunk by chunk and never stores
the pattern. A pass can start from a list of byte ranges an earlier,
interrupted run already wrote, and reports the ranges it has written
durably as it goes, so that a resumed job continues where it stopped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import math
import mmap
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Size of one read and of each I/O buffer: large enough that per-call
#: overhead disappears behind device bandwidth, small enough that the
#: buffers stay cheap.
CHUNK = 8 * 1024 * 1024
#: Size of one write of a pass. Each chunk's keystream is generated just
#: before its write, and a chunk this small is still in the CPU cache when
#: the kernel sends it. On the 2-core test VM (8 GiB loop device,
#: benchmarks/block_overwrite.py) 2 MiB writes ran at 1.2 to 1.4 times dd's
#: throughput, and 8 MiB writes at 0.89 times.
WRITE_CHUNK = 2 * 1024 * 1024
#: Size of one read of a full read-back, the request size of
#: ``dd bs=4M``. On the same VM 4 MiB reads beat 8 MiB reads in each of six
#: paired runs against dd, with 1, 2 and 4 threads.
READ_CHUNK = 4 * 1024 * 1024
#: Size of the units a sampled read-back picks from.
SAMPLE_UNIT = 1024 * 1024
#: Offsets of failed or mismatched sectors kept for the report; the count is
#: always complete.
MAX_OFFSETS = 100
#: I/O threads per pass; see :func:`_run_workers`. Four keep several
#: requests in flight while others generate keystream, at a cost of 32 MiB
#: of buffers per device for a pass and 64 MiB for a read-back.
WORKERS = 4
#: Default seconds between two checkpoints of a pass. Each checkpoint costs
#: one fdatasync, a cache flush that stalls the device's queue for tens of
#: milliseconds on the test VM, and a crash loses at most this much writing.
CHECKPOINT_SECONDS = 10.0
#: Errors after which the device is presumed gone rather than partly bad.
GONE_ERRNOS = {errno.ENXIO, errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN}

_PAGE = mmap.PAGESIZE
_ZEROS = bytes(CHUNK)
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_libc.memcmp.restype = ctypes.c_int

#: Byte ranges as ``[start, end)`` pairs, the form checkpoints store.
Ranges = list[list[int]]


class DeviceGone(OSError):
    """The device vanished or shrank while a pass was running."""


class Stopped(Exception):
    """The job was asked to stop between two chunks."""


class Pattern:
    """Bytes a pass writes, addressable by device offset."""

    name = "pattern"

    def fill(self, offset: int, view: memoryview, length: int) -> None:
        raise NotImplementedError


class ZeroPattern(Pattern):
    name = "zero"

    def fill(self, offset: int, view: memoryview, length: int) -> None:
        view[:length] = _ZEROS[:length]


class Keystream(Pattern):
    """AES-128-CTR keystream whose byte ``n`` depends only on key, counter and ``n``.

    The key and the initial counter come from ``os.urandom`` unless a
    checkpoint supplies them. A 128-bit key is enough for a pattern that
    only has to be unpredictable and never repeat. It takes 10 AES rounds
    per block instead of the 14 of a 256-bit key, which matters because
    the read-back regenerates the keystream at device speed.
    """

    name = "random"

    def __init__(self, key: bytes | None = None, counter: int | None = None) -> None:
        self._key = os.urandom(16) if key is None else key
        if counter is None:
            counter = int.from_bytes(os.urandom(16), "big")
        self._counter = counter

    def fill(self, offset: int, view: memoryview, length: int) -> None:
        # ``update_into`` needs 15 bytes of room past the output, which every
        # buffer made by :func:`aligned_buffer` has.
        if offset % 16:
            raise ValueError(f"keystream offset {offset} is not a multiple of 16")
        counter = (self._counter + offset // 16) % (1 << 128)
        encryptor = Cipher(
            algorithms.AES(self._key), modes.CTR(counter.to_bytes(16, "big"))
        ).encryptor()
        encryptor.update_into(_ZEROS[:length], view[: length + 15])

    def block(self, offset: int, length: int) -> bytes:
        """Return ``length`` bytes of the keystream at ``offset``."""
        buffer = bytearray(length + 16)
        self.fill(offset, memoryview(buffer), length)
        return bytes(buffer[:length])

    def spec(self) -> dict[str, str]:
        """Return the key and counter as hex, for a checkpoint.

        They reveal nothing about the data the pass destroys: they only
        generate the pattern written over it, so that a resumed job can
        write the same pattern and compare the device against it.
        """
        return {
            "pattern": self.name,
            "key": self._key.hex(),
            "counter": f"{self._counter:032x}",
        }


def pattern_spec(pattern: Pattern) -> dict[str, str]:
    """Describe a pattern so that :func:`pattern_from_spec` can rebuild it."""
    if isinstance(pattern, Keystream):
        return pattern.spec()
    return {"pattern": pattern.name}


def pattern_from_spec(spec: dict[str, Any]) -> Pattern:
    """Rebuild a pattern saved by :func:`pattern_spec`; raise ValueError if it is invalid."""
    name = spec.get("pattern")
    if name == ZeroPattern.name:
        return ZeroPattern()
    if name == Keystream.name:
        key = bytes.fromhex(str(spec["key"]))
        if len(key) != 16:
            raise ValueError(f"keystream key has {len(key)} bytes, expected 16")
        return Keystream(key, int(str(spec["counter"]), 16))
    raise ValueError(f"unknown pattern {name!r}")


def aligned_buffer(size: int = CHUNK) -> mmap.mmap:
    """Return a page-aligned anonymous buffer as O_DIRECT requires, with slack.

    Transparent huge pages, where the kernel allows them for this mapping,
    cut the page faults on first use and the page pinning of each O_DIRECT
    request.
    """
    buffer = mmap.mmap(-1, size + _PAGE)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            buffer.madvise(advice)
        except OSError:
            pass
    return buffer


def release(view: memoryview, buffer: mmap.mmap) -> None:
    """Release a buffer; one still exported by a traceback is left to the collector."""
    view.release()
    try:
        buffer.close()
    except BufferError:
        pass


class BufferPool:
    """Buffers from :func:`aligned_buffer`, kept between passes and read-backs.

    Faulting in fresh pages for every pass costs several milliseconds per
    buffer, so a plugin keeps one pool for its lifetime and closes it at
    the end.
    """

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return aligned_buffer()

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)

    def close(self) -> None:
        with self._lock:
            buffers, self._free = self._free, []
        for buffer in buffers:
            try:
                buffer.close()
            except BufferError:
                pass


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def merge_ranges(ranges: Iterable[Sequence[int]]) -> Ranges:
    """Merge ``[start, end)`` ranges into a sorted list without overlaps or gaps."""
    merged: Ranges = []
    for start, end in sorted((int(r[0]), int(r[1])) for r in ranges):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def covered_bytes(ranges: Iterable[Sequence[int]]) -> int:
    return sum(end - start for start, end in merge_ranges(ranges))


def pending_chunks(
    size: int, written: Iterable[Sequence[int]]
) -> list[tuple[int, int]]:
    """Return ``(offset, length)`` chunks of ``[0, size)`` outside ``written``.

    Chunks end on multiples of :data:`WRITE_CHUNK`, so the ranges a pass
    writes line up with those a resumed pass reads from its checkpoint.
    """
    chunks = []
    position = 0
    for start, end in [*merge_ranges(written), [size, size]]:
        start, end = min(start, size), min(end, size)
        while position < start:
            stop = min(start, (position // WRITE_CHUNK + 1) * WRITE_CHUNK)
            chunks.append((position, stop - position))
            position = stop
        position = max(position, end)
    return chunks


@dataclass
class PassReport:
    """The outcome of one write pass.

    ``bytes_written`` counts the bytes this run wrote, and ``bytes_resumed``
    the bytes an interrupted earlier run had already written.
    """

    pattern: str
    bytes_written: int = 0
    bytes_resumed: int = 0
    failed_sectors: int = 0
    failed_offsets: list[int] = field(default_factory=list)
    flush_error: str = ""
    seconds: float = 0.0

    def note_failure(self, offset: int) -> None:
        self.failed_sectors += 1
        if len(self.failed_offsets) < MAX_OFFSETS:
            self.failed_offsets.append(offset)


@dataclass
class ReadbackReport:
    """The outcome of comparing the device against the last pass."""

    pattern: str
    fraction: float
    bytes_read: int = 0
    mismatched_sectors: int = 0
    mismatched_offsets: list[int] = field(default_factory=list)
    unreadable_sectors: int = 0
    stopped_early: bool = False
    seed: int | None = None

    @property
    def passed(self) -> bool:
        return self.mismatched_sectors == 0 and self.unreadable_sectors == 0


class _WriteLog:
    """Ranges of one pass written so far, and when the next checkpoint is due.

    A checkpoint lists only ranges whose writes completed before its
    fdatasync started, so every range it lists is on stable storage. Chunks
    with a failed sector are never listed, so a resume writes them again.
    """

    def __init__(self, written: Ranges, interval: float) -> None:
        self._ranges = merge_ranges(written)
        self._lock = threading.Lock()
        self._interval = interval
        self._last = time.monotonic()
        self._busy = False

    def add(self, offset: int, length: int) -> bool:
        """Record a written chunk; return True if the caller should take a checkpoint."""
        with self._lock:
            self._ranges = merge_ranges([*self._ranges, [offset, offset + length]])
            now = time.monotonic()
            if self._busy or now - self._last < self._interval:
                return False
            self._busy = True
            self._last = now
            return True

    def snapshot(self) -> Ranges:
        with self._lock:
            return [list(pair) for pair in self._ranges]

    def record(self, descriptor: int, save: Callable[[Ranges], None]) -> None:
        """Flush the device, then save the ranges written before the flush."""
        ranges = self.snapshot()
        try:
            os.fdatasync(descriptor)
        except OSError:
            # The pass's own final flush reports the error; this checkpoint
            # is skipped, so it claims nothing that may not be durable.
            return
        finally:
            with self._lock:
                self._busy = False
        save(ranges)


def write_pass(
    descriptor: int,
    size: int,
    pattern: Pattern,
    sector: int,
    progress: Callable[[int], None],
    should_stop: Callable[[], bool],
    check_present: Callable[[], bool],
    written: Ranges | None = None,
    save: Callable[[Ranges], None] | None = None,
    buffers: BufferPool | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> PassReport:
    """Write ``pattern`` over ``size`` bytes of the open device, then fdatasync.

    ``written`` lists ranges an interrupted run of this pass already wrote,
    which are skipped. ``save``, called from an I/O thread, receives the
    ranges written durably so far about every ``checkpoint_seconds``, and
    once more when a stop request ends the pass early, before
    :class:`Stopped` is raised. See :func:`_run_workers` for how the chunks
    are shared out. A failed write is retried sector by sector so that each
    bad sector is counted with its offset and the pass goes on past it.
    """
    started = time.monotonic()
    report = PassReport(pattern.name, bytes_resumed=covered_bytes(written or []))
    log = _WriteLog(written or [], checkpoint_seconds)
    lock = threading.Lock()

    def write_chunk(offset: int, length: int, views: list[memoryview]) -> bool:
        pattern.fill(offset, views[0], length)
        failed = _write_chunk(
            descriptor, views[0], offset, length, sector, check_present
        )
        _crash_point(length)
        with lock:
            report.bytes_written += length
            for bad in failed:
                report.note_failure(bad)
        if not failed and log.add(offset, length) and save is not None:
            log.record(descriptor, save)
        progress(length)
        return False

    chunks = pending_chunks(size, written or [])
    try:
        _run_workers(chunks, write_chunk, should_stop, buffers, per_worker=1)
    except Stopped:
        if save is not None:
            log.record(descriptor, save)
        raise
    with lock:
        report.failed_offsets.sort()
    try:
        os.fdatasync(descriptor)
    except OSError as error:
        if not check_present():
            raise DeviceGone(error.errno, "device disappeared during flush") from error
        report.flush_error = os.strerror(error.errno or 0)
    report.seconds = time.monotonic() - started
    return report


def _run_workers(
    tasks: list[tuple[int, int]],
    handle: Callable[[int, int, list[memoryview]], bool],
    should_stop: Callable[[], bool],
    buffers: BufferPool | None = None,
    per_worker: int = 1,
    halt: threading.Event | None = None,
) -> int:
    """Run ``handle(offset, length, views)`` on each task in WORKERS threads; return how many ran.

    Each thread takes the next task from a shared queue, so the device
    receives the chunks almost in order, and a thread that the scheduler
    holds back does not hold up the others. ``cryptography`` releases the
    GIL while it encrypts (measured with 50.0.2), and the read and write
    syscalls release it too, so the threads generate keystream and wait on
    I/O at the same time.
    ``handle`` gets ``per_worker`` buffers of the thread and returns True
    to stop every thread early, and setting ``halt`` has the same effect
    from inside ``handle``. The first exception stops every thread and is
    raised; Stopped is raised when ``should_stop`` turns true.
    """
    pool = buffers or BufferPool()
    halt = halt or threading.Event()
    lock = threading.Lock()
    queue = iter(tasks)
    done = [0]

    def next_task() -> tuple[int, int] | None:
        with lock:
            return next(queue, None)

    def worker() -> None:
        mapped = [pool.take() for _ in range(per_worker)]
        views = [memoryview(buffer) for buffer in mapped]
        try:
            while not halt.is_set():
                task = next_task()
                if task is None:
                    return
                if should_stop():
                    raise Stopped(task[0])
                finished = handle(task[0], task[1], views)
                with lock:
                    done[0] += 1
                if finished:
                    halt.set()
                    return
        except BaseException:
            halt.set()
            raise
        finally:
            for view in views:
                view.release()
            for buffer in mapped:
                pool.give(buffer)

    try:
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="lethe-io") as executor:
            futures = [executor.submit(worker) for _ in range(WORKERS)]
        for future in futures:
            future.result()
    finally:
        if buffers is None:
            pool.close()
    return done[0]


def _write_chunk(
    descriptor: int,
    view: memoryview,
    offset: int,
    length: int,
    sector: int,
    check_present: Callable[[], bool],
) -> list[int]:
    """Write one chunk; return the offsets of sectors that could not be written."""
    try:
        _write_fully(descriptor, view[:length], offset)
        return []
    except OSError as error:
        if error.errno in GONE_ERRNOS or not check_present():
            raise DeviceGone(
                error.errno, "device disappeared during the pass"
            ) from error
        if error.errno == errno.EROFS or error.errno == errno.EPERM:
            raise
    failed = []
    for start in range(0, length, sector):
        try:
            _write_fully(descriptor, view[start : start + sector], offset + start)
        except OSError as error:
            if error.errno in GONE_ERRNOS or not check_present():
                raise DeviceGone(
                    error.errno, "device disappeared during the pass"
                ) from error
            failed.append(offset + start)
    return failed


def _write_fully(descriptor: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        written = os.pwritev(descriptor, [view[done:]], offset + done)
        if written <= 0:
            raise OSError(errno.ENOSPC, "write past the end of the device")
        done += written


_crash_lock = threading.Lock()
_crash_budget = int(os.environ.get("LETHE_CRASH_AFTER_BYTES", "0") or 0)


def _crash_point(length: int) -> None:
    """Kill the process with SIGKILL once overwrite passes have written the configured bytes.

    Crash tests set ``LETHE_CRASH_AFTER_BYTES=N`` so the crash lands in the
    middle of a pass, after at least N bytes and before the pass ends.
    Unset or 0 disables it.
    """
    global _crash_budget
    if _crash_budget <= 0:
        return
    with _crash_lock:
        _crash_budget -= length
        if _crash_budget <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


def sample_units(size: int, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Pick a pseudorandom, sorted sample of ``SAMPLE_UNIT`` ranges covering ``fraction``."""
    units = math.ceil(size / SAMPLE_UNIT)
    count = min(units, max(1, math.ceil(units * fraction)))
    chosen = sorted(random.Random(seed).sample(range(units), count))
    return [
        (unit * SAMPLE_UNIT, min(SAMPLE_UNIT, size - unit * SAMPLE_UNIT))
        for unit in chosen
    ]


def _full_ranges(size: int) -> list[tuple[int, int]]:
    return [
        (offset, min(READ_CHUNK, size - offset))
        for offset in range(0, size, READ_CHUNK)
    ]


def read_back(
    descriptor: int,
    size: int,
    pattern: Pattern,
    sector: int,
    fraction: float = 1.0,
    fail_fast: bool = False,
    progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
    buffers: BufferPool | None = None,
) -> ReadbackReport:
    """Read the device back (all of it, or a sample) and compare with ``pattern``.

    The threads share the ranges as in :func:`_run_workers`. Every
    differing sector is counted, and with ``fail_fast`` every thread stops
    after the first chunk that differs.
    """
    report = ReadbackReport(pattern.name, fraction)
    if fraction >= 1.0:
        ranges = _full_ranges(size)
    else:
        report.seed = int.from_bytes(os.urandom(8), "big")
        ranges = sample_units(size, fraction, report.seed)
    lock = threading.Lock()
    halt = threading.Event()

    def check_range(offset: int, length: int, views: list[memoryview]) -> bool:
        actual, expected = views
        unreadable = _read_range(descriptor, actual, offset, length, sector)
        pattern.fill(offset, expected, length)
        if fail_fast and (unreadable or _differs(actual.obj, expected.obj, length)):
            # Stop the other threads before the sector-by-sector search.
            halt.set()
        mismatched = _compare(
            actual.obj, expected.obj, offset, length, sector, unreadable
        )
        with lock:
            report.bytes_read += length
            report.unreadable_sectors += len(unreadable)
            report.mismatched_sectors += len(mismatched)
            report.mismatched_offsets.extend(sorted(unreadable + mismatched))
        progress(length)
        return fail_fast and bool(unreadable or mismatched)

    try:
        checked = _run_workers(
            ranges, check_range, should_stop, buffers, per_worker=2, halt=halt
        )
    except Stopped:
        report.stopped_early = True
        checked = -1
    report.stopped_early = report.stopped_early or checked < len(ranges)
    report.mismatched_offsets = sorted(report.mismatched_offsets)[:MAX_OFFSETS]
    return report


def _read_range(
    descriptor: int, view: memoryview, offset: int, length: int, sector: int
) -> list[int]:
    """Read one range into ``view``; return the offsets of unreadable sectors."""
    try:
        count = os.preadv(descriptor, [view[:length]], offset)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            raise DeviceGone(
                error.errno, "device disappeared during the read-back"
            ) from error
        count = -1
    if count == length:
        return []
    # A short or failed read: find the unreadable sectors one by one.
    unreadable = []
    for start in range(0, length, sector):
        try:
            got = os.preadv(descriptor, [view[start : start + sector]], offset + start)
        except OSError as error:
            if error.errno in GONE_ERRNOS:
                raise DeviceGone(
                    error.errno, "device disappeared during the read-back"
                ) from error
            got = -1
        if got != sector:
            unreadable.append(offset + start)
    return unreadable


def _differs(actual: mmap.mmap, expected: mmap.mmap, length: int) -> bool:
    return _libc.memcmp(_address(actual), _address(expected), length) != 0


def _compare(
    actual: mmap.mmap,
    expected: mmap.mmap,
    offset: int,
    length: int,
    sector: int,
    skip: list[int],
) -> list[int]:
    """Return the offsets of sectors that differ, leaving out those in ``skip``."""
    actual_address, expected_address = _address(actual), _address(expected)
    if _libc.memcmp(actual_address, expected_address, length) == 0:
        return []
    skipped = set(skip)
    differing = []
    for start in range(0, length, sector):
        if offset + start in skipped:
            continue
        if _libc.memcmp(actual_address + start, expected_address + start, sector) != 0:
            differing.append(offset + start)
    return differing


def iter_offsets(report_offsets: list[int], count: int) -> Iterator[str]:
    """Yield offsets as hex strings, with a note when the list was cut short."""
    for offset in report_offsets:
        yield f"0x{offset:x}"
    if count > len(report_offsets):
        yield f"... and {count - len(report_offsets)} more"
