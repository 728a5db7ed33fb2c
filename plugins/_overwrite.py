"""Overwrite passes and read-back over a block device with large O_DIRECT I/O.

Random passes use an AES-128-CTR keystream addressed by byte offset, so the
read-back regenerates the expected bytes chunk by chunk and never stores
the pattern. The key lives in memory for the job only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import math
import mmap
import os
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: Size of one write or read: large enough that per-call overhead disappears
#: behind device bandwidth, small enough that two buffers stay cheap.
CHUNK = 8 * 1024 * 1024
#: Size of the units a sampled read-back picks from.
SAMPLE_UNIT = 1024 * 1024
#: Offsets of failed or mismatched sectors kept for the report; the count is
#: always complete.
MAX_OFFSETS = 100
#: I/O threads per pass; see :func:`_run_workers`.
WORKERS = 2
#: Errors after which the device is presumed gone rather than partly bad.
GONE_ERRNOS = {errno.ENXIO, errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN}

_PAGE = mmap.PAGESIZE
_ZEROS = bytes(CHUNK)
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_libc.memcmp.restype = ctypes.c_int


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

    The key and the initial counter come from ``os.urandom``. A 128-bit key is
    enough for a pattern that only has to be unpredictable and never repeat,
    and it takes 10 AES rounds per block instead of the 14 of a 256-bit key,
    because the read-back regenerates the keystream at device speed.
    """

    name = "random"

    def __init__(self) -> None:
        self._key = os.urandom(16)
        self._counter = int.from_bytes(os.urandom(16), "big")

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


def aligned_buffer(size: int = CHUNK) -> mmap.mmap:
    """Return a page-aligned anonymous buffer as O_DIRECT requires, with slack."""
    return mmap.mmap(-1, size + _PAGE)


def release(view: memoryview, buffer: mmap.mmap) -> None:
    """Release a buffer; one still exported by a traceback is left to the collector."""
    view.release()
    try:
        buffer.close()
    except BufferError:
        pass


def _address(buffer: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


@dataclass
class PassReport:
    """The outcome of one write pass."""

    pattern: str
    bytes_written: int = 0
    failed_sectors: int = 0
    failed_offsets: list[int] = field(default_factory=list)
    flush_error: str = ""

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


def write_pass(
    descriptor: int,
    size: int,
    pattern: Pattern,
    sector: int,
    progress: Callable[[int], None],
    should_stop: Callable[[], bool],
    check_present: Callable[[], bool],
) -> PassReport:
    """Write ``pattern`` over ``size`` bytes of the open device, then fdatasync.

    See :func:`_run_workers` for how the chunks are shared out. A failed
    write is retried sector by sector so that each bad sector is counted
    with its offset and the pass goes on past it.
    """
    report = PassReport(pattern.name)
    lock = threading.Lock()

    def write_chunk(offset: int, view: memoryview, _spare: memoryview) -> bool:
        length = min(CHUNK, size - offset)
        pattern.fill(offset, view, length)
        failed = _write_chunk(descriptor, view, offset, length, sector, check_present)
        with lock:
            report.bytes_written += length
            for bad in failed:
                report.note_failure(bad)
        progress(length)
        return False

    _run_workers(list(range(0, size, CHUNK)), write_chunk, should_stop)
    with lock:
        report.failed_offsets.sort()
    try:
        os.fdatasync(descriptor)
    except OSError as error:
        if not check_present():
            raise DeviceGone(error.errno, "device disappeared during flush") from error
        report.flush_error = os.strerror(error.errno or 0)
    return report


def _run_workers(
    offsets: list[int],
    handle: Callable[[int, memoryview, memoryview], bool],
    should_stop: Callable[[], bool],
) -> int:
    """Run ``handle`` on each offset in two threads that take turns; return how many ran.

    Thread 0 takes the even-numbered chunks and thread 1 the odd ones, each
    with its own two buffers. ``cryptography`` holds the GIL while it
    generates keystream, so one thread generates while the other waits in
    a read or write syscall, which releases the GIL. Each thread issues its
    I/O straight after generating, without a GIL hand-off in between.
    ``handle`` returns True to stop both threads early. The first exception
    stops both threads and is raised; Stopped is raised when ``should_stop``
    turns true.
    """
    halt = threading.Event()
    lock = threading.Lock()
    done = [0]

    def worker(first: int) -> None:
        buffers = [aligned_buffer(), aligned_buffer()]
        views = [memoryview(buffer) for buffer in buffers]
        try:
            for offset in offsets[first::WORKERS]:
                if halt.is_set():
                    return
                if should_stop():
                    raise Stopped(offset)
                finished = handle(offset, views[0], views[1])
                with lock:
                    done[0] += 1
                if finished:
                    halt.set()
                    return
        except BaseException:
            halt.set()
            raise
        finally:
            for view, buffer in zip(views, buffers):
                release(view, buffer)

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="lethe-io") as pool:
        futures = [pool.submit(worker, first) for first in range(WORKERS)]
    for future in futures:
        future.result()
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
    return [(offset, min(CHUNK, size - offset)) for offset in range(0, size, CHUNK)]


def read_back(
    descriptor: int,
    size: int,
    pattern: Pattern,
    sector: int,
    fraction: float = 1.0,
    fail_fast: bool = False,
    progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ReadbackReport:
    """Read the device back (all of it, or a sample) and compare with ``pattern``.

    Two threads take turns as in :func:`_run_workers`. Every differing
    sector is counted, and with ``fail_fast`` both threads stop after the
    first chunk that differs.
    """
    report = ReadbackReport(pattern.name, fraction)
    if fraction >= 1.0:
        ranges = dict(_full_ranges(size))
    else:
        report.seed = int.from_bytes(os.urandom(8), "big")
        ranges = dict(sample_units(size, fraction, report.seed))
    lock = threading.Lock()

    def check_range(offset: int, actual: memoryview, expected: memoryview) -> bool:
        length = ranges[offset]
        unreadable = _read_range(descriptor, actual, offset, length, sector)
        pattern.fill(offset, expected, length)
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
        checked = _run_workers(sorted(ranges), check_range, should_stop)
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
