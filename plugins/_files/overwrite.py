"""Overwrite a file's data regions in place with a keystream or zeros, and read back."""

from __future__ import annotations

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
_ZEROS = bytes(CHUNK)


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

    def fill(self, offset: int, length: int, out: memoryview) -> memoryview:
        """Return a view of ``length`` pattern bytes for ``offset``, built in ``out``."""
        if not self.key:
            return memoryview(_ZEROS)[:length]
        skip = offset % 16
        counter = (self.nonce + offset // 16) % (1 << 128)
        encryptor = Cipher(
            algorithms.AES(self.key), modes.CTR(counter.to_bytes(16, "big"))
        ).encryptor()
        encryptor.update_into(memoryview(_ZEROS)[: length + skip], out)
        return out[skip : skip + length]


class AlignedBuffer:
    """A page-aligned buffer, as O_DIRECT requires, with room for the cipher."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, CHUNK + ALIGN)
        self.view = memoryview(self._map)

    def close(self) -> None:
        # Slices handed to the cipher or os.pwrite may still be alive; the
        # mapping is then freed by the garbage collector instead.
        try:
            self.view.release()
            self._map.close()
        except BufferError:
            pass


class FileOverwrite:
    """The overwrite state of one open file: its data regions and I/O mode."""

    def __init__(self, descriptor: int, size: int) -> None:
        self.descriptor = descriptor
        self.size = size
        self.regions = list(data_regions(descriptor, size))
        self.allocated = sum(end - start for start, end in self.regions)
        self.direct = self._enable_direct()

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
                data = pattern.fill(offset, length, buffer.view)
                if direct and not pattern.key:
                    buffer.view[:length] = data
                    data = buffer.view[:length]
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

    def read_back(
        self, pattern: Pattern, fraction: float, buffer: AlignedBuffer
    ) -> str | None:
        """Compare the medium with ``pattern`` and return the first mismatch, or None.

        ``fraction`` below 1 reads evenly spread segments covering about that
        share of the data. The page cache is dropped first, so buffered reads
        come from the device too.
        """
        os.posix_fadvise(self.descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        expected_buffer = AlignedBuffer()
        try:
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
                expected = pattern.fill(offset, length, expected_buffer.view)
                if view.tobytes() != expected.tobytes():
                    return f"data at bytes {offset}-{offset + length} differs from the last pass"
        finally:
            expected_buffer.close()
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
