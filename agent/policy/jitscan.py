"""Compiled candidate search and validation, one pass over the bytes.

The array scanner of :mod:`agent.policy.fastscan` makes a dozen passes over
every buffer and builds a row of 19 bytes per candidate, which keeps it
below 100 MB/s on exports with about 20 values per KiB. This module does
the same work in one loop compiled by numba: it walks the runs of ASCII
letters and digits, validates each run of a candidate length in place
(dates, ISO 7064 MOD 11-2, GB 32100, Luhn), follows ``@`` signs into their
domains, and counts. It reports exactly the values of the
regular-expression scanner in :mod:`agent.policy.detectors`, which the
tests compare on generated corpora.

The loop releases the GIL, so threads can scan windows of one file in
parallel (:func:`count_file`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

from . import detectors as d
from .fastscan import Span

#: Kind codes used inside the compiled loop, in the order of :data:`KINDS`.
KINDS = (d.CN_RIC, d.CN_USCC, d.BANK_CARD, d.CN_RIC15, d.CN_MOBILE, d.EMAIL)
_RIC, _USCC, _CARD, _RIC15, _MOBILE, _EMAIL = range(6)
#: Examples kept per kind by the counting loop.
EXAMPLES = d.Findings.EXAMPLE_ATTEMPTS
#: Bytes each thread scans per call of the compiled loop.
WINDOW = 16 * 1024 * 1024
#: Bytes before a window searched for an ``@`` whose domain reaches into it.
#: The maximum domain length the pattern accepts is 1 + 8 * 64 + 24 bytes.
_DOMAIN_REACH = 544
#: Context read on each side of a file window: the domain reach before it,
#: and after it the longest value or domain that starts inside it.
_MARGIN = 1024

_FLAGS = np.zeros(256, dtype=np.uint8)  # 1 digit, 2 letter, 4 local part, 8 domain
for _byte in b"0123456789":
    _FLAGS[_byte] |= 1 | 4 | 8
for _byte in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _FLAGS[_byte] |= 2 | 4 | 8
for _byte in b"._%+-":
    _FLAGS[_byte] |= 4
for _byte in b".-":
    _FLAGS[_byte] |= 8

_USCC_VALUE = np.full(256, 255, dtype=np.uint8)
for _index, _char in enumerate(b"0123456789ABCDEFGHJKLMNPQRTUWXY"):
    _USCC_VALUE[_char] = _index
_USCC_AUTHORITY = np.zeros(256, dtype=np.bool_)
for _byte in b"123456789ANY":
    _USCC_AUTHORITY[_byte] = True
_USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
_RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
_PROVINCE = np.zeros(100, dtype=np.bool_)
for _code in d._PROVINCES:
    _PROVINCE[int(_code)] = True
_CODE_AREA = _PROVINCE.copy()
_CODE_AREA[10] = True
_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)

_jit = numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
_jit_entry = numba.njit(cache=True, nogil=True, boundscheck=False)


@intrinsic
def _trailing_zeros(typing_context, value):
    """Count the zero bits below the lowest set bit (the width for 0), as LLVM cttz."""
    if not isinstance(value, numba.types.Integer):
        return None

    def codegen(context, builder, signature, arguments):
        return builder.cttz(arguments[0], ir.Constant(ir.IntType(1), 0))

    return value(value), codegen


@intrinsic
def _leading_zeros(typing_context, value):
    """Count the zero bits above the highest set bit (the width for 0), as LLVM ctlz."""
    if not isinstance(value, numba.types.Integer):
        return None

    def codegen(context, builder, signature, arguments):
        return builder.ctlz(arguments[0], ir.Constant(ir.IntType(1), 0))

    return value(value), codegen


@intrinsic
def _borrowed(typing_context, array):
    """Return a view of ``array`` that carries no reference count.

    Numba adds an atomic increment and decrement of an array's reference
    count (its NRT meminfo) around most uses of the array in an inlined
    helper. In the loop of :func:`scan` those cost more than the
    validation itself. A view with a null meminfo makes them no-ops. It is
    safe only while the caller keeps ``array`` alive and the view does not
    outlive the call, which holds for the arguments of :func:`scan`.
    """
    if not isinstance(array, numba.types.Array):
        return None

    def codegen(context, builder, signature, arguments):
        view = context.make_array(array)(context, builder, value=arguments[0])
        view.meminfo = ir.Constant(view.meminfo.type, None)
        return view._getvalue()

    return array(array), codegen


@_jit
def _digits(data, start, count):
    value = 0
    for index in range(start, start + count):
        value = value * 10 + (data[index] - 48)
    return value


@_jit
def _valid_date(year, month, day, today):
    if month < 1 or month > 12 or day < 1:
        return False
    days = _DAYS[month]
    if month == 2 and not ((year % 4 == 0 and year % 100 != 0) or year % 400 == 0):
        days = 28
    return day <= days and year * 10000 + month * 100 + day <= today


@_jit
def _is_ric(data, start, today):
    if not _PROVINCE[_digits(data, start, 2)]:
        return False
    year = _digits(data, start + 6, 4)
    if year < 1800:
        return False
    month = _digits(data, start + 10, 2)
    if not _valid_date(year, month, _digits(data, start + 12, 2), today):
        return False
    total = 0
    for index in range(17):
        total += (data[start + index] - 48) * _RIC_WEIGHTS[index]
    expected = (12 - total % 11) % 11
    last = data[start + 17]
    actual = 10 if last == 88 or last == 120 else last - 48
    return expected == actual


@_jit
def _is_uscc(data, start):
    if not _USCC_AUTHORITY[data[start]]:
        return False
    total = 0
    for index in range(18):
        value = _USCC_VALUE[data[start + index]]
        if value == 255:
            return False
        if 2 <= index < 8 and value > 9:
            return False
        if index < 17:
            total += value * _USCC_WEIGHTS[index]
    area = _USCC_VALUE[data[start + 2]] * 10 + _USCC_VALUE[data[start + 3]]
    if not _CODE_AREA[area]:
        return False
    return (31 - total % 31) % 31 == _USCC_VALUE[data[start + 17]]


@_jit
def _is_card(data, start, length):
    p2 = _digits(data, start, 2)
    p3 = p2 * 10 + data[start + 2] - 48
    p4 = p3 * 10 + data[start + 3] - 48
    prefix = (
        p2 // 10 == 4
        or 50 <= p2 <= 58
        or 2221 <= p4 <= 2720
        or p2 == 30
        or p2 == 34
        or 36 <= p2 <= 39
        or 3528 <= p4 <= 3589
        or p4 == 6011
        or 644 <= p3 <= 649
        or p2 == 62
        or p2 == 63
        or p2 == 65
        or p2 == 67
    )
    if not prefix:
        return False
    total = 0
    for index in range(length):
        digit = data[start + index] - 48
        if (length - 1 - index) % 2 == 1:
            digit = digit * 2 - 9 if digit >= 5 else digit * 2
        total += digit
    return total % 10 == 0


@_jit
def _is_ric15(data, start, today):
    if not _PROVINCE[_digits(data, start, 2)]:
        return False
    year = 1900 + _digits(data, start + 6, 2)
    month = _digits(data, start + 8, 2)
    return _valid_date(year, month, _digits(data, start + 10, 2), today)


@_jit
def _is_mobile(data, start, length):
    if length == 11:
        body = start
    elif length == 13 and data[start] == 56 and data[start + 1] == 54:
        body = start + 2
    elif (
        length == 15
        and data[start] == 48
        and data[start + 1] == 48
        and data[start + 2] == 56
        and data[start + 3] == 54
    ):
        body = start + 4
    else:
        return False
    return data[body] == 49 and data[body + 1] >= 51


@_jit
def _has_context(data, start, words, bounds, by_first, window):
    """Tell whether a context word ends within ``window`` bytes before ``start``.

    Words are sorted by their first byte, and the words starting with byte
    ``b`` are ``by_first[b]`` to ``by_first[b + 1]``, so each position is
    compared only with the words that can start there. ASCII capitals are
    folded to lower case, as the words are.
    """
    low = max(0, start - window)
    for position in range(low, start):
        byte = data[position]
        if 65 <= byte <= 90:
            byte += 32
        for word in range(by_first[byte], by_first[byte + 1]):
            first, stop = bounds[word], bounds[word + 1]
            size = stop - first
            if position + size > start:
                continue
            found = True
            for offset in range(1, size):
                byte = data[position + offset]
                if 65 <= byte <= 90:
                    byte += 32
                if byte != words[first + offset]:
                    found = False
                    break
            if found:
                return True
    return False


@_jit
def _domain_end(data, sign):
    """Return where the e-mail domain after the ``@`` at ``sign`` ends, or -1.

    The same match as ``@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\\.){1,8}[A-Za-z]{2,24}``
    followed by no ``[A-Za-z0-9-]``: labels end at dots, so the repetition
    can stop only after a dot, and the longest repetition whose last label
    is a run of 2 to 24 letters that nothing label-like follows wins.
    """
    size = data.size
    position = sign + 1
    if position >= size or not (_FLAGS[data[position]] & 3):
        return -1
    position += 1
    best = -1
    for _ in range(8):
        label = position
        while position < size and (_FLAGS[data[position]] & 3 or data[position] == 45):
            position += 1
        if position >= size or data[position] != 46 or position - label > 62:
            break
        position += 1
        # Could the top-level label start here? A later dot that also
        # works replaces this end, as the greedy repetition prefers it.
        end = position
        while end < size and _FLAGS[data[end]] & 2:
            end += 1
        run = end - position
        if 2 <= run <= 24 and not (
            end < size and (_FLAGS[data[end]] & 3 or data[end] == 45)
        ):
            best = end
    return best


@_jit
def _local_run(data, sign):
    run = 0
    while run < 64 and sign - run - 1 >= 0 and _FLAGS[data[sign - run - 1]] & 4:
        run += 1
    return run


@_jit
def _emit(kind, start, length, counts, examples, record, kinds, starts, lengths):
    count = counts[kind]
    if count < examples.shape[1]:
        examples[kind, count, 0] = start
        examples[kind, count, 1] = length
    counts[kind] = count + 1
    if record.size:
        slot = record[0]
        kinds[slot] = kind
        starts[slot] = start
        lengths[slot] = length
        record[0] = slot + 1


@_jit
def _is_ric_with_x(data, start):
    """Tell whether 18 bytes are 17 digits and ``X`` or ``x``."""
    last = data[start + 17]
    if last != 88 and last != 120:
        return False
    for index in range(start, start + 17):
        if not _FLAGS[data[index]] & 1:
            return False
    return True


@_jit
def _classify(data, start, length, all_digits, enabled, today, need_context, words,
              bounds, by_first, window):  # fmt: skip
    """Return the kind code of a token of 11 to 19 letters and digits, or -1."""
    if length == 18:
        if (
            enabled[_RIC]
            and (all_digits or _is_ric_with_x(data, start))
            and _is_ric(data, start, today)
        ):
            return _RIC
        if enabled[_USCC] and _is_uscc(data, start):
            return _USCC
    if not all_digits:
        return -1
    if enabled[_CARD] and length >= 13 and _is_card(data, start, length):
        return _CARD
    if enabled[_RIC15] and length == 15 and _is_ric15(data, start, today):
        return _RIC15
    if enabled[_MOBILE] and _is_mobile(data, start, length):
        if need_context and not _has_context(
            data, start, words, bounds, by_first, window
        ):
            return -1
        return _MOBILE
    return -1


@_jit
def _is_spaced_mobile(data, start):
    """Tell whether ``1[3-9]X-XXXX-XXXX`` (``-`` or space) starts at ``start``.

    The caller has checked that a run of three letters and digits starts
    there, so the first two bytes exist.
    """
    if data[start] != 49 or data[start + 1] < 51 or data[start + 1] > 57:
        return False
    size = data.size
    if start + 13 > size:
        return False
    if start + 13 < size and _FLAGS[data[start + 13]] & 3:
        return False
    for index in range(13):
        byte = data[start + index]
        if index == 3 or index == 8:
            if byte != 45 and byte != 32:
                return False
        elif not _FLAGS[byte] & 1:
            return False
    return True


@_jit
def _token_kind(data, start, length, all_digits, enabled, today, need_context,
                words, bounds, by_first, window):  # fmt: skip
    """Return the kind code of a run of 3 or 11 to 19 letters and digits, or -1."""
    if length != 3:
        return _classify(
            data, start, length, all_digits, enabled, today, need_context, words,
            bounds, by_first, window,
        )  # fmt: skip
    if (
        enabled[_MOBILE]
        and _is_spaced_mobile(data, start)
        and (
            not need_context
            or _has_context(data, start, words, bounds, by_first, window)
        )
    ):
        return _MOBILE
    return -1


_ONE = np.uint64(1)


@intrinsic
def _byte_masks(typing_context, data, base):
    """Return the letter-or-digit, digit and ``@`` bit masks of 64 bytes of ``data``.

    ``data`` is a contiguous uint8 array, and bit ``i`` is its byte
    ``base + i``, which must exist. The 64 bytes are
    compared as one vector, which LLVM compiles to the SIMD compares of the
    host CPU (AVX-512 ``vpcmpub`` into mask registers on the benchmark VM).
    Unsigned compares after a subtraction exclude the bytes of 0x80 and up.
    """
    # NOTE: casting the <64 x i1> vector to i64 puts element 0 in bit 0 on
    # x86-64, the little-endian target the tests ran on. Big-endian targets
    # are untested.
    if not (
        isinstance(data, numba.types.Array)
        and data.layout == "C"
        and data.dtype == numba.types.uint8
    ):
        return None

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, value=arguments[0])
        vector_type = ir.VectorType(ir.IntType(8), 64)
        pointer = builder.gep(array.data, [arguments[1]])
        pointer = builder.bitcast(pointer, vector_type.as_pointer())
        vector = builder.load(pointer, align=1)

        def splat(value):
            return ir.Constant(vector_type, [value] * 64)

        digit = builder.icmp_unsigned("<", builder.sub(vector, splat(48)), splat(10))
        folded = builder.or_(vector, splat(32))
        letter = builder.icmp_unsigned("<", builder.sub(folded, splat(97)), splat(26))
        sign = builder.icmp_unsigned("==", vector, splat(64))
        masks = [
            builder.bitcast(mask, ir.IntType(64))
            for mask in (builder.or_(digit, letter), digit, sign)
        ]
        return context.make_tuple(builder, signature.return_type, masks)

    return numba.types.UniTuple(numba.types.uint64, 3)(data, base), codegen


@_jit
def _group_masks(data, base):
    """Return the alphanumeric, digit and ``@`` bit masks of ``data[base:base + 64]``.

    Bit ``i`` is byte ``base + i``. Bytes past the end of ``data`` count
    as none of them.
    """
    if base + 64 <= data.size:
        return _byte_masks(data, base)
    alnum = np.uint64(0)
    digits = np.uint64(0)
    signs = np.uint64(0)
    for index in range(min(64, data.size - base)):
        byte = data[base + index]
        bit = _ONE << np.uint64(index)
        if _FLAGS[byte] & 3:
            alnum |= bit
            if _FLAGS[byte] & 1:
                digits |= bit
        elif byte == 64:
            signs |= bit
    return alnum, digits, signs


@_jit
def _shifted(mask, previous, count):
    """Return ``mask`` moved ``count`` bytes later, filled from the group before."""
    return (mask << np.uint64(count)) | (previous >> np.uint64(64 - count))


@_jit
def _ones_before(mask, previous, offset):
    """Count the set bits that end right below bit ``offset`` of ``mask``.

    The count continues into the top of ``previous``, the mask of the group
    before, and stops at 64.
    """
    if offset == 0:
        window = previous
    else:
        window = (mask << np.uint64(64 - offset)) | (previous >> np.uint64(offset))
    return np.int64(_leading_zeros(~window))


@_jit_entry
def scan(
    data, low, cut, enabled, today, need_context, words, bounds, by_first, window,
    counts, examples, record, kinds, starts, lengths,
):  # fmt: skip
    """Count (and record) the values that start in ``[low, cut)`` of ``data``.

    Bytes outside the range are read for context only: a run of letters and
    digits that starts before ``low`` is not a candidate, one that starts
    before ``cut`` is read to its end, and an ``@`` shortly before ``low``
    still hides the numbers inside its domain. ``counts`` and ``examples``
    receive the count and the first (start, length) pairs per kind code.
    When ``record`` has one element, every value is also written to
    ``kinds``, ``starts`` and ``lengths`` from slot ``record[0]`` on.

    Groups of 64 bytes become bit masks (bit ``i`` for byte ``i``) of
    letters and digits, of digits and of ``@`` signs. ANDs of shifted masks
    mark the bytes that end a run of 3 or of 11 to 19 letters and digits,
    the only candidate lengths. The validation code runs only at those
    bytes and at ``@`` signs, in offset order. The masks also give each
    run's length and whether it is all digits, without reading its bytes.
    """
    data = _borrowed(data)
    enabled, words, bounds, by_first = (
        _borrowed(enabled), _borrowed(words), _borrowed(bounds), _borrowed(by_first),
    )  # fmt: skip
    counts, examples, record = _borrowed(counts), _borrowed(examples), _borrowed(record)
    kinds, starts, lengths = _borrowed(kinds), _borrowed(starts), _borrowed(lengths)
    size = data.size
    domain_end = -1
    for position in range(max(0, low - _DOMAIN_REACH), low):
        if data[position] == 64:
            end = _domain_end(data, position)
            if end >= 0:
                domain_end = end
    zero = np.uint64(0)
    # Masks of the group before: letters and digits, digits, runs of 2, 4
    # and 8 letters and digits, and the ends of candidate runs.
    before, before_digits, before2, before4, before8, before_end = (
        zero, zero, zero, zero, zero, zero,
    )  # fmt: skip
    # A run of at most 19 bytes that starts before ``cut`` ends by cut + 19.
    limit = min(size, cut + 20)
    # From a ``low`` of 64 on, the first group ends at or before ``low``,
    # so the runs that its missing history cuts short start before ``low``
    # and are skipped. Below 64 it starts at byte 0, with no history.
    base = max(0, low - 64) // 64 * 64
    while base <= limit:
        alnum, digits, signs = _group_masks(data, base)
        run2 = alnum & _shifted(alnum, before, 1)
        run3 = run2 & _shifted(alnum, before, 2)
        run4 = run2 & _shifted(run2, before2, 2)
        run8 = run4 & _shifted(run4, before4, 4)
        run11 = run8 & _shifted(run4, before4, 7)
        run20 = run8 & _shifted(run8, before8, 8) & _shifted(run4, before4, 16)
        # Bit i: a run of a candidate length ends at byte i - 1.
        ending = (run11 & ~run20) | (run3 & ~run4)
        tokens = ~alnum & _shifted(ending, before_end, 1)
        events = tokens | signs
        while events:
            offset = np.int64(_trailing_zeros(events))
            events &= events - _ONE
            position = base + offset
            if position > limit:
                break
            bit = _ONE << np.uint64(offset)
            if tokens & bit:
                length = _ones_before(alnum, before, offset)
                start = position - length
                if low <= start < cut and start >= domain_end:
                    all_digits = _ones_before(digits, before_digits, offset) >= length
                    kind = _token_kind(
                        data, start, length, all_digits, enabled, today,
                        need_context, words, bounds, by_first, window,
                    )  # fmt: skip
                    if kind >= 0:
                        found = 13 if length == 3 else length
                        _emit(kind, start, found, counts, examples, record, kinds,
                              starts, lengths)  # fmt: skip
            if signs & bit and low <= position < cut:
                end = _domain_end(data, position)
                if end >= 0:
                    domain_end = end
                    local = _local_run(data, position)
                    if enabled[_EMAIL] and local > 0 and data[position - local] != 46:
                        first = position - local
                        _emit(_EMAIL, first, end - first, counts, examples, record,
                              kinds, starts, lengths)  # fmt: skip
        before, before_digits, before2, before4, before8, before_end = (
            alnum, digits, run2, run4, run8, ending,
        )  # fmt: skip
        base += 64


class CompiledScanner:
    """Finds the built-in kinds in a buffer with the compiled loop."""

    def __init__(self, settings: d.ScannerSettings) -> None:
        self.settings = settings
        self._enabled = np.array([kind in settings.kinds for kind in KINDS])
        words = [w.lower().encode("utf-8") for w in settings.mobile_context if w]
        words.sort(key=lambda word: word[0])
        self._words = np.frombuffer(b"".join(words) or b"\0", dtype=np.uint8)
        self._bounds = np.cumsum([0] + [len(w) for w in words], dtype=np.int64)
        first_bytes = np.array([word[0] for word in words], dtype=np.int64)
        self._by_first = np.searchsorted(first_bytes, np.arange(257)).astype(np.int64)

    def _need_context(self, mobile_context: bool) -> bool:
        return not mobile_context and self.settings.mobile_require_context

    def _run(
        self,
        data: np.ndarray,
        low: int,
        cut: int,
        mobile_context: bool,
        record: np.ndarray,
        capacity: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        counts = np.zeros(len(KINDS), dtype=np.int64)
        examples = np.zeros((len(KINDS), EXAMPLES, 2), dtype=np.int64)
        kinds = np.zeros(capacity, dtype=np.uint8)
        starts = np.zeros(capacity, dtype=np.int64)
        lengths = np.zeros(capacity, dtype=np.int64)
        scan(
            data, low, cut, self._enabled, _today(), self._need_context(mobile_context),
            self._words, self._bounds, self._by_first, self.settings.mobile_window,
            counts, examples, record, kinds, starts, lengths,
        )  # fmt: skip
        return counts, examples, kinds, starts, lengths

    def find(
        self, buffer: bytes, low: int, cut: int, mobile_context: bool
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """Return (offsets, lengths, kind) arrays of values starting in ``[low, cut)``."""
        data = np.frombuffer(buffer, dtype=np.uint8)
        if data.size == 0:
            return []
        # A value spans at least 6 bytes ("a@b.cn"), and at most two values
        # (a number as an e-mail local part, then the address) share bytes.
        capacity = (max(0, cut - low) // 3) + 2
        record = np.zeros(1, dtype=np.int64)
        _, _, kinds, starts, lengths = self._run(
            data, low, cut, mobile_context, record, capacity
        )
        used = int(record[0])
        kinds, starts, lengths = kinds[:used], starts[:used], lengths[:used]
        found = []
        for code, kind in enumerate(KINDS):
            rows = kinds == code
            if rows.any():
                found.append((starts[rows], lengths[rows], kind))
        return found

    def spans(
        self, buffer: bytes, low: int, cut: int, mobile_context: bool
    ) -> list[Span]:
        """Return validated values that start in ``[low, cut)``, in offset order."""
        spans = [
            Span(kind, start, start + length)
            for offsets, sizes, kind in self.find(buffer, low, cut, mobile_context)
            for start, length in zip(offsets.tolist(), sizes.tolist(), strict=True)
        ]
        spans.sort(key=lambda span: span.start)
        return spans

    def count(
        self, data: np.ndarray, low: int, cut: int, mobile_context: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the counts per kind code and the first (start, length) pairs."""
        counts, examples, *_ = self._run(
            data, low, cut, mobile_context, np.zeros(0, dtype=np.int64), 0
        )
        return counts, examples


