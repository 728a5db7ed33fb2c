"""Fast raw-byte search for many thousands of row fingerprints at once.

A database purge can plan 100,000 rows with several fingerprints each, and
the data files to scan run to gigabytes. Stepping an Aho-Corasick automaton
over latin-1 text is too slow for that: 28 s against 0.9 s for this scanner
on a 50 MB file with 63,000 fingerprints. This scanner filters with numpy.

A fingerprint of at least 15 bytes wholly contains one 8-byte window that
starts at a multiple of 8 in the buffer searched, wherever the fingerprint
starts. So such a fingerprint is registered under 8 keys, the 8-byte runs
that start at each of the first 8 bytes of one 15-byte span (its middle,
start or end, whichever other fingerprints share least), and the scan
reads only the aligned 8-byte windows of each buffer as unsigned
integers. Shorter fingerprints (8 to 14 bytes), and long ones whose every
span has a key that many others share, have one key, the 8-byte run they
share with the fewest others, and are looked for at all 8 alignments.
Values of one column often share a prefix ("+1-555-0") or a suffix, and a
window equal to a shared key is compared with every fingerprint under it. A window passes when its
hash is set in a bit table and it equals a key. Only those windows are
compared in full, in Python. Keys are multiplied by an odd constant modulo
2**64, which maps distinct keys to distinct products, and the index is
sorted by product. The top bits of a product are its bit-table hash and
its bucket in the index, so one sort serves the bit table, the buckets and
the binary search. Hits are the same :class:`plugins.scan.Hit`
values as :class:`plugins.scan.FingerprintScanner` returns.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy

from plugins import scan

#: Bytes per read; consecutive chunks overlap by the longest fingerprint.
#: A few MiB keep numpy's temporary arrays in the processor cache.
CHUNK = 4 * 1024 * 1024
#: Threads that search the chunks of one file.
SCAN_THREADS = 2
_KEY = 8
#: Shortest fingerprint that always contains an aligned window.
_SPAN = 2 * _KEY - 1
#: The bit table has 2**5 to 2**6 bits per key, so at most about 3% of the
#: windows that equal no key pass through to the exact check.
_BITS_PER_KEY = 5
_MIN_TABLE_BITS = 20
_MAX_TABLE_BITS = 30
#: Maximum keys in one bucket of the key index for the bucket-by-bucket
#: lookup. A chunk with a window in a larger bucket uses binary search.
_MAX_BUCKET_KEYS = 32
#: Offsets weighed when a fingerprint's key is chosen outside a span.
_MAX_CHOICES = 64
#: Fingerprints sharing a middle key beyond which a long fingerprint's start
#: and end are weighed too. A window equal to a key is compared with each
#: fingerprint under it, which costs little for a few. Weighing them took
#: about 0.2 of 0.5 s for 300,000 fingerprints with copies among them.
_FEW_SHARED = 4
#: Fingerprints sharing a span key beyond which a long fingerprint is keyed
#: by its rarest run at any offset and searched at every alignment instead.
_MAX_SHARED_SPAN = 16
#: Maximum (window, key) pairs confirmed at once, which bounds the memory a
#: chunk of windows equal to widely shared keys takes (about 100 MiB).
_MAX_PAIRS = 1 << 22
#: Odd 64-bit multiplier of the hash. The top bits of the product depend on
#: every byte of the window, while the low bytes of text repeat.
_MULTIPLIER = numpy.uint64(0x9E3779B97F4A7C15)
_BIT_MASKS = numpy.array([1 << bit for bit in range(8)], dtype=numpy.uint8)


def _bit_table(hashed: numpy.ndarray, bits: int) -> numpy.ndarray:
    """Return a packed table of ``2**bits`` bits with the ``hashed`` bits set.

    ``hashed`` must be sorted.
    """
    cells = hashed >> 3
    masks = _BIT_MASKS[hashed & 7]
    # Sorted, the bits of one byte sit next to each other, so one OR-reduce
    # per byte sets them.
    firsts = numpy.flatnonzero(numpy.r_[True, cells[1:] != cells[:-1]])
    table = numpy.zeros(1 << (bits - 3), dtype=numpy.uint8)
    table[cells[firsts]] = numpy.bitwise_or.reduceat(masks, firsts)
    return table


def _pack(fingerprints: Sequence[bytes]) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Return the 8-byte words of the joined fingerprints, their lengths and their starts.

    Element ``i`` of the words is the little-endian word that starts at byte
    ``i`` of the fingerprints joined end to end, so keys, heads and tails are
    cut out with one numpy gather each instead of one slice per fingerprint.
    """
    joined = b"".join(fingerprints) + bytes(_KEY)
    # Overlapping, unaligned 8-byte elements one byte apart: a gather from
    # this view reads each word in one step instead of eight byte reads.
    words = numpy.ndarray(
        shape=(len(joined) - _KEY + 1,), dtype="<u8", buffer=joined, strides=(1,)
    )
    lengths = numpy.fromiter(map(len, fingerprints), dtype=numpy.intp, count=len(fingerprints))
    return words, lengths, numpy.cumsum(lengths) - lengths


