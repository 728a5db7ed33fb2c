"""Where a file holds data: SEEK_DATA/SEEK_HOLE regions and FIEMAP extent flags."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator

# FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap), struct fiemap being 32 bytes.
FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000
_HEADER = struct.Struct(
    "=QQIIII"
)  # fm_start, fm_length, flags, mapped, count, reserved
_EXTENT = struct.Struct(
    "=QQQQQIIII"
)  # logical, physical, length, 2 reserved, flags, 3 reserved
_BATCH = 128


def data_regions(descriptor: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` byte ranges that hold data, skipping holes.

    Falls back to the whole file when the filesystem does not support
    SEEK_DATA. Ranges end at ``size`` at the latest.
    """
    offset = 0
    while offset < size:
        try:
            start = os.lseek(descriptor, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:
                return  # only a hole remains
            if error.errno == errno.EINVAL and offset == 0:
                yield 0, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(descriptor, start, os.SEEK_HOLE), size)
        yield start, end
        offset = end


def allocated_bytes(descriptor: int, size: int) -> int:
    """Return how many bytes :func:`data_regions` covers."""
    return sum(end - start for start, end in data_regions(descriptor, size))


def shared_extents(descriptor: int) -> int | None:
    """Count extents that FIEMAP flags as shared with another file (reflinks).

    Returns None when the filesystem does not support FIEMAP.
    """
    shared = 0
    start = 0
    while True:
        request = bytearray(_HEADER.size + _EXTENT.size * _BATCH)
        _HEADER.pack_into(
            request,
            0,
            start,
            0xFFFFFFFFFFFFFFFF - start,
            FIEMAP_FLAG_SYNC,
            0,
            _BATCH,
            0,
        )
        try:
            fcntl.ioctl(descriptor, FS_IOC_FIEMAP, request, True)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                return None
            raise
        mapped = _HEADER.unpack_from(request, 0)[3]
        if mapped == 0:
            return shared
        last_flags = 0
        for index in range(mapped):
            logical, _, length, _, _, flags, *_ = _EXTENT.unpack_from(
                request, _HEADER.size + index * _EXTENT.size
            )
            if flags & FIEMAP_EXTENT_SHARED:
                shared += 1
            start = logical + length
            last_flags = flags
        if last_flags & FIEMAP_EXTENT_LAST:
            return shared
