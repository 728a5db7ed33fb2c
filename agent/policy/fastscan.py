"""Vectorised candidate search and validation with numpy.

The regular-expression scanner in :mod:`agent.policy.detectors` calls
Python code for every candidate, which limits it to a few MB/s on exports
where every row contains several numbers. This module finds the same values
with array operations over a whole buffer: it splits the bytes into runs of
letters and digits, keeps the runs of a candidate length, and checks dates
and check characters for all of them at once. It reports the same matches
as the regular-expression scanner, which the tests compare on generated
corpora.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np

from . import detectors as d

_DIGIT, _CODE_LETTER, _OTHER_ALNUM = 1, 2, 3

_CLASS = np.zeros(256, dtype=np.uint8)
for _byte in b"0123456789":
    _CLASS[_byte] = _DIGIT
for _byte in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _CLASS[_byte] = _OTHER_ALNUM
for _byte in b"ABCDEFGHJKLMNPQRTUWXY":
    _CLASS[_byte] = _CODE_LETTER

# Value of each byte in the credit-code alphabet; 255 for bytes outside it.
_USCC_VALUE = np.full(256, 255, dtype=np.uint8)
for _index, _char in enumerate(b"0123456789ABCDEFGHJKLMNPQRTUWXY"):
    _USCC_VALUE[_char] = _index
_USCC_AUTHORITY = np.zeros(256, dtype=bool)
for _byte in b"123456789ANY":
    _USCC_AUTHORITY[_byte] = True
_USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int32)
_RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int32)

_PROVINCE = np.zeros(100, dtype=bool)
for _code in d._PROVINCES:
    _PROVINCE[int(_code)] = True
_CODE_AREA = _PROVINCE.copy()
_CODE_AREA[10] = True

_DAYS = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)
_LUHN_DOUBLE = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.int32)
_LOCAL = np.zeros(256, dtype=bool)
for _byte in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-":
    _LOCAL[_byte] = True
_DOMAIN_BYTE = np.zeros(256, dtype=bool)
_ALNUM = np.zeros(256, dtype=bool)
_LETTER = np.zeros(256, dtype=bool)
for _byte in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _LETTER[_byte] = _ALNUM[_byte] = _DOMAIN_BYTE[_byte] = True
for _byte in b"0123456789":
    _ALNUM[_byte] = _DOMAIN_BYTE[_byte] = True
for _byte in b".-":
    _DOMAIN_BYTE[_byte] = True
_AT_DOMAIN = re.compile(
    rb"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_WIDTH = 19


@dataclass(frozen=True)
class Span:
    """A validated value in a buffer: its kind and byte offsets."""

    kind: str
    start: int
    end: int


def _number(digits: np.ndarray, first: int, count: int) -> np.ndarray:
    value = np.zeros(digits.shape[0], dtype=np.int32)
    for column in range(first, first + count):
        value = value * 10 + digits[:, column]
    return value


def _valid_date(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, today: int
) -> np.ndarray:
    month_ok = (month >= 1) & (month <= 12)
    days = _DAYS[np.where(month_ok, month, 0)]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = np.where((month == 2) & ~leap, 28, days)
    ok = month_ok & (day >= 1) & (day <= days)
    return ok & (year * 10000 + month * 100 + day <= today)


def _card_prefix(digits: np.ndarray) -> np.ndarray:
    p1 = digits[:, 0]
    p2 = p1 * 10 + digits[:, 1]
    p3 = p2 * 10 + digits[:, 2]
    p4 = p3 * 10 + digits[:, 3]
    return (
        (p1 == 4)
        | ((p2 >= 50) & (p2 <= 58))
        | ((p4 >= 2221) & (p4 <= 2720))
        | np.isin(p2, (30, 34, 36, 37, 38, 39))
        | ((p4 >= 3528) & (p4 <= 3589))
        | (p4 == 6011)
        | ((p3 >= 644) & (p3 <= 649))
        | np.isin(p2, (62, 63, 65, 67))
    )


def _luhn(digits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    ok = np.zeros(digits.shape[0], dtype=bool)
    for length in np.unique(lengths):
        rows = lengths == length
        block = digits[rows, :length]
        doubled = (length - 1 - np.arange(length)) % 2 == 1
        total = block[:, ~doubled].sum(axis=1) + _LUHN_DOUBLE[block[:, doubled]].sum(
            axis=1
        )
        ok[rows] = total % 10 == 0
    return ok


class FastScanner:
    """Finds the built-in kinds in a buffer with array operations."""

    def __init__(self, settings: d.ScannerSettings) -> None:
        self.settings = settings
        self.kinds = settings.kinds
        words = [w.lower().encode("utf-8") for w in settings.mobile_context if w]
        self._context = (
            re.compile(b"|".join(re.escape(w) for w in words)) if words else None
        )

    def find(
        self, buffer: bytes, low: int, cut: int, mobile_context: bool
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """Return (offsets, lengths, kind) arrays of values starting in ``[low, cut)``."""
        data = np.frombuffer(buffer, dtype=np.uint8)
        if data.size == 0:
            return []
        alnum = np.zeros(data.size + 2, dtype=bool)
        # ASCII letters and digits, by unsigned comparisons that wrap below
        # '0' and 'a'; on a whole buffer this is far faster than a table lookup.
        np.logical_or((data - 48) < 10, ((data | 32) - 97) < 26, out=alnum[1:-1])
        edges = np.flatnonzero(alnum[1:] != alnum[:-1])
        starts, ends = edges[0::2], edges[1::2]
        found: list[tuple[np.ndarray, np.ndarray, str]] = []
        lengths = ends - starts
        keep = (lengths >= 11) & (lengths <= 19) & (starts >= low) & (starts < cut)
        if keep.any():
            found.extend(
                self._tokens(data, starts[keep], lengths[keep], buffer, mobile_context)
            )
        if d.CN_MOBILE in self.kinds:
            found.extend(
                self._spaced(data, starts, ends, low, cut, buffer, mobile_context)
            )
        domains = _domain_spans(data, buffer, low, cut)
        if domains.size:
            # A number inside an e-mail domain is part of the address.
            found = [_outside(entry, domains) for entry in found]
            if d.EMAIL in self.kinds:
                found.extend(self._emails(data, domains))
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

    def _tokens(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        buffer: bytes,
        mobile_context: bool,
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        columns = np.arange(_WIDTH)
        index = np.minimum(starts[:, None] + columns, data.size - 1)
        raw = np.take(data, index)
        inside = columns < lengths[:, None]
        digits = raw.astype(np.int16) - 48
        is_digit = inside & (digits >= 0) & (digits <= 9)
        digit_count = is_digit.sum(axis=1)
        last = raw[np.arange(raw.shape[0]), lengths - 1]
        all_digits = digit_count == lengths
        ric_x = (lengths == 18) & (digit_count == 17) & ((last == 88) | (last == 120))
        digits = np.where(is_digit, digits, 0)
        taken = np.zeros(starts.size, dtype=bool)
        results = []

        # Each kind is validated on the rows that can still be of that kind
        # only, and claims rows in priority order.
        def claim(rows: np.ndarray, kind: str) -> None:
            rows = rows[~taken[rows]]
            taken[rows] = True
            if rows.size:
                results.append((starts[rows], lengths[rows], kind))

        eighteen = np.flatnonzero((lengths == 18) & (all_digits | ric_x))
        if d.CN_RIC in self.kinds and eighteen.size:
            claim(eighteen[self._ric(digits[eighteen], last[eighteen])], d.CN_RIC)
        if d.CN_USCC in self.kinds:
            code = np.flatnonzero((lengths == 18) & ~taken)
            if code.size:
                claim(code[self._uscc(raw[code])], d.CN_USCC)
        if d.BANK_CARD in self.kinds:
            card = np.flatnonzero(all_digits & ~taken & (lengths >= 13))
            if card.size:
                rows = digits[card]
                valid = _card_prefix(rows) & _luhn(rows, lengths[card])
                claim(card[valid], d.BANK_CARD)
        if d.CN_RIC15 in self.kinds:
            legacy = np.flatnonzero(all_digits & (lengths == 15) & ~taken)
            if legacy.size:
                rows = digits[legacy]
                province = _PROVINCE[rows[:, 0] * 10 + rows[:, 1]]
                year = 1900 + _number(rows, 6, 2)
                born = _valid_date(
                    year, _number(rows, 8, 2), _number(rows, 10, 2), _today()
                )
                claim(legacy[province & born], d.CN_RIC15)
        if d.CN_MOBILE in self.kinds:
            mobile = np.flatnonzero(all_digits & ~taken)
            mobile = mobile[self._mobile_shape(digits[mobile], lengths[mobile])]
            if (
                mobile.size
                and not mobile_context
                and self.settings.mobile_require_context
            ):
                mobile = mobile[self._has_context(buffer, starts[mobile])]
            claim(mobile, d.CN_MOBILE)
        return results

    @staticmethod
    def _ric(digits: np.ndarray, last: np.ndarray) -> np.ndarray:
        province = _PROVINCE[digits[:, 0] * 10 + digits[:, 1]]
        year = _number(digits, 6, 4)
        born = _valid_date(
            year, _number(digits, 10, 2), _number(digits, 12, 2), _today()
        )
        expected = (12 - (digits[:, :17] * _RIC_WEIGHTS).sum(axis=1) % 11) % 11
        actual = np.where((last == 88) | (last == 120), 10, digits[:, 17])
        return province & born & (year >= 1800) & (expected == actual)

    @staticmethod
    def _uscc(raw: np.ndarray) -> np.ndarray:
        values = _USCC_VALUE[raw[:, :18]]
        alphabet = (values != 255).all(axis=1)
        digits_2_to_8 = (values[:, 2:8] <= 9).all(axis=1)
        area = _CODE_AREA[np.minimum(values[:, 2] * 10 + values[:, 3], 99)]
        authority = _USCC_AUTHORITY[raw[:, 0]]
        checked = values[:, :17].astype(np.int32)
        expected = (31 - (checked * _USCC_WEIGHTS).sum(axis=1) % 31) % 31
        return alphabet & digits_2_to_8 & area & authority & (expected == values[:, 17])

    @staticmethod
    def _mobile_shape(digits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        def body(offset: int) -> np.ndarray:
            return (digits[:, offset] == 1) & (digits[:, offset + 1] >= 3)

        plain = (lengths == 11) & body(0)
        prefixed = (lengths == 13) & (digits[:, 0] == 8) & (digits[:, 1] == 6) & body(2)
        long_prefix = (
            (lengths == 15)
            & (digits[:, 0] == 0)
            & (digits[:, 1] == 0)
            & (digits[:, 2] == 8)
            & (digits[:, 3] == 6)
            & body(4)
        )
        return plain | prefixed | long_prefix

    def _has_context(self, buffer: bytes, starts: np.ndarray) -> np.ndarray:
        if self._context is None:
            return np.zeros(starts.size, dtype=bool)
        lowered = buffer.lower()
        window = self.settings.mobile_window
        result = np.zeros(starts.size, dtype=bool)
        # Few candidates need the check, so a search per candidate is cheap.
        for row, start in enumerate(starts.tolist()):
            if self._context.search(lowered, max(0, start - window), start):
                result[row] = True
        return result

    def _spaced(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        low: int,
        cut: int,
        buffer: bytes,
        mobile_context: bool,
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        if starts.size < 3:
            return []
        lengths = ends - starts
        first = np.flatnonzero(
            (lengths[:-2] == 3)
            & (lengths[1:-1] == 4)
            & (lengths[2:] == 4)
            & (starts[1:-1] == ends[:-2] + 1)
            & (starts[2:] == ends[1:-1] + 1)
            & (starts[:-2] >= low)
            & (starts[:-2] < cut)
        )
        if first.size == 0:
            return []
        offsets = starts[first]
        text = data[offsets[:, None] + np.arange(13)]
        separators = np.isin(text[:, 3], (45, 32)) & np.isin(text[:, 8], (45, 32))
        digit_columns = np.array([0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12])
        numbers = text[:, digit_columns].astype(np.int64) - 48
        ok = separators & ((numbers >= 0) & (numbers <= 9)).all(axis=1)
        ok &= (numbers[:, 0] == 1) & (numbers[:, 1] >= 3)
        if ok.any() and not mobile_context and self.settings.mobile_require_context:
            ok &= self._has_context(buffer, offsets)
        return [(offsets[ok], np.full(int(ok.sum()), 13), d.CN_MOBILE)]

    @staticmethod
    def _emails(
        data: np.ndarray, domains: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, str]]:
        signs, stops = domains[:, 0], domains[:, 1]
        # The local part runs back from the '@' over local-part bytes, at
        # most ``lookback`` of them. Most are short, so a narrow window is
        # read first and widened only for the rows that fill it.
        run = _local_run(data, signs, 16)
        wide = run == 16
        if wide.any():
            run[wide] = _local_run(data, signs[wide], d._EMAIL_LOOKBACK)
        first = signs - run
        ok = (run > 0) & (data[np.minimum(first, data.size - 1)] != 46)
        return [(first[ok], stops[ok] - first[ok], d.EMAIL)]


def _domain_spans(data: np.ndarray, buffer: bytes, low: int, cut: int) -> np.ndarray:
    """Return (position of '@', end of domain) rows for the '@' signs in ``[low, cut)``.

    Values are reported by the position of their '@', as the
    regular-expression scanner does, so chunk edges agree. Domains of the
    common shape (at most 31 bytes, a letter-only last label, at most eight
    dots) are checked with arrays; the rest go through the regular expression.
    """
    signs = np.flatnonzero(data == 64)
    signs = signs[(signs >= low) & (signs < cut)]
    if signs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    width = 32
    positions = np.minimum(signs[:, None] + np.arange(1, width + 1), data.size - 1)
    window = data[positions]
    inside = (signs[:, None] + np.arange(1, width + 1)) < data.size
    domain = _DOMAIN_BYTE[window] & inside
    run = np.where(domain.all(axis=1), width, np.argmin(domain, axis=1))
    columns = np.arange(width)
    dots = (window == 46) & (columns < run[:, None])
    dot_count = dots.sum(axis=1)
    last_dot = width - 1 - np.argmax(dots[:, ::-1], axis=1)
    tail = run - last_dot - 1
    letters = (
        _LETTER[window] | (columns <= last_dot[:, None]) | (columns >= run[:, None])
    )
    rows = np.arange(signs.size)
    simple = (
        (run < width)
        & (dot_count >= 1)
        & (dot_count <= 8)
        & _ALNUM[window[:, 0]]
        & (tail >= 2)
        & (tail <= 24)
        & letters.all(axis=1)
        & (signs + 1 + run <= data.size)
    )
    ends = np.where(simple, signs + 1 + run, -1)
    # A short run without a dot, or one starting with '-' or '.', never
    # matches. Every other run that is not simple goes to the regex.
    hopeless = (run < width) & ((dot_count == 0) | ~_ALNUM[window[rows, 0]])
    for row in np.flatnonzero(~simple & ~hopeless).tolist():
        match = _AT_DOMAIN.match(buffer, int(signs[row]))
        if match is not None:
            ends[row] = match.end()
    found = ends >= 0
    return np.stack([signs[found], ends[found]], axis=1)


def _outside(
    entry: tuple[np.ndarray, np.ndarray, str], domains: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    offsets, sizes, kind = entry
    index = np.searchsorted(domains[:, 0], offsets, side="right") - 1
    inside = (index >= 0) & (offsets < domains[np.maximum(index, 0), 1])
    return offsets[~inside], sizes[~inside], kind


def _local_run(data: np.ndarray, signs: np.ndarray, width: int) -> np.ndarray:
    """Count the local-part bytes right before each '@', up to ``width``."""
    positions = signs[:, None] - np.arange(1, width + 1)
    local = _LOCAL[data[np.maximum(positions, 0)]] & (positions >= 0)
    return np.where(local.all(axis=1), width, np.argmin(local, axis=1))


_TODAY: tuple[date, int] | None = None


def _today() -> int:
    global _TODAY
    now = date.today()
    if _TODAY is None or _TODAY[0] != now:
        _TODAY = (now, now.year * 10000 + now.month * 100 + now.day)
    return _TODAY[1]