class _SortedKeys(NamedTuple):
    """Products of 8-byte keys in order, with the number of each product's key."""

    products: numpy.ndarray
    order: numpy.ndarray
    #: The product bits compared; the low bits held the sort's key numbers.
    high: numpy.uint64


def _sort_keys(keys: numpy.ndarray) -> _SortedKeys:
    """Sort the keys' products, carrying each key's number in the low bits.

    One plain sort then orders the products and the permutation together,
    which is about twice as fast as an argsort. Products are compared in
    their top bits only, and keys that differ only in the low bits are
    distinguished when the match is compared in full.
    """
    bits = max(1, (len(keys) - 1).bit_length())
    low = numpy.uint64((1 << bits) - 1)
    # In place where possible: each temporary of millions of keys is fresh
    # memory, and its page faults cost more than the arithmetic.
    packed = keys * _MULTIPLIER
    packed &= ~low
    packed |= numpy.arange(len(keys), dtype=numpy.uint64)
    packed.sort()
    order = (packed & low).view(numpy.int64)
    packed &= ~low
    return _SortedKeys(packed, order, ~low)


def _run_counts(ordered: _SortedKeys) -> numpy.ndarray:
    """Return, for each key of a sort, how many keys of the sort equal it."""
    products = ordered.products
    firsts = numpy.flatnonzero(numpy.r_[True, products[1:] != products[:-1]])
    counts = numpy.diff(numpy.r_[firsts, len(products)])
    result = numpy.empty(len(products), numpy.intp)
    result[ordered.order] = numpy.repeat(counts, counts)
    return result


def _frequencies(keys: numpy.ndarray) -> numpy.ndarray:
    """Return, for each key, how many of ``keys`` equal it."""
    return _run_counts(_sort_keys(keys))


def _rarest_offsets(
    words: numpy.ndarray, starts: numpy.ndarray, lengths: numpy.ndarray
) -> numpy.ndarray:
    """Choose for each fingerprint the 8-byte run it shares with the fewest others.

    Values of one column often share their first bytes ("+1-555-0..."), and
    a window equal to a key shared by thousands of fingerprints is compared
    with every one of them. Up to ``_MAX_CHOICES`` offsets, spread over the
    fingerprint, are weighed.
    """
    width = int(min(_MAX_CHOICES, lengths.max() - _KEY + 1))
    spread = numpy.arange(width)[None, :] * (lengths - _KEY)[:, None] // max(width - 1, 1)
    choices = numpy.minimum(spread, (lengths - _KEY)[:, None])
    keys = words[(starts[:, None] + choices).ravel()]
    shared = _frequencies(keys).reshape(choices.shape)
    return choices[numpy.arange(len(starts)), numpy.argmin(shared, axis=1)]


