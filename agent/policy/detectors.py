"""Detectors of personal data in byte streams, with checksum validation.

One combined regular expression finds candidates (runs of 11 to 19 digits,
18-character credit codes, separated mobile numbers, ``@`` signs), and each
candidate is then validated by its kind's checksum or date rule, so numbers
that merely look right are not reported. Scanning works on UTF-8 bytes in
chunks that overlap by :data:`OVERLAP` bytes, so a value that straddles a
chunk boundary is found once.

Kinds and their checks:

- ``cn-ric``: 18-digit resident identity number, ISO 7064 MOD 11-2 check
  character (``X`` for 10, either case) and a real birth date.
- ``cn-ric15``: the 15-digit form issued before 1999: six-digit area code,
  birth date ``YYMMDD`` in the 1900s, three-digit sequence. It has no check
  character, so only the pattern and the date are checked.
- ``cn-uscc``: unified social credit code of GB 32100-2015, check character
  over the 31-character alphabet without I, O, Z, S and V.
- ``cn-mobile``: mainland mobile number ``1[3-9]`` plus nine digits, with an
  optional ``+86``/``0086`` prefix or ``-``/space separators. It has no
  checksum, so by default a context word must appear shortly before it.
- ``bank-card``: 13 to 19 digits, Luhn check and a known issuer prefix.
- ``email``: an address with a dotted domain.
- custom kinds: patterns from the config, matched against the UTF-8 bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from stdnum import luhn
from stdnum.cn import ric as stdnum_ric
from stdnum.cn import uscc as stdnum_uscc

CN_RIC = "cn-ric"
CN_RIC15 = "cn-ric15"
CN_USCC = "cn-uscc"
CN_MOBILE = "cn-mobile"
BANK_CARD = "bank-card"
EMAIL = "email"

BUILTIN_KINDS = (CN_RIC, CN_RIC15, CN_USCC, CN_MOBILE, BANK_CARD, EMAIL)

#: Words that make an 11-digit number a mobile number when one of them
#: appears within ``MOBILE_WINDOW`` bytes before it (compared case-insensitively).
DEFAULT_MOBILE_CONTEXT = (
    "手机",
    "电话",
    "联系方式",
    "mobile",
    "phone",
    "tel",
    "cell",
)
MOBILE_WINDOW = 48

#: Bytes each chunk shares with the next. It bounds the longest match that
#: chunked scanning finds reliably, custom patterns included.
OVERLAP = 512
#: Read size of :meth:`Scanner.scan_stream` callers, in bytes.
CHUNK = 4 * 1024 * 1024

_BOUNDARY = rb"[0-9A-Za-z]"
_CANDIDATES = re.compile(
    rb"(?<![0-9A-Za-z])(?:"
    rb"(?P<digits>[0-9]{11,19}[Xx]?)"
    rb"|(?P<code>[0-9A-HJ-NP-RTUW-Y]{2}[0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10})"
    rb"|(?P<spaced>1[3-9][0-9][- ][0-9]{4}[- ][0-9]{4})"
    rb")(?![0-9A-Za-z])"
    rb"|(?P<at>@)(?P<domain>[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.){1,8}[A-Za-z]{2,24})"
    rb"(?![A-Za-z0-9-])"
)
_LOCAL_PART = re.compile(rb"[A-Za-z0-9._%+-]{1,64}\Z")
_EMAIL_LOOKBACK = 64

# Issuer prefixes of card schemes that use 13 to 19 digits: Visa (4),
# Mastercard (51-55, 2221-2720), American Express (34, 37), Diners (30, 36,
# 38, 39), JCB (3528-3589), Discover (6011, 644-649, 65), UnionPay (62) and
# Maestro (50, 56-58, 63, 67).
_CARD_PREFIX = re.compile(
    r"4|5[0-8]|2(?:22[1-9]|2[3-9][0-9]|[3-6][0-9]{2}|7[01][0-9]|720)"
    r"|3[0469]|3[78]|35(?:2[89]|[3-8][0-9])|6(?:011|4[4-9]|5|2|3|7)"
)


# First two digits of the area code: provinces, autonomous regions and
# municipalities (11-65), Taiwan (71), Hong Kong, Macao and Taiwan residence
# permits (81-83), and 91 on some older cards. Credit codes also use 10 for
# authorities registered at the national level.
_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
        "91",
    ]
)
# Registration authority codes, the first character of a credit code.
_USCC_AUTHORITIES = frozenset("123456789ANY")
_USCC_FORMAT = re.compile(r"[0-9A-HJ-NP-RTUW-Y]{2}[0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}")


def _birth_date(year: int, month: int, day: int) -> date | None:
    try:
        born = date(year, month, day)
    except ValueError:
        return None
    return born if born <= date.today() else None


def is_cn_ric(number: str) -> bool:
    """Tell whether an 18-character string is a valid resident identity number.

    Checks the province part of the area code, the birth date and the
    ISO 7064 MOD 11-2 check character, where a lower-case ``x`` counts as X.
    The birth date must exist, must not lie in the future and must not be
    before 1800.
    The full area code is not looked up, because tables of area codes miss
    codes that were retired or renamed since the card was issued.
    """
    if len(number) != 18 or not number[:17].isdigit() or number[:2] not in _PROVINCES:
        return False
    year = int(number[6:10])
    if year < 1800 or _birth_date(year, int(number[10:12]), int(number[12:14])) is None:
        return False
    return stdnum_ric.calc_check_digit(number) == number[17].upper()


def is_cn_ric15(number: str) -> bool:
    """Tell whether a 15-digit string has the shape and date of a legacy number.

    Legacy numbers have no check character, so only the province part of
    the area code and the birth date ``YYMMDD`` (a year of the 1900s) are
    checked.
    """
    if len(number) != 15 or not number.isdigit() or number[:2] not in _PROVINCES:
        return False
    year = 1900 + int(number[6:8])
    return _birth_date(year, int(number[8:10]), int(number[10:12])) is not None


def is_cn_uscc(code: str) -> bool:
    """Tell whether an 18-character string is a valid unified social credit code.

    Checks the alphabet (digits and upper-case letters without I, O, Z, S
    and V), the registration authority, the province part of the
    administrative division code and the GB 32100-2015 check character.
    """
    if _USCC_FORMAT.fullmatch(code) is None or code[0] not in _USCC_AUTHORITIES:
        return False
    if code[2:4] not in _PROVINCES and code[2:4] != "10":
        return False
    return stdnum_uscc.calc_check_digit(code[:17]) == code[17]


def is_cn_mobile(number: str) -> bool:
    """Tell whether a string is a mainland mobile number, prefixes allowed."""
    digits = number.replace("-", "").replace(" ", "").lstrip("+")
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return (
        len(digits) == 11
        and digits.isdigit()
        and digits[0] == "1"
        and digits[1] in "3456789"
    )


def is_bank_card(number: str) -> bool:
    """Tell whether a digit string is a plausible payment card number."""
    if not 13 <= len(number) <= 19 or not number.isdigit():
        return False
    if _CARD_PREFIX.match(number) is None:
        return False
    return luhn.is_valid(number)


@dataclass(frozen=True)
class Match:
    """One validated value: its kind, the value and its offset in the stream."""

    kind: str
    value: str
    offset: int


@dataclass(frozen=True)
class CustomPattern:
    """A pattern from the config, compiled over UTF-8 bytes.

    ``classification`` is the class an item containing a match receives.
    """

    name: str
    regex: re.Pattern[bytes]
    classification: str = "personal"


@dataclass(frozen=True)
class ScannerSettings:
    """The kinds a scanner reports and the context rule for mobile numbers."""

    kinds: frozenset[str] = frozenset(BUILTIN_KINDS)
    mobile_context: tuple[str, ...] = DEFAULT_MOBILE_CONTEXT
    mobile_window: int = MOBILE_WINDOW
    mobile_require_context: bool = True
    custom: tuple[CustomPattern, ...] = ()


@dataclass
class _StreamState:
    position: int = 0  # stream offset of the first byte of the buffer
    carry: bytes = b""
    resume: int = 0  # where the scan of the next buffer starts
    mobile_context: bool = False


class Scanner:
    """Find and validate personal data in bytes, one buffer or a stream.

    Built-in kinds are searched with the array scanner of
    :mod:`agent.policy.fastscan` (``engine="numpy"``, the default), the
    compiled loop of :mod:`agent.policy.jitscan` (``"compiled"``) or
    regular expressions (``"regex"``, or ``fast=False``). Custom patterns
    always use regular expressions. All engines report the same values.
    :meth:`compiled_scanner` supplies the compiled loop for large files:
    importing numba and loading the loop from its cache takes seconds, which
    only large files repay.
    """

    def __init__(
        self,
        settings: ScannerSettings | None = None,
        fast: bool = True,
        engine: str | None = None,
    ) -> None:
        self.settings = settings or ScannerSettings()
        words = [w.lower().encode("utf-8") for w in self.settings.mobile_context if w]
        self._context = (
            re.compile(b"|".join(re.escape(word) for word in words)) if words else None
        )
        self._kinds = self.settings.kinds
        self._fast: Any = None
        self.compiled: Any = None
        self._compiled_loaded = False
        #: Bytes of files that discovery has read with this scanner. Discovery
        #: loads the compiled loop once they reach its COMPILED_MIN_BYTES.
        self.read_bytes = 0
        if engine is None:
            engine = "numpy" if fast else "regex"
        if engine == "compiled":
            self._fast = self.compiled = self.compiled_scanner()
            if self.compiled is None:
                raise ValueError("the compiled scanner needs numba, which is missing")
        elif engine == "numpy":
            from .fastscan import FastScanner

            self._fast = FastScanner(self.settings)
        elif engine != "regex":
            raise ValueError(f"unknown scanner engine {engine!r}")

    def compiled_scanner(self) -> Any:
        """Return the compiled scanner of these settings, or None without numba."""
        if not self._compiled_loaded:
            self._compiled_loaded = True
            try:
                from .jitscan import CompiledScanner
            except ImportError:
                return None
            self.compiled = CompiledScanner(self.settings)
        return self.compiled

    def has_mobile_context(self, data: bytes) -> bool:
        """Tell whether ``data`` contains one of the mobile context words."""
        return (
            self._context is not None and self._context.search(data.lower()) is not None
        )

    def scan(self, data: bytes, mobile_context: bool = False) -> list[Match]:
        """Return every validated value in one complete buffer.

        ``mobile_context`` accepts mobile numbers without a nearby context
        word, for example because a CSV header or column name is one.
        """
        return list(self.scan_stream([data], mobile_context=mobile_context))

    def scan_text(self, text: str, mobile_context: bool = False) -> list[Match]:
        """Return every validated value in a string; offsets count UTF-8 bytes."""
        return self.scan(text.encode("utf-8", "surrogateescape"), mobile_context)

    def scan_stream(
        self, chunks: Iterable[bytes], mobile_context: bool = False
    ) -> Iterator[Match]:
        """Yield every validated value in consecutive chunks, each value once.

        Matches are reported only when they start before the last
        :data:`OVERLAP` bytes of the buffer; those bytes are carried into the
        next buffer, where the candidates that start in them are searched
        again with their full surroundings.
        """
        state = _StreamState(mobile_context=mobile_context)
        pending: bytes | None = None
        for chunk in chunks:
            if not chunk:
                continue
            if pending is not None:
                yield from self._scan_buffer(state, pending, final=False)
            pending = chunk
        if pending is not None:
            yield from self._scan_buffer(state, pending, final=True)

    def count_stream(
        self, chunks: Iterable[bytes], findings: Findings, mobile_context: bool = False
    ) -> None:
        """Add the counts and a few masked examples of a stream to ``findings``.

        Faster than :meth:`scan_stream` because the vectorised scanner's
        results are counted as arrays, without one object per value.
        """
        if self._fast is None:
            for match in self.scan_stream(chunks, mobile_context):
                findings.add(match)
            return
        state = _StreamState(mobile_context=mobile_context)
        pending: bytes | None = None
        for chunk in chunks:
            if not chunk:
                continue
            if pending is not None:
                self._count_buffer(state, pending, False, findings)
            pending = chunk
        if pending is not None:
            self._count_buffer(state, pending, True, findings)

    def _count_buffer(
        self, state: _StreamState, chunk: bytes, final: bool, findings: Findings
    ) -> None:
        assert self._fast is not None
        start, buffer, cut = self._open_buffer(state, chunk, final)
        if self.compiled is not None:
            from .jitscan import add_counts

            data = np.frombuffer(buffer, dtype=np.uint8)
            counts, examples = self.compiled.count(
                data, start, cut, state.mobile_context
            )
            add_counts(findings, counts, examples, buffer)
            self._finish_buffer(state, buffer, start, cut, findings)
            return
        for offsets, sizes, kind in self._fast.find(
            buffer, start, cut, state.mobile_context
        ):
            findings.add_many(
                kind,
                len(offsets),
                (
                    buffer[offset : offset + size].decode("ascii")
                    for offset, size in zip(
                        offsets[: Findings.EXAMPLE_ATTEMPTS].tolist(),
                        sizes.tolist(),
                        strict=False,
                    )
                ),
            )
        self._finish_buffer(state, buffer, start, cut, findings)

    def _finish_buffer(
        self,
        state: _StreamState,
        buffer: bytes,
        start: int,
        cut: int,
        findings: Findings,
    ) -> None:
        for match in self._custom_matches(state, buffer, start, cut):
            findings.add(match)
        self._close_buffer(state, buffer, cut)

    def _open_buffer(
        self, state: _StreamState, chunk: bytes, final: bool
    ) -> tuple[int, bytes, int]:
        start = state.resume
        buffer = state.carry + chunk
        cut = len(buffer) if final else max(start, len(buffer) - OVERLAP)
        return start, buffer, cut

    def _close_buffer(self, state: _StreamState, buffer: bytes, cut: int) -> None:
        # Keep room before the next scan position for the look-behind, the
        # mobile context window and an e-mail local part.
        lookback = max(self.settings.mobile_window, _EMAIL_LOOKBACK, 1)
        keep_from = max(0, cut - lookback)
        state.position += keep_from
        state.carry = buffer[keep_from:]
        state.resume = cut - keep_from

    def _custom_matches(
        self, state: _StreamState, buffer: bytes, start: int, cut: int
    ) -> Iterator[Match]:
        for pattern in self.settings.custom:
            for match in pattern.regex.finditer(buffer, start):
                if match.start() >= cut:
                    break
                value = match.group().decode("utf-8", "replace")
                yield Match(pattern.name, value, state.position + match.start())

    def _scan_buffer(
        self, state: _StreamState, chunk: bytes, final: bool
    ) -> Iterator[Match]:
        start, buffer, cut = self._open_buffer(state, chunk, final)
        if self._fast is not None:
            for span in self._fast.spans(buffer, start, cut, state.mobile_context):
                value = buffer[span.start : span.end].decode("ascii")
                yield Match(span.kind, value, state.position + span.start)
        else:
            for match in _CANDIDATES.finditer(buffer, start):
                if match.start() >= cut:
                    break
                found = self._validate(buffer, match, state.mobile_context)
                if found is not None:
                    kind, value, offset = found
                    yield Match(kind, value, state.position + offset)
        yield from self._custom_matches(state, buffer, start, cut)
        self._close_buffer(state, buffer, cut)

    def _validate(
        self, buffer: bytes, match: re.Match[bytes], mobile_context: bool
    ) -> tuple[str, str, int] | None:
        group = match.lastgroup
        kinds = self._kinds
        if group == "digits":
            token = match.group("digits").decode("ascii")
            kind = _classify_digits(token, kinds)
            if kind == CN_MOBILE and not self._mobile_allowed(
                buffer, match, mobile_context
            ):
                kind = _classify_digits(token, kinds - {CN_MOBILE})
            if kind is None:
                return None
            return kind, token, match.start()
        if group == "code":
            token = match.group("code").decode("ascii")
            if CN_USCC in kinds and is_cn_uscc(token):
                return CN_USCC, token, match.start()
            return None
        if group == "spaced":
            if CN_MOBILE not in kinds or not self._mobile_allowed(
                buffer, match, mobile_context
            ):
                return None
            return CN_MOBILE, match.group("spaced").decode("ascii"), match.start()
        if group == "domain" and EMAIL in kinds:
            at = match.start()
            local = _LOCAL_PART.search(buffer, max(0, at - _EMAIL_LOOKBACK), at)
            if local is None or local.group().startswith(b"."):
                return None
            value = buffer[local.start() : match.end()].decode("ascii")
            return EMAIL, value, local.start()
        return None

    def _mobile_allowed(
        self, buffer: bytes, match: re.Match[bytes], mobile_context: bool
    ) -> bool:
        if mobile_context or not self.settings.mobile_require_context:
            return True
        if self._context is None:
            return False
        window = buffer[
            max(0, match.start() - self.settings.mobile_window) : match.start()
        ]
        return self._context.search(window.lower()) is not None


def _classify_digits(token: str, kinds: frozenset[str]) -> str | None:
    """Return the kind a digit token validates as, checksummed kinds first."""
    length = len(token)
    if token[-1] in "Xx":
        if length == 18 and CN_RIC in kinds and is_cn_ric(token.upper()):
            return CN_RIC
        # A credit code may also be 17 digits and the check character X.
        if length == 18 and CN_USCC in kinds and is_cn_uscc(token):
            return CN_USCC
        return None
    if length == 18:
        if CN_RIC in kinds and is_cn_ric(token):
            return CN_RIC
        if CN_USCC in kinds and is_cn_uscc(token):
            return CN_USCC
    # A 15-digit number can be both an American Express card and a legacy
    # identity number (area codes 34 and 37 are provinces); the kind with a
    # checksum wins, and both kinds make the item personal.
    if BANK_CARD in kinds and is_bank_card(token):
        return BANK_CARD
    if length == 15 and CN_RIC15 in kinds and is_cn_ric15(token):
        return CN_RIC15
    if CN_MOBILE in kinds and length in (11, 13, 15) and is_cn_mobile(token):
        return CN_MOBILE
    return None


def mask_example(kind: str, value: str) -> str:
    """Return a value with its middle replaced by ``*``, safe for a report.

    Numbers keep their first three and last four characters (as in
    ``110***********123X``), e-mail addresses the first character of the
    local part and the top-level domain. Values shorter than eight
    characters keep only their first character.
    """
    if kind == EMAIL and "@" in value:
        local, _, domain = value.partition("@")
        suffix = domain.rsplit(".", 1)[-1]
        return f"{local[:1]}***@***.{suffix}"
    if len(value) < 8:
        return value[:1] + "*" * (len(value) - 1)
    keep_tail = 4 if len(value) >= 11 else 2
    return value[:3] + "*" * (len(value) - 3 - keep_tail) + value[-keep_tail:]


@dataclass
class Findings:
    """Counts per kind and a few masked examples, for one item or a whole run.

    ``columns`` maps a column name to counts per kind when the findings come
    from database rows. ``truncated`` is true when a size or row limit cut
    the scan short, so the counts are lower bounds.
    """

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, dict[str, int]] = field(default_factory=dict)
    scanned_bytes: int = 0
    scanned_rows: int = 0
    truncated: bool = False
    note: str = ""

    MAX_EXAMPLES = 3
    EXAMPLE_ATTEMPTS = 50

    def add(self, match: Match, column: str | None = None) -> None:
        count = self.counts.get(match.kind, 0) + 1
        self.counts[match.kind] = count
        examples = self.examples.setdefault(match.kind, [])
        # Masked e-mail addresses often look alike, so stop looking for
        # distinct examples after a few dozen values.
        if len(examples) < self.MAX_EXAMPLES and count <= self.EXAMPLE_ATTEMPTS:
            masked = mask_example(match.kind, match.value)
            if masked not in examples:
                examples.append(masked)
        if column is not None:
            per_column = self.columns.setdefault(column, {})
            per_column[match.kind] = per_column.get(match.kind, 0) + 1

    def add_many(self, kind: str, count: int, values: Iterable[str]) -> None:
        """Add ``count`` values of one kind; ``values`` supplies candidate examples."""
        if count == 0:
            return
        before = self.counts.get(kind, 0)
        self.counts[kind] = before + count
        examples = self.examples.setdefault(kind, [])
        if before >= self.EXAMPLE_ATTEMPTS or len(examples) >= self.MAX_EXAMPLES:
            return
        for value in values:
            masked = mask_example(kind, value)
            if masked not in examples:
                examples.append(masked)
            if len(examples) >= self.MAX_EXAMPLES:
                break

    def merge(self, other: Findings) -> None:
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
        for kind, examples in other.examples.items():
            mine = self.examples.setdefault(kind, [])
            for example in examples:
                if len(mine) < self.MAX_EXAMPLES and example not in mine:
                    mine.append(example)
        for column, counts in other.columns.items():
            mine_counts = self.columns.setdefault(column, {})
            for kind, count in counts.items():
                mine_counts[kind] = mine_counts.get(kind, 0) + count
        self.scanned_bytes += other.scanned_bytes
        self.scanned_rows += other.scanned_rows
        self.truncated = self.truncated or other.truncated

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def kinds(self) -> Sequence[str]:
        return sorted(kind for kind, count in self.counts.items() if count)

    def to_dict(self) -> dict[str, object]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "examples": {
                kind: list(values) for kind, values in sorted(self.examples.items())
            },
            "columns": {
                name: dict(counts) for name, counts in sorted(self.columns.items())
            },
            "scanned_bytes": self.scanned_bytes,
            "scanned_rows": self.scanned_rows,
            "truncated": self.truncated,
        }
