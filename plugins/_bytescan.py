"""Fast raw-byte search for many thousands of row fingerprints at once.

A database purge can plan 100,000 rows with several fingerprints each, and
the data files to scan run to gigabytes. Building an Aho-Corasick automaton
over that many patterns, and stepping it over latin-1 text, takes longer
than the purge itself. This scanner filters with numpy instead. It reads
every 8-byte window of a chunk as an unsigned integer and keeps the windows
whose 24-bit hash is set in a bit table built from one 8-byte key per
fingerprint. Only windows equal to a key are then compared in full. It
returns the same :class:`plugins.scan.Hit` values as
:class:`plugins.scan.FingerprintScanner`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy

from plugins import scan

#: Bytes per read; consecutive chunks overlap by the longest fingerprint.
CHUNK = 64 * 1024 * 1024
_KEY = 8
_TABLE_BITS = 24
#: Odd 64-bit multiplier of the hash. The top bits of the product depend on
#: every byte of the window, while the low bytes of text repeat.
_MULTIPLIER = numpy.uint64(0x9E3779B97F4A7C15)
_SHIFT = numpy.uint64(64 - _TABLE_BITS)


def _hash(values: numpy.ndarray) -> numpy.ndarray:
    return ((values * _MULTIPLIER) >> _SHIFT).astype(numpy.intp)


class RowScanner:
    """Search files for fingerprints registered under owners (item keys)."""

    def __init__(self) -> None:
        # Key (8 bytes of a fingerprint as an integer) -> (fingerprint, digest,
        # owners, offset of the key inside the fingerprint).
        self._by_key: dict[int, list[tuple[bytes, str, list[str], int]]] = {}
        self._owners: dict[bytes, list[str]] = {}
        self._longest = 0
        self._table: numpy.ndarray | None = None
        self._sorted_keys = numpy.zeros(0, dtype=numpy.uint64)

    def add_all(self, owner: str, fingerprints: Iterable[bytes]) -> None:
        for fingerprint in fingerprints:
            if len(fingerprint) < _KEY:
                continue
            owners = self._owners.get(fingerprint)
            if owners is None:
                owners = self._owners[fingerprint] = []
                offset = self._key_offset(fingerprint)
                key = int.from_bytes(fingerprint[offset : offset + _KEY], "little")
                entry = (fingerprint, scan.fingerprint_digest(fingerprint), owners, offset)
                self._by_key.setdefault(key, []).append(entry)
                self._longest = max(self._longest, len(fingerprint))
                self._table = None
            if owner not in owners:
                owners.append(owner)

    def _key_offset(self, fingerprint: bytes) -> int:
        """Pick the 8 bytes of a fingerprint that the fewest others share.

        Values of one column often share a prefix or suffix ("@example.org"),
        and a key shared by thousands of fingerprints turns every occurrence
        in the file into thousands of comparisons.
        """
        best, best_count = 0, None
        for offset in range(0, len(fingerprint) - _KEY + 1):
            key = int.from_bytes(fingerprint[offset : offset + _KEY], "little")
            count = len(self._by_key.get(key, ()))
            if best_count is None or count < best_count:
                best, best_count = offset, count
                if count == 0:
                    break
        return best

    def __len__(self) -> int:
        return len(self._owners)

    def _bit_table(self) -> numpy.ndarray:
        if self._table is None:
            table = numpy.zeros(1 << _TABLE_BITS, dtype=bool)
            keys = numpy.fromiter(self._by_key, dtype=numpy.uint64, count=len(self._by_key))
            table[_hash(keys)] = True
            self._table = table
            self._sorted_keys = numpy.sort(keys)
        return self._table

    def scan_file(self, path: str | os.PathLike[str]) -> Iterator[scan.Hit]:
        """Yield every hit in a file, each once, with its offset in the file."""
        if not self._owners:
            return
        carry = b""
        position = 0  # file offset of the first byte of ``carry``
        with open(path, "rb", buffering=0) as stream:
            while chunk := stream.read(CHUNK):
                buffer = carry + chunk
                for start, entry in self._search(buffer):
                    # A match wholly inside the carried tail was reported
                    # with the previous chunk.
                    if start + len(entry[0]) <= len(carry):
                        continue
                    for owner in entry[2]:
                        yield scan.Hit(owner, entry[1], position + start)
                keep = min(len(buffer), self._longest - 1)
                carry = buffer[len(buffer) - keep :] if keep else b""
                position += len(buffer) - len(carry)

    def _search(self, buffer: bytes) -> Iterator[tuple[int, tuple[bytes, str, list[str], int]]]:
        table = self._bit_table()
        for shift in range(_KEY):
            count = (len(buffer) - shift) // _KEY
            if count <= 0:
                continue
            windows = numpy.frombuffer(buffer, dtype="<u8", count=count, offset=shift)
            candidates = numpy.flatnonzero(table[_hash(windows)])
            # Keep only windows equal to a key before the per-match Python loop.
            values = windows[candidates]
            slots = numpy.searchsorted(self._sorted_keys, values)
            slots[slots == len(self._sorted_keys)] = 0
            exact = self._sorted_keys[slots] == values
            candidates = candidates[exact]
            values = values[exact].tolist()
            for index, value in zip(candidates.tolist(), values):
                entries = self._by_key.get(value)
                if not entries:
                    continue
                window = shift + index * _KEY
                for entry in entries:
                    start = window - entry[3]
                    if start >= 0 and buffer[start : start + len(entry[0])] == entry[0]:
                        yield start, entry