def _rarest_spans(
    words: numpy.ndarray, starts: numpy.ndarray, lengths: numpy.ndarray
) -> tuple[numpy.ndarray, numpy.ndarray, _SortedKeys | None]:
    """Choose for each long fingerprint the 15-byte span whose keys it shares least.

    Returns the span starts, how many fingerprints share the span's most
    shared key, and the sort of the chosen keys when every fingerprint kept
    its middle (None otherwise), so the index need not sort them again.

    The middle comes first, because values of one column often share a
    prefix or a suffix ("user1", "@example.org"). Only fingerprints with a
    middle key that more than ``_FEW_SHARED`` fingerprints share weigh their
    start and end too, against the middles of the others. A value copied
    into another column or row shares its middle with one or two others, so
    the common case stays at one sort.
    """
    steps = numpy.arange(_KEY)
    middles = (lengths - _SPAN) // 2
    keys = words[(starts + middles)[:, None] + steps].ravel()
    ordered = _sort_keys(keys)
    shared = _run_counts(ordered).reshape(len(starts), _KEY).max(axis=1)
    redo = numpy.flatnonzero(shared > _FEW_SHARED)
    if not len(redo):
        return middles, shared, ordered
    candidates = numpy.stack(
        [middles[redo], numpy.zeros_like(redo), lengths[redo] - _SPAN], axis=1
    )
    weighed_keys = words[(starts[redo][:, None, None] + candidates[:, :, None] + steps).ravel()]
    # Each weighed key is counted among the middles of the settled
    # fingerprints and the keys weighed. One sort of them all is faster than
    # a binary search per weighed key.
    settled = numpy.ones(len(starts), dtype=bool)
    settled[redo] = False
    pool = numpy.concatenate([keys.reshape(len(starts), _KEY)[settled].ravel(), weighed_keys])
    weighed = _frequencies(pool)[len(pool) - len(weighed_keys) :]
    weighed = weighed.reshape(len(redo), 3, _KEY).max(axis=2)
    best = numpy.argmin(weighed, axis=1)
    rows = numpy.arange(len(redo))
    bases = middles.copy()
    bases[redo] = candidates[rows, best]
    shared = shared.copy()
    shared[redo] = weighed[rows, best]
    return bases, shared, ordered if not best.any() else None


