"""Data regions of a file (SEEK_DATA/SEEK_HOLE) and FIEMAP extent flags."""

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
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_DATA_ENCRYPTED = 0x80
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_SHARED = 0x2000
#: Extents whose physical range does not hold the file's bytes as they read.
UNMAPPED_FLAGS = (
    FIEMAP_EXTENT_UNKNOWN
    | FIEMAP_EXTENT_DELALLOC
    | FIEMAP_EXTENT_ENCODED
    | FIEMAP_EXTENT_DATA_ENCRYPTED
    | FIEMAP_EXTENT_UNWRITTEN
)
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
    found = fiemap(descriptor)
    if found is None:
        return None
    return sum(1 for *_, flags in found if flags & FIEMAP_EXTENT_SHARED)


def fiemap(
    descriptor: int, sync: bool = True
) -> list[tuple[int, int, int, int]] | None:
    """Return the file's extents as ``(logical, physical, length, flags)``.

    Physical offsets count bytes from the start of the filesystem's block
    device. ``sync`` flushes the file's dirty data first, so that no extent
    is still delayed. Returns None when the filesystem does not support FIEMAP.
    """
    extents: list[tuple[int, int, int, int]] = []
    start = 0
    while True:
        request = bytearray(_HEADER.size + _EXTENT.size * _BATCH)
        _HEADER.pack_into(
            request,
            0,
            start,
            0xFFFFFFFFFFFFFFFF - start,
            FIEMAP_FLAG_SYNC if sync else 0,
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
            return extents
        last_flags = 0
        for index in range(mapped):
            logical, physical, length, _, _, flags, *_ = _EXTENT.unpack_from(
                request, _HEADER.size + index * _EXTENT.size
            )
            extents.append((logical, physical, length, flags))
            start = logical + length
            last_flags = flags
        if last_flags & FIEMAP_EXTENT_LAST:
            return extents
