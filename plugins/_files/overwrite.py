"""Overwrite a file's data regions in place with a keystream or zeros, and read back."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from plugins._files.extents import data_regions

#: Bytes per write: large enough to keep the device busy, small enough for
#: frequent progress reports.
CHUNK = 4 * 1024 * 1024
#: Offset and length alignment for O_DIRECT; 4096 covers 512e and 4Kn devices.
ALIGN = 4096
#: Files with less allocated data are written through the page cache: one
#: flush for a whole batch is much faster than a synchronous device write
#: per small file, and the flush after each pass still reaches the device.
DIRECT_MIN = 1024 * 1024

_libc = ctypes.CDLL(None)
_libc.memcmp.restype = ctypes.c_int
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]


@dataclass(frozen=True)
class Pattern:
    """One pass's data: an AES-256-CTR keystream, or zeros when ``key`` is empty.

    The keystream at a byte offset is computable on its own (the CTR counter
    is the offset in 16-byte blocks), so a read-back regenerates it without
    keeping what was written.
    """

    key: bytes = b""
    nonce: int = 0

    @classmethod
    def random(cls) -> Pattern:
        return cls(os.urandom(32), int.from_bytes(os.urandom(16), "big"))

    @property
    def name(self) -> str:
        return "random (AES-256-CTR keystream)" if self.key else "zeros"

    def fill(
        self, offset: int, length: int, out: AlignedBuffer
    ) -> tuple[memoryview, int]:
        """Build ``length`` pattern bytes for ``offset`` in ``out``.

        Returns a view of them and their memory address. Zeros come from a
        shared zero-filled buffer instead.
        """
        zeros = _zero_buffer()
        if not self.key:
            return zeros.view[:length], zeros.address
        skip = offset % 16
        counter = (self.nonce + offset // 16) % (1 << 128)
        encryptor = Cipher(
            algorithms.AES(self.key), modes.CTR(counter.to_bytes(16, "big"))
        ).encryptor()
        encryptor.update_into(zeros.view[: length + skip], out.view)
        return out.view[skip : skip + length], out.address + skip


class AlignedBuffer:
    """A page-aligned buffer, as O_DIRECT requires, with room for the cipher.

    ``address`` lets :func:`same_bytes` compare buffers with memcmp, because
    copying 4 MiB into a bytes object per comparison costs more than the
    read itself.
    """

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, CHUNK + ALIGN)
        self.view = memoryview(self._map)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self.address = ctypes.addressof(self._anchor)

    def close(self) -> None:
        # Slices handed to the cipher or os.pwrite may still be alive; the
        # mapping is then freed by the garbage collector instead.
        del self._anchor
        try:
            self.view.release()
            self._map.close()
        except BufferError:
            pass


_ZERO_BUFFER: AlignedBuffer | None = None


def _zero_buffer() -> AlignedBuffer:
    """Return the shared zero-filled buffer; nothing ever writes to it."""
    global _ZERO_BUFFER
    if _ZERO_BUFFER is None:
        _ZERO_BUFFER = AlignedBuffer()
    return _ZERO_BUFFER


class FileOverwrite:
    """The overwrite state of one open file: its data regions and I/O mode."""

    def __init__(self, descriptor: int, size: int) -> None:
        self.descriptor = descriptor
        self.size = size
        self.regions = list(data_regions(descriptor, size))
        self.allocated = sum(end - start for start, end in self.regions)
        self.direct = self.allocated >= DIRECT_MIN and self._enable_direct()

    def _enable_direct(self) -> bool:
        flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.descriptor, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:
            return False  # the filesystem rejects O_DIRECT (tmpfs, some FUSE)
        return True

    def _set_direct(self, enabled: bool) -> None:
        flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
        wanted = flags | os.O_DIRECT if enabled else flags & ~os.O_DIRECT
        if wanted != flags:
            fcntl.fcntl(self.descriptor, fcntl.F_SETFL, wanted)

    def _segments(self):
        """Yield ``(offset, length, direct)`` pieces of at most CHUNK bytes."""
        for start, end in self.regions:
            position = start
            while position < end:
                length = min(CHUNK, end - position)
                aligned = position % ALIGN == 0 and length % ALIGN == 0
                if (
                    self.direct
                    and not aligned
                    and position % ALIGN == 0
                    and length > ALIGN
                ):
                    length -= length % ALIGN
                    aligned = True
                yield position, length, self.direct and aligned
                position += length

    def write_pass(
        self, pattern: Pattern, buffer: AlignedBuffer, progress: Callable[[int], None]
    ) -> int:
        """Write ``pattern`` over every data region; return the bytes written.

        Raises OSError (ENOSPC, EIO, ...) with ``done`` set to the bytes
        written before the failure.
        """
        done = 0
        try:
            for offset, length, direct in self._segments():
                self._set_direct(direct)
                data, _ = pattern.fill(offset, length, buffer)
                written = 0
                while written < length:
                    written += os.pwrite(
                        self.descriptor, data[written:], offset + written
                    )
                done += length
                progress(length)
        except OSError as error:
            error.done = done  # type: ignore[attr-defined]
            raise
        return done

    def drop_cache(self) -> None:
        """Drop the file's clean cached pages and start reading them from the device.

        Call after the flush: buffered read-back then compares what the
        device holds, and the read-ahead of a whole batch runs in parallel.
        """
        os.posix_fadvise(self.descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        if not self.direct:
            os.posix_fadvise(self.descriptor, 0, 0, os.POSIX_FADV_WILLNEED)

    def read_back(
        self,
        pattern: Pattern,
        fraction: float,
        buffer: AlignedBuffer,
        scratch: AlignedBuffer,
    ) -> str | None:
        """Compare the medium with ``pattern`` and return the first mismatch, or None.

        ``fraction`` below 1 reads evenly spread segments covering about that
        share of the data. Call :meth:`drop_cache` first. ``scratch``
        holds the regenerated pattern.
        """
        for index, (offset, length, direct) in enumerate(self._segments()):
            if (
                fraction < 1
                and int((index + 1) * fraction) == int(index * fraction)
                and index
            ):
                continue
            self._set_direct(direct)
            view = buffer.view[:length]
            count = os.preadv(self.descriptor, [view], offset)
            if count != length:
                return f"short read at byte {offset}: {count} of {length} bytes"
            _, expected = pattern.fill(offset, length, scratch)
            if _libc.memcmp(buffer.address, expected, length) != 0:
                return f"data at bytes {offset}-{offset + length} differs from the last pass"
        return None

    def corrupt_for_test(self) -> None:
        """Change one byte after the last pass, so a read-back must fail."""
        if not self.regions:
            return
        offset = self.regions[0][0]
        self._set_direct(False)
        current = os.pread(self.descriptor, 1, offset)
        os.pwrite(self.descriptor, bytes([current[0] ^ 0xFF]), offset)
        os.fdatasync(self.descriptor)
        self._set_direct(self.direct)