class _KeyIndex:
    """Sorted 8-byte keys, each naming a fingerprint and the key's offset in it."""

    def __init__(self, fingerprints: Sequence[bytes], spread: bool) -> None:
        #: Fingerprints left out because every span of theirs has a key that
        #: many others share; they belong in an index without ``spread``.
        self.crowded: list[bytes] = []
        words, lengths, starts = _pack(fingerprints)
        ordered: _SortedKeys | None = None
        if spread:
            bases, shared, ordered = _rarest_spans(words, starts, lengths)
            crowded = shared > _MAX_SHARED_SPAN
            if crowded.any():
                self.crowded = [fp for fp, out in zip(fingerprints, crowded) if out]
                fingerprints = [fp for fp, out in zip(fingerprints, crowded) if not out]
                words, lengths, starts = _pack(fingerprints)
                bases = bases[~crowded]
                ordered = None
        self.fingerprints = fingerprints
        if not fingerprints:
            return
        # Equal keys may come in any order, because matches() takes them all.
        if spread:
            if ordered is None:
                steps = numpy.arange(_KEY)
                ordered = _sort_keys(words[(starts + bases)[:, None] + steps].ravel())
            # Key number k is run k % 8 of the span of fingerprint k // 8.
            self.owners, runs = numpy.divmod(ordered.order, _KEY)
            self.offsets = bases[self.owners] + runs
        else:
            offsets = _rarest_offsets(words, starts, lengths)
            ordered = _sort_keys(words[starts + offsets])
            self.owners = ordered.order
            self.offsets = offsets[ordered.order]
        self.products = ordered.products
        self.high = ordered.high
        # First and last 8 bytes of each key's fingerprint, so most windows
        # that equal a key by chance fail in numpy rather than in Python.
        self.heads = words[starts][self.owners]
        self.tails = words[starts + lengths - _KEY][self.owners]
        self.lengths = lengths[self.owners]
        # A packed bit table sized to the key count: small enough to stay in
        # cache for a few thousand keys, sparse enough for millions.
        bits = len(self.products).bit_length() + _BITS_PER_KEY
        bits = min(_MAX_TABLE_BITS, max(_MIN_TABLE_BITS, bits))
        self.shift = numpy.uint64(64 - bits)
        self.table = _bit_table((self.products >> self.shift).view(numpy.int64), bits)
        # Buckets of products by their top bits, about one key per bucket.
        # The keys equal to a window lie in the window's bucket.
        bucket_bits = max(1, len(self.products).bit_length())
        self.bucket_shift = numpy.uint64(64 - bucket_bits)
        buckets = (self.products >> self.bucket_shift).view(numpy.int64)
        counts = numpy.bincount(buckets, minlength=1 << bucket_bits)
        self.bucket_starts = numpy.zeros(len(counts) + 1, numpy.intp)
        numpy.cumsum(counts, out=self.bucket_starts[1:])

    def matches(
        self, windows: numpy.ndarray, data: numpy.ndarray, shift: int
    ) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Return start offsets and fingerprint numbers of likely matches.

        ``windows`` are the 8-byte words of ``data`` from byte ``shift`` on.
        A returned match equals its fingerprint in its key and in its first
        and last 8 bytes. The caller compares the rest.
        """
        products = windows * _MULTIPLIER
        hashed = (products >> self.shift).view(numpy.int64)
        # flatnonzero() of a boolean array took a ninth of its time on these
        # uint8 values, so they are compared with 0 first.
        candidates = numpy.flatnonzero((self.table[hashed >> 3] & _BIT_MASKS[hashed & 7]) != 0)
        empty = numpy.empty(0, numpy.intp)
        if not len(candidates):
            return empty, empty
        values = products[candidates] & self.high
        # The windows' buckets hold at least the keys equal to them, so
        # their sizes bound the pairs without a search.
        buckets = (values >> self.bucket_shift).astype(numpy.intp)
        bound = self.bucket_starts[buckets + 1] - self.bucket_starts[buckets]
        if int(bound.sum()) <= _MAX_PAIRS:
            return self._confirm(candidates, values, data, shift)
        pairs = numpy.searchsorted(self.products, values, side="right") - numpy.searchsorted(
            self.products, values, side="left"
        )
        # Windows equal to keys that many fingerprints share: confirm them a
        # part at a time, so the pairs never take more than a bounded memory.
        ends = numpy.cumsum(pairs)
        found_starts, found_owners = [], []
        first = 0
        while first < len(candidates):
            limit = (ends[first - 1] if first else 0) + _MAX_PAIRS
            last = max(first + 1, int(numpy.searchsorted(ends, limit, side="right")))
            starts, owners = self._confirm(
                candidates[first:last], values[first:last], data, shift
            )
            found_starts.append(starts)
            found_owners.append(owners)
            first = last
        return numpy.concatenate(found_starts), numpy.concatenate(found_owners)

    def _confirm(
        self,
        candidates: numpy.ndarray,
        values: numpy.ndarray,
        data: numpy.ndarray,
        shift: int,
    ) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Return the matches of the windows at ``candidates`` (numbers of 8-byte words)."""
        empty = numpy.empty(0, numpy.intp)
        rows, slots = self._equal_keys(values)
        if not len(rows):
            return empty, empty
        starts = shift + candidates[rows] * _KEY - self.offsets[slots]
        lengths = self.lengths[slots]
        inside = (starts >= 0) & (starts + lengths <= len(data))
        starts, slots, lengths = starts[inside], slots[inside], lengths[inside]
        if not len(starts):
            return empty, empty
        spans = numpy.arange(_KEY)
        heads = data[starts[:, None] + spans].view("<u8").ravel()
        tails = data[(starts + lengths - _KEY)[:, None] + spans].view("<u8").ravel()
        equal = (heads == self.heads[slots]) & (tails == self.tails[slots])
        return starts[equal], self.owners[slots[equal]]


    def _equal_keys(self, values: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Return pairs of a value's number and the slot of a key equal to it.

        Each value is compared with the keys of its bucket, one step per
        position in the bucket. A bucket of more than ``_MAX_BUCKET_KEYS``
        keys (many fingerprints sharing 8-byte runs) makes the lookup fall
        back to a binary search.
        """
        buckets = (values >> self.bucket_shift).astype(numpy.intp)
        lows = self.bucket_starts[buckets]
        sizes = self.bucket_starts[buckets + 1] - lows
        longest = int(sizes.max(initial=0))
        if longest > _MAX_BUCKET_KEYS:
            return self._equal_keys_sorted(values)
        rows: list[numpy.ndarray] = []
        slots: list[numpy.ndarray] = []
        numbers = numpy.arange(len(values))
        for step in range(longest):
            numbers = numbers[sizes[numbers] > step]
            at = lows[numbers] + step
            equal = self.products[at] == values[numbers]
            rows.append(numbers[equal])
            slots.append(at[equal])
        if not rows:
            return numpy.empty(0, numpy.intp), numpy.empty(0, numpy.intp)
        found_rows = numpy.concatenate(rows)
        order = numpy.argsort(found_rows, kind="stable")
        return found_rows[order], numpy.concatenate(slots)[order]

    def _equal_keys_sorted(self, values: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
        first = numpy.searchsorted(self.products, values, side="left")
        last = numpy.searchsorted(self.products, values, side="right")
        counts = last - first
        # Expand each value into one row per equal key.
        rows = numpy.repeat(numpy.arange(len(values)), counts)
        steps = numpy.arange(len(rows)) - numpy.repeat(numpy.cumsum(counts) - counts, counts)
        return rows, first[rows] + steps


class RowScanner:
    """Search files for fingerprints registered under owners (item keys)."""

    def __init__(self) -> None:
        # A fingerprint's one owner, or a dict of owners when several rows
        # share it, because a container for every fingerprint costs one more
        # object each. A dict keeps the order and checks membership in
        # constant time, where a list made adding rows that share a value
        # quadratic.
        self._owners: dict[bytes, str | dict[str, None]] = {}
        self._indexes: list[tuple[_KeyIndex, range]] | None = None
        self._digests: dict[bytes, str] = {}
        self._longest = 0

    def add_all(self, owner: str, fingerprints: Iterable[bytes]) -> None:
        registered = self._owners
        for fingerprint in fingerprints:
            if len(fingerprint) < _KEY:
                continue
            owners = registered.get(fingerprint)
            if owners is None:
                registered[fingerprint] = owner
                self._indexes = None
            elif isinstance(owners, str):
                if owners != owner:
                    registered[fingerprint] = {owners: None, owner: None}
            else:
                owners[owner] = None

    def __len__(self) -> int:
        return len(self._owners)

    def found_fingerprints(self) -> dict[str, bytes]:
        """Map the digest of each fingerprint found by a scan so far to the fingerprint."""
        return {digest: fingerprint for fingerprint, digest in self._digests.items()}

    def build(self) -> None:
        """Build the search index now rather than at the first scan."""
        if self._owners:
            self._built()

    def _built(self) -> list[tuple[_KeyIndex, range]]:
        if self._indexes is None:
            long = [fp for fp in self._owners if len(fp) >= _SPAN]
            short = [fp for fp in self._owners if len(fp) < _SPAN]
            self._indexes = []
            if long:
                spread = _KeyIndex(long, spread=True)
                if spread.fingerprints:
                    self._indexes.append((spread, range(1)))
                short += spread.crowded
            if short:
                self._indexes.append((_KeyIndex(short, spread=False), range(_KEY)))
            self._longest = max(map(len, self._owners))
        return self._indexes

    @property
    def longest(self) -> int:
        """Length of the longest fingerprint registered."""
        if not self._owners:
            return 0
        self._built()
        return self._longest

    def hits_in(self, buffer: bytes, carried: int, position: int) -> Iterator[scan.Hit]:
        """Yield the hits in ``buffer`` that do not lie wholly in its first
        ``carried`` bytes, with offsets counted from ``position``."""
        if not self._owners:
            return
        for start, fingerprint in self._search(buffer, self._built()):
            # A match wholly inside the carried tail was reported with the
            # previous chunk.
            if start + len(fingerprint) <= carried:
                continue
            yield from self._hits(fingerprint, position + start)

    def digest(self, fingerprint: bytes) -> str:
        """Return the digest of a registered fingerprint, as its hits carry it."""
        digest = self._digests.get(fingerprint)
        if digest is None:
            digest = self._digests[fingerprint] = scan.fingerprint_digest(fingerprint)
        return digest

    def owners(self, fingerprint: bytes) -> Sequence[str]:
        """Return the owners a registered fingerprint was added for."""
        owners = self._owners[fingerprint]
        if isinstance(owners, str):
            return (owners,)
        return list(owners)

    def _hits(self, fingerprint: bytes, offset: int) -> Iterator[scan.Hit]:
        """Yield a hit at ``offset`` for each owner of ``fingerprint``."""
        digest = self.digest(fingerprint)
        owners = self._owners[fingerprint]
        if isinstance(owners, str):
            yield scan.Hit(owners, digest, offset)
            return
        for owner in owners:
            yield scan.Hit(owner, digest, offset)

    def scan_chunks(self, chunks: Iterable[bytes]) -> Iterator[scan.Hit]:
        """Yield every hit in a stream of consecutive chunks, each once."""
        yield from scan._scan_stream(chunks, [self])

    def scan_file(self, path: str | os.PathLike[str]) -> Iterator[scan.Hit]:
        """Yield every hit in a file, each once, with its offset in the file."""
        for fingerprint, offset in self.find_in_file(path):
            yield from self._hits(fingerprint, offset)

    def find_in_file(
        self, path: str | os.PathLike[str]
    ) -> Iterator[tuple[bytes, int]]:
        """Yield a (fingerprint, offset) pair per occurrence in a file, each once.

        One occurrence of a fingerprint that many rows share is one tuple
        here and one hit per row in :meth:`scan_file`.

        Chunks are searched by ``SCAN_THREADS`` threads, because numpy lets
        go of the interpreter lock for most of the search. Each chunk is
        read with the longest fingerprint's length less one byte more, and
        reports only the matches that start inside it. Bytes written after
        the scan measured the file are read in turn at the end.
        """
        if not self._owners:
            return
        indexes = self._built()
        overlap = max(self._longest - 1, 0)
        with open(path, "rb", buffering=0) as stream:
            descriptor = stream.fileno()
            size = os.fstat(descriptor).st_size

            def part(start: int) -> list[tuple[int, bytes]]:
                buffer = os.pread(descriptor, min(CHUNK + overlap, size - start), start)
                return [
                    (start + offset, fingerprint)
                    for offset, fingerprint in self._search(buffer, indexes)
                    if offset < CHUNK
                ]

            with concurrent.futures.ThreadPoolExecutor(
                SCAN_THREADS, thread_name_prefix="lethe-scan"
            ) as pool:
                for found in pool.map(part, range(0, size, CHUNK)):
                    for offset, fingerprint in found:
                        yield fingerprint, offset
            # A file that grew since: the rest, with the last bytes scanned
            # carried so that a match across the old end is found once.
            keep = min(size, overlap)
            carry = os.pread(descriptor, keep, size - keep)
            position = size - keep
            stream.seek(size)
            while chunk := stream.read(CHUNK):
                buffer = carry + chunk
                for start, fingerprint in self._search(buffer, indexes):
                    # A match wholly inside the carried bytes was found before.
                    if start + len(fingerprint) > len(carry):
                        yield fingerprint, position + start
                keep = min(len(buffer), overlap)
                carry = buffer[len(buffer) - keep :] if keep else b""
                position += len(buffer) - len(carry)

    @staticmethod
    def _search(
        buffer: bytes, indexes: list[tuple[_KeyIndex, range]]
    ) -> Iterator[tuple[int, bytes]]:
        data = numpy.frombuffer(buffer, dtype=numpy.uint8)
        for index, shifts in indexes:
            # A fingerprint with repeated 8-byte runs can match one window
            # through several keys; report each start once.
            seen: set[tuple[int, int]] = set()
            for shift in shifts:
                count = (len(buffer) - shift) // _KEY
                if count <= 0:
                    continue
                windows = numpy.frombuffer(buffer, dtype="<u8", count=count, offset=shift)
                starts, numbers = index.matches(windows, data, shift)
                for start, number in zip(starts.tolist(), numbers.tolist()):
                    fingerprint = index.fingerprints[number]
                    if (start, number) in seen:
                        continue
                    if buffer[start : start + len(fingerprint)] == fingerprint:
                        seen.add((start, number))
                        yield start, fingerprint
