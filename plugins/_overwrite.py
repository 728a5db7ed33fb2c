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

    The next chunk is generated in a second thread while the current one is
    written. A failed write is retried sector by sector so that each bad
    sector is counted with its offset and the pass goes on past it.
    """
    report = PassReport(pattern.name)
    buffers = [aligned_buffer(), aligned_buffer()]
    views = [memoryview(buffer) for buffer in buffers]
    offsets = list(range(0, size, CHUNK))
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="lethe-pattern") as generator:
            pending = generator.submit(pattern.fill, 0, views[0], min(CHUNK, size))
            for index, offset in enumerate(offsets):
                if should_stop():
                    raise Stopped(offset)
                length = min(CHUNK, size - offset)
                pending.result()
                current = views[index % 2]
                if index + 1 < len(offsets):
                    following = offsets[index + 1]
                    pending = generator.submit(
                        pattern.fill,
                        following,
                        views[(index + 1) % 2],
                        min(CHUNK, size - following),
                    )
                _write_chunk(
                    descriptor, current, offset, length, sector, report, check_present
                )
                report.bytes_written += length
                progress(length)
            pending.result()
        try:
            os.fdatasync(descriptor)
        except OSError as error:
            if not check_present():
                raise DeviceGone(
                    error.errno, "device disappeared during flush"
                ) from error
            report.flush_error = os.strerror(error.errno or 0)
    finally:
        for view, buffer in zip(views, buffers):
            release(view, buffer)
    return report


def _write_chunk(
    descriptor: int,
    view: memoryview,
    offset: int,
    length: int,
    sector: int,
    report: PassReport,
    check_present: Callable[[], bool],
) -> None:
    try:
        _write_fully(descriptor, view[:length], offset)
        return
    except OSError as error:
        if error.errno in GONE_ERRNOS or not check_present():
            raise DeviceGone(
                error.errno, "device disappeared during the pass"
            ) from error
        if error.errno == errno.EROFS or error.errno == errno.EPERM:
            raise
    for start in range(0, length, sector):
        try:
            _write_fully(descriptor, view[start : start + sector], offset + start)
        except OSError as error:
            if error.errno in GONE_ERRNOS or not check_present():
                raise DeviceGone(
                    error.errno, "device disappeared during the pass"
                ) from error
            report.note_failure(offset + start)


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

    The expected bytes for the next range are generated in a second thread
    while the current range is read; every differing sector is counted.
    """
    report = ReadbackReport(pattern.name, fraction)
    if fraction >= 1.0:
        ranges = _full_ranges(size)
    else:
        report.seed = int.from_bytes(os.urandom(8), "big")
        ranges = sample_units(size, fraction, report.seed)
    read_buffer = aligned_buffer()
    expected = [aligned_buffer(), aligned_buffer()]
    read_view = memoryview(read_buffer)
    expected_views = [memoryview(buffer) for buffer in expected]
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="lethe-pattern") as generator:
            first_offset, first_length = ranges[0] if ranges else (0, 0)
            pending = generator.submit(
                pattern.fill, first_offset, expected_views[0], first_length
            )
            for index, (offset, length) in enumerate(ranges):
                if should_stop():
                    report.stopped_early = True
                    break
                _read_range(descriptor, read_view, offset, length, sector, report)
                pending.result()
                current = expected[index % 2]
                if index + 1 < len(ranges):
                    next_offset, next_length = ranges[index + 1]
                    pending = generator.submit(
                        pattern.fill,
                        next_offset,
                        expected_views[(index + 1) % 2],
                        next_length,
                    )
                _compare(read_buffer, current, offset, length, sector, report)
                report.bytes_read += length
                progress(length)
                if fail_fast and not report.passed:
                    report.stopped_early = index + 1 < len(ranges)
                    break
            pending.result()
    finally:
        release(read_view, read_buffer)
        for view, buffer in zip(expected_views, expected):
            release(view, buffer)
    return report


def _read_range(
    descriptor: int,
    view: memoryview,
    offset: int,
    length: int,
    sector: int,
    report: ReadbackReport,
) -> None:
    try:
        count = os.preadv(descriptor, [view[:length]], offset)
    except OSError as error:
        if error.errno in GONE_ERRNOS:
            raise DeviceGone(
                error.errno, "device disappeared during the read-back"
            ) from error
        count = -1
    if count == length:
        return
    # A short or failed read: find the unreadable sectors one by one, and
    # poison them in the buffer so the comparison cannot pass them by chance.
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
            report.unreadable_sectors += 1
            if len(report.mismatched_offsets) < MAX_OFFSETS:
                report.mismatched_offsets.append(offset + start)


def _compare(
    actual: mmap.mmap,
    expected: mmap.mmap,
    offset: int,
    length: int,
    sector: int,
    report: ReadbackReport,
) -> None:
    actual_address, expected_address = _address(actual), _address(expected)
    if _libc.memcmp(actual_address, expected_address, length) == 0:
        return
    for start in range(0, length, sector):
        if _libc.memcmp(actual_address + start, expected_address + start, sector) != 0:
            report.mismatched_sectors += 1
            if len(report.mismatched_offsets) < MAX_OFFSETS:
                report.mismatched_offsets.append(offset + start)


def iter_offsets(report_offsets: list[int], count: int) -> Iterator[str]:
    """Yield offsets as hex strings, with a note when the list was cut short."""
    for offset in report_offsets:
        yield f"0x{offset:x}"
    if count > len(report_offsets):
        yield f"... and {count - len(report_offsets)} more"