def count_file(
    scanner: CompiledScanner,
    descriptor: int,
    size: int,
    mobile_context: bool,
    findings: d.Findings,
    workers: int = 1,
) -> None:
    """Count the values in the first ``size`` bytes of an open file.

    Windows of :data:`WINDOW` bytes, with :data:`_MARGIN` bytes of context
    on each side, are read with ``preadv`` into one reused buffer per
    thread and scanned by ``workers`` threads. Reads and the compiled loop
    release the GIL, so the threads run on separate cores. A file that
    shrinks meanwhile is scanned up to its new end.
    """
    bounds = [(low, min(size, low + WINDOW)) for low in range(0, size, WINDOW)]
    local = threading.local()

    def one(window: tuple[int, int]) -> tuple[np.ndarray, list[list[str]]]:
        low, cut = window
        first = max(0, low - _MARGIN)
        read_size = cut - first + _MARGIN
        buffer = getattr(local, "buffer", None)
        if buffer is None or buffer.size < read_size:
            # Reusing the buffer saves the page faults of a new one per window.
            capacity = min(WINDOW, size) + 2 * _MARGIN
            buffer = local.buffer = np.empty(capacity, dtype=np.uint8)
        data = buffer[: os.preadv(descriptor, [buffer[:read_size]], first)]
        stop = min(cut - first, data.size)
        counts, examples = scanner.count(data, low - first, stop, mobile_context)
        # Only the examples leave the thread, so memory stays at one
        # window per thread whatever the file size.
        return counts, _example_values(counts, examples, data)

    if workers > 1 and len(bounds) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, bounds))
    else:
        results = [one(window) for window in bounds]
    for counts, values in results:
        for code, kind in enumerate(KINDS):
            findings.add_many(kind, int(counts[code]), values[code])


def add_counts(
    findings: d.Findings, counts: np.ndarray, examples: np.ndarray, buffer: bytes
) -> None:
    """Add the counts and examples of one call of :func:`scan` to ``findings``."""
    values = _example_values(counts, examples, buffer)
    for code, kind in enumerate(KINDS):
        findings.add_many(kind, int(counts[code]), values[code])


def _example_values(
    counts: np.ndarray, examples: np.ndarray, buffer: bytes | np.ndarray
) -> list[list[str]]:
    """Return the text of the recorded examples, per kind code."""
    return [
        [
            bytes(buffer[int(start) : int(start + length)]).decode("ascii")
            for start, length in examples[code, : min(int(counts[code]), EXAMPLES)]
        ]
        for code in range(len(KINDS))
    ]


_TODAY: tuple[date, int] | None = None


def _today() -> int:
    global _TODAY
    now = date.today()
    if _TODAY is None or _TODAY[0] != now:
        _TODAY = (now, now.year * 10000 + now.month * 100 + now.day)
    return _TODAY[1]
