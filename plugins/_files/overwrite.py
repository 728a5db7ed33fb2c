"""Overwrite a file's data regions in place with a keystream or zeros, and read back."""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

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
#: Writes in flight at once for a file written with O_DIRECT.
WRITE_DEPTH = 2
#: Files with at most this much data share one keystream per group (Keystream).
SHARED_STREAM_MAX = 64 * 1024
#: Largest keystream made at once for a group of small files.
SHARED_STREAM_BYTES = 16 * 1024 * 1024

#: AES key size of the random passes, in bytes. The keystream only has to
#: be unpredictable overwrite data, and AES-128 makes it faster than
#: AES-256 (10 rounds instead of 14), which counts on a large file.
KEY_BYTES = 16
#: Bytes drawn from os.urandom at once for pattern seeds and random names.
RANDOM_POOL_BYTES = 64 * 1024

_libc = ctypes.CDLL(None)
_libc.memcmp.restype = ctypes.c_int
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]


class _RandomPool:
    """Bytes from os.urandom, drawn in large blocks and handed out once each.

    A batch of small files needs a seed and a random name per file, and one
    getrandom(2) call per block costs far less than one per file.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._position + count > len(self._data):
                self._data = os.urandom(max(RANDOM_POOL_BYTES, count))
                self._position = 0
            start = self._position
            self._position += count
            return self._data[start : self._position]

    def clear(self) -> None:
        self._lock = threading.Lock()
        self._data = b""
        self._position = 0


_POOL = _RandomPool()
# A forked child must not hand out the same bytes as its parent.
os.register_at_fork(after_in_child=_POOL.clear)
random_bytes = _POOL.take


@dataclass(frozen=True)
class Pattern:
    """One pass's data: an AES-128-CTR keystream, or zeros when ``key`` is empty.

    The keystream at a byte offset is computable on its own (the CTR counter
    is the offset in 16-byte blocks), so a read-back regenerates it without
    keeping what was written. ``stream`` optionally contains the same bytes
    ready-made, from ``stream_base`` on, for a group of small files.
    """

    key: bytes = b""
    nonce: int = 0
    stream: Keystream | None = field(default=None, compare=False, repr=False)
    stream_base: int = 0

    @classmethod
    def random(cls) -> Pattern:
        seed = random_bytes(KEY_BYTES + 16)
        return cls(seed[:KEY_BYTES], int.from_bytes(seed[KEY_BYTES:], "big"))

    @property
    def name(self) -> str:
        return "random (AES-128-CTR keystream)" if self.key else "zeros"

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
        if self.stream is not None:
            ready = self.stream.piece(self.stream_base + offset, length)
            if ready is not None:
                return ready
        skip = offset % 16
        counter = (self.nonce + offset // 16) % (1 << 128)
        encryptor = Cipher(
            algorithms.AES(self.key), modes.CTR(counter.to_bytes(16, "big"))
        ).encryptor()
        encryptor.update_into(zeros.view[: length + skip], out.view)
        return out.view[skip : skip + length], out.address + skip


class Keystream:
    """One AES-128-CTR keystream made in one call and cut into per-file patterns.

    Building a cipher context costs more than the keystream of a 4 KiB
    file, so a group of small files shares one. Each file's pattern starts
    at its own 16-byte aligned place in the stream, so no two files get the
    same bytes, and each pattern still regenerates its bytes on its own.
    """

    def __init__(self, sizes: list[int]) -> None:
        seed = random_bytes(KEY_BYTES + 16)
        self.key = seed[:KEY_BYTES]
        self.nonce = int.from_bytes(seed[KEY_BYTES:], "big")
        self.bases: list[int] = []
        total = 0
        for size in sizes:
            self.bases.append(total)
            total += -(-size // 16) * 16
        encryptor = Cipher(
            algorithms.AES(self.key), modes.CTR(self.nonce.to_bytes(16, "big"))
        ).encryptor()
        self._data = encryptor.update(bytes(total))
        self._view = memoryview(self._data)
        self._address = ctypes.cast(ctypes.c_char_p(self._data), ctypes.c_void_p).value

    def patterns(self) -> list[Pattern]:
        """Return one pattern per size given, in the same order."""
        return [
            Pattern(self.key, (self.nonce + base // 16) % (1 << 128), self, base)
            for base in self.bases
        ]

    def piece(self, start: int, length: int) -> tuple[memoryview, int] | None:
        """Return the stream bytes at ``start`` and their address, if held."""
        if start + length > len(self._data):
            return None
        return self._view[start : start + length], self._address + start


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


def _compare(
    pattern: Pattern,
    count: int,
    offset: int,
    length: int,
    data: AlignedBuffer,
    scratch: AlignedBuffer,
) -> str | None:
    """Describe how ``count`` bytes read at ``offset`` into ``data`` differ from ``pattern``."""
    if count != length:
        return f"short read at byte {offset}: {count} of {length} bytes"
    _, expected = pattern.fill(offset, length, scratch)
    if _libc.memcmp(data.address, expected, length) != 0:
        return f"data at bytes {offset}-{offset + length} differs from the last pass"
    return None


def _compare_read(
    pattern: Pattern,
    pending: tuple[Future[int], int, int, AlignedBuffer],
    scratch: AlignedBuffer,
) -> str | None:
    """Wait for a read started by _read_back_overlapped and compare what it read."""
    future, offset, length, data = pending
    return _compare(pattern, future.result(), offset, length, data, scratch)


_ZERO_BUFFER: AlignedBuffer | None = None


def _zero_buffer() -> AlignedBuffer:
    """Return the shared zero-filled buffer; nothing ever writes to it."""
    global _ZERO_BUFFER
    if _ZERO_BUFFER is None:
        _ZERO_BUFFER = AlignedBuffer()
    return _ZERO_BUFFER


class FileOverwrite:
    """The overwrite state of one open file: its data regions and I/O mode.

    The descriptor must be open without O_DIRECT; this object then tracks
    the flag itself, so small files cost no fcntl(2) call per write or read.
    """

    def __init__(self, descriptor: int, size: int) -> None:
        self.descriptor = descriptor
        self.size = size
        self.regions = list(data_regions(descriptor, size))
        self.allocated = sum([end - start for start, end in self.regions])
        self._direct_set = False
        self.direct = self.allocated >= DIRECT_MIN and self._enable_direct()

    def _enable_direct(self) -> bool:
        flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.descriptor, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:
            return False  # the filesystem rejects O_DIRECT (tmpfs, some FUSE)
        self._direct_set = True
        return True

    def _set_direct(self, enabled: bool) -> None:
        if enabled == self._direct_set:
            return
        flags = fcntl.fcntl(self.descriptor, fcntl.F_GETFL)
        wanted = flags | os.O_DIRECT if enabled else flags & ~os.O_DIRECT
        fcntl.fcntl(self.descriptor, fcntl.F_SETFL, wanted)
        self._direct_set = enabled

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
        self,
        pattern: Pattern,
        buffer: AlignedBuffer,
        progress: Callable[[int], None],
        spare: AlignedBuffer | None = None,
    ) -> int:
        """Write ``pattern`` over every data region; return the bytes written.

        With ``spare`` and O_DIRECT, WRITE_DEPTH threads write chunks while
        this one builds the next. Raises OSError (ENOSPC, EIO, ...) with
        ``done`` set to the bytes written before the failure.
        """
        done = 0
        try:
            if spare is not None and self.direct:
                for length in self._write_overlapped(pattern, buffer, spare):
                    done += length
                    progress(length)
                return done
            for offset, length, direct in self._segments():
                self._set_direct(direct)
                data, _ = pattern.fill(offset, length, buffer)
                self._write_all(data, offset)
                done += length
                progress(length)
        except OSError as error:
            error.done = done  # type: ignore[attr-defined]
            raise
        return done

    def _write_overlapped(
        self, pattern: Pattern, buffer: AlignedBuffer, spare: AlignedBuffer
    ) -> Iterator[int]:
        """Yield the length of each chunk written, building the next meanwhile.

        Chunks are written in order of their offsets and may finish in any
        order. Each yielded length belongs to a finished write, so the sum
        never exceeds what has reached the file.
        """
        extra = [AlignedBuffer() for _ in range(WRITE_DEPTH - 1)]
        buffers = [buffer, spare, *extra]
        pending: deque[tuple[Future[None], int]] = deque()
        try:
            with ThreadPoolExecutor(max_workers=WRITE_DEPTH) as writer:
                for number, (offset, length, direct) in enumerate(self._segments()):
                    # At most WRITE_DEPTH writes are pending, each from one of
                    # the other buffers, so this fill is safe.
                    data, _ = pattern.fill(
                        offset, length, buffers[number % len(buffers)]
                    )
                    # O_DIRECT is changed only while no write is in flight.
                    limit = 0 if direct != self._direct_set else WRITE_DEPTH - 1
                    while len(pending) > limit:
                        future, written = pending.popleft()
                        future.result()
                        yield written
                    self._set_direct(direct)
                    pending.append(
                        (writer.submit(self._write_all, data, offset), length)
                    )
                while pending:
                    future, written = pending.popleft()
                    future.result()
                    yield written
        finally:
            for unused in extra:
                unused.close()

    def _write_all(self, data: memoryview, offset: int) -> None:
        written = 0
        while written < len(data):
            written += os.pwrite(self.descriptor, data[written:], offset + written)

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
        receives the regenerated pattern.
        """
        segments = self._sampled_segments(fraction)
        if self.direct:
            return self._read_back_overlapped(pattern, segments, buffer, scratch)
        for offset, length, direct in segments:
            self._set_direct(direct)
            count = os.preadv(self.descriptor, [buffer.view[:length]], offset)
            mismatch = _compare(pattern, count, offset, length, buffer, scratch)
            if mismatch:
                return mismatch
        return None

    def _sampled_segments(self, fraction: float) -> Iterator[tuple[int, int, bool]]:
        for index, segment in enumerate(self._segments()):
            if (
                fraction >= 1
                or index == 0
                or int((index + 1) * fraction) != int(index * fraction)
            ):
                yield segment

    def _read_back_overlapped(
        self,
        pattern: Pattern,
        segments: Iterator[tuple[int, int, bool]],
        buffer: AlignedBuffer,
        scratch: AlignedBuffer,
    ) -> str | None:
        """Compare each chunk while a second thread reads the next one."""
        spare = AlignedBuffer()
        buffers = (buffer, spare)
        pending: tuple[Future[int], int, int, AlignedBuffer] | None = None
        try:
            with ThreadPoolExecutor(max_workers=1) as reader:
                for number, (offset, length, direct) in enumerate(segments):
                    if direct != self._direct_set and pending is not None:
                        # O_DIRECT is changed only while no read is in flight.
                        mismatch = _compare_read(pattern, pending, scratch)
                        pending = None
                        if mismatch:
                            return mismatch
                    self._set_direct(direct)
                    # The read in flight fills the other buffer.
                    target = buffers[number % 2]
                    view = target.view[:length]
                    future = reader.submit(os.preadv, self.descriptor, [view], offset)
                    if pending is not None:
                        mismatch = _compare_read(pattern, pending, scratch)
                        if mismatch:
                            return mismatch
                    pending = (future, offset, length, target)
                if pending is not None:
                    return _compare_read(pattern, pending, scratch)
            return None
        finally:
            spare.close()

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
