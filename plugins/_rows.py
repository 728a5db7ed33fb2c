"""Shared machinery of the database plugins: selection, rows as items, scans.

A database target selects rows of one table with a WHERE clause whose values
travel as bind parameters. Each selected row becomes an item keyed by its
primary key; rows that reference it through foreign keys are reached too.
The engine plugins (SQLite, PostgreSQL, MariaDB/MySQL) subclass
:class:`RowStorePlugin` and supply the catalog queries, the delete and the
compaction steps of their engine.
"""

from __future__ import annotations

import abc
import bisect
import concurrent.futures
import contextlib
import datetime
import decimal
import hashlib
import heapq
import itertools
import json
import re
import threading
import types
import urllib.parse
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import structlog

from plugins import scan
from plugins._bytescan import RowScanner
from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    TargetInfo,
    start_side_thread,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    NotSupported,
    PluginError,
    TargetNotFound,
    TargetUnreachable,
)

#: Option keys a database target accepts, in the URL query or the config.
SELECTION_KEYS = (
    "table",
    "where",
    "params",
    "all_rows",
    "delete_dependents",
    "lock_timeout",
    "rows_per_item",
)
#: Rows one item stands for when a selection has more rows than this. One
#: item per row would cost the journal, plan and certificate an entry each.
DEFAULT_ROWS_PER_ITEM = 1000

#: Keys read in one statement when rows are read back by key.
KEYS_PER_READ = 10000
#: Estimated bytes that a bound parameter adds to a statement besides its
#: value (type, length and NULL flag in the engines' binary protocols).
KEY_PARAM_OVERHEAD = 16
#: Bytes of surviving rows scanned at once when hits are checked against them.
LIVE_SCAN_BYTES = 1 << 20

#: Words of a text value kept as separate fingerprints, because full-text
#: indexes store each token on its own.
MAX_WORDS_PER_VALUE = 16
#: Text values longer than this are fingerprinted by windows, because engines
#: split long values into chunks (TOAST, overflow pages).
MAX_WHOLE_VALUE = 256
#: Bytes of a row's values up to which planning keeps the values and leaves
#: the fingerprints to the scanner's build. Larger rows give them at once.
MAX_KEPT_ROW = 4096
#: Estimated bytes of memory that one plugin's kept row values may take.
#: Once they are used up, later rows give their fingerprints at once, so the
#: memory of a large selection stays near that of the fingerprints.
MAX_KEPT_BYTES = 128 << 20
#: Estimated bytes of memory a kept value takes besides its own bytes (the
#: Python object and its slot in the row's tuple).
KEPT_VALUE_OVERHEAD = 48

#: Checkpoint key of the tables a job deletes or masks rows in. Item keys
#: always contain a colon, so no item record uses it.
TOUCHED_CHECKPOINT = "touched-tables"

#: An empty read-only mapping, shared by the params of every planned delete
#: and the facts of every deleted row instead of an empty dict per row.
EMPTY_MAPPING: Mapping[str, Any] = types.MappingProxyType({})

# Checks that read the same for every row are built once. Frozen values can
# be shared, and a verification of 100,000 rows would otherwise build them all.
_ROW_ABSENT = Check("row-absent", True, "the row no longer selects")
_ROW_PRESENT = Check("row-absent", False, "the row still selects")
_NO_FINGERPRINTS = Check("byte-scan", True, "not run: no fingerprints were taken for this row")
_COMPRESSED_NOT_SCANNED = Check(
    "byte-scan",
    True,
    "not run: the row had values that the database stored compressed, which a "
    "byte scan cannot recognize",
)

_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Selection:
    """The rows a target selects: a table, a WHERE clause and its parameters."""

    table: str
    where: str = ""
    params: Sequence[Any] | Mapping[str, Any] = ()
    all_rows: bool = False
    delete_dependents: bool = False
    #: Seconds a statement waits for another session's lock; None: engine default.
    lock_timeout: float | None = None
    #: Rows one item stands for in a large selection; None: the default.
    rows_per_item: int | None = None
    #: Options only one engine reads (``purge_binary_logs``), as given.
    engine_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key of ``child`` whose ``child_columns`` reference ``parent``."""

    child: str
    child_columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_delete: str  # "cascade", "restrict", "no action", "set null", "set default"

    @property
    def cascades(self) -> bool:
        return self.on_delete == "cascade"

    @property
    def blocks(self) -> bool:
        return self.on_delete in ("restrict", "no action")


@dataclass
class TableInfo:
    """Catalog facts about one table that the plugins need."""

    name: str
    columns: list[str]
    key: list[str]
    indexes: list[str] = field(default_factory=list)
    referenced_by: list[ForeignKey] = field(default_factory=list)
    #: The key is a storage position (SQLite's implicit rowid) that a
    #: rewrite of the table can give to another row.
    implicit_key: bool = False


def flag_option(value: Any, name: str) -> bool:
    """Return a true/false option given as a bool or a word such as \"no\"."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise InvalidTarget(f"option {name!r} must be true or false, not {value!r}")


def parse_selection(target: Target, engine_keys: Sequence[str] = ()) -> Selection:
    """Read table, WHERE clause and parameters from the URL query and options.

    Options from the config take precedence over the URL query. Repeated
    ``param`` query keys, or ``params`` as a JSON list or object, give the
    bind parameters. ``engine_keys`` names the options one engine adds.
    """
    query = urllib.parse.parse_qs(target.parts.query, keep_blank_values=True)
    known = set(SELECTION_KEYS) | set(engine_keys)
    unknown = set(query) - known - {"param"}
    unknown |= set(target.options) - known
    if unknown:
        raise InvalidTarget(
            f"unknown option(s) {', '.join(sorted(unknown))} for {target.url!r}; "
            f"expected {', '.join([*SELECTION_KEYS, *engine_keys])}"
        )
    merged: dict[str, Any] = {key: values[-1] for key, values in query.items()}
    if "param" in query:
        merged["params"] = query["param"]
    elif isinstance(merged.get("params"), str):
        merged["params"] = _json_params(merged["params"])
    merged.pop("param", None)
    merged.update(target.options)
    table = str(merged.get("table") or "").strip()
    if not table:
        raise InvalidTarget(f"target {target.url!r} names no table; add ?table=NAME")
    where = str(merged.get("where") or "").strip()
    _check_where(where)
    params = merged.get("params") or ()
    if not isinstance(params, (list, tuple, Mapping)):
        raise InvalidTarget(f"option 'params' must be a list or a mapping, not {params!r}")
    return Selection(
        table=table,
        where=where,
        params=dict(params) if isinstance(params, Mapping) else tuple(params),
        all_rows=flag_option(merged.get("all_rows", False), "all_rows"),
        delete_dependents=flag_option(merged.get("delete_dependents", False), "delete_dependents"),
        lock_timeout=_seconds(merged.get("lock_timeout")),
        rows_per_item=_positive_count(merged.get("rows_per_item"), "rows_per_item"),
        engine_options={key: merged[key] for key in engine_keys if key in merged},
    )


def _seconds(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds <= 0:
        raise InvalidTarget(f"option 'lock_timeout' must be a positive number of seconds, not {value!r}")
    return seconds


def as_sentence(message: object) -> str:
    """Return a message ending with a full stop, so another sentence can follow it."""
    text = str(message).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _positive_count(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        count = int(str(value))
    except ValueError:
        count = 0
    if count <= 0:
        raise InvalidTarget(f"option {name!r} must be a positive whole number, not {value!r}")
    return count


def _json_params(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidTarget(
            f"query key 'params' must be a JSON list or object ({error}); "
            "or repeat 'param=VALUE' once per parameter"
        ) from None


def _check_where(where: str) -> None:
    """Reject WHERE clauses that would put data into the statement text.

    A failing statement lands in the server log with its text, so a quoted
    literal there leaks the very value being destroyed.
    """
    if "'" in where:
        raise InvalidTarget(
            "the WHERE clause contains a quoted literal; write a placeholder "
            "and pass the value in 'params' so it is sent as a bind parameter"
        )
    if ";" in where or "--" in where or "/*" in where:
        raise InvalidTarget(
            "the WHERE clause contains ';' or a comment; give one condition only"
        )


# One encoder, built once: json.dumps with options builds a new one per call.
_KEY_JSON = json.JSONEncoder(default=str, ensure_ascii=False)
_BUFFERS = (bytearray, memoryview)


def row_digest(values: Sequence[Any]) -> str:
    """Return a SHA-256 digest of a row's values, for change detection.

    The digest covers the ``repr`` of the values, which is deterministic for
    the types the drivers return (text, numbers, bytes, dates, decimals,
    JSON as dicts and lists). Buffers are turned into bytes first, because
    the ``repr`` of a memoryview names its address.
    """
    row = tuple(values)
    text = repr(row)
    if _may_name_buffer(text):
        row = tuple(bytes(item) if isinstance(item, _BUFFERS) else item for item in row)
        text = repr(row)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def row_digests(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Return the :func:`row_digest` of each row, with less overhead per row."""
    sha256 = hashlib.sha256
    texts = [repr(tuple(values)) for values in rows]
    return [
        row_digest(values)
        if _may_name_buffer(text)
        else sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        for text, values in zip(texts, rows)
    ]


def _may_name_buffer(text: str) -> bool:
    """Tell whether a row's repr may contain a buffer, whose repr is not that of bytes.

    The repr of every memoryview and bytearray contains one of these, and
    checking the text is cheaper than a type check per value.
    """
    return "<memory at " in text or "bytearray(" in text


_WORD = re.compile(r"\w+")


def row_fingerprints(values: Iterable[Any], words: bool = False) -> list[bytes]:
    """Return the byte strings whose presence in storage betrays a row.

    Text gives its UTF-8 bytes and its case-folded form, and with ``words``
    also its longer words, as full-text indexes store them; long text and
    binary values give spread windows, and JSON documents and arrays give
    those of the values inside. Numbers and dates are stored in
    engine-specific binary forms and give none. Words are left out unless a
    full-text index exists, because a short word also occurs inside longer
    surviving values ("user1729" in "user17290").
    """
    return list(row_facts(values, words)[0])


def row_facts(values: Iterable[Any], words: bool = False) -> tuple[tuple[bytes, ...], int]:
    """Return a row's fingerprints and an estimate of its stored size in bytes.

    The fingerprints are those of :func:`row_fingerprints`. The size counts
    text and binary values by their length and other non-null values as 8
    bytes. One pass gives both, so each text value is encoded once.
    """
    found: list[bytes] = []
    size = 0
    for value in values:
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogateescape")
            size += len(raw)
            if words or len(raw) > MAX_WHOLE_VALUE:
                _text_fingerprints(value, raw, words, found)
                continue
            # The common case, inlined: a short value is its own fingerprint.
            if len(raw) >= scan.MIN_TOKEN:
                found.append(raw)
            lowered = value.casefold()
            if lowered != value:
                folded = lowered.encode("utf-8", "surrogateescape")
                if len(folded) >= scan.MIN_TOKEN:
                    found.append(folded)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            size += len(data)
            found.extend(scan.content_fingerprints(data))
        elif isinstance(value, _NESTED):
            nested, nested_size = row_facts(_leaves(value), words)
            found.extend(nested)
            size += nested_size
        elif value is not None:
            size += 8
    if len(found) > 1:
        return tuple(dict.fromkeys(found)), size
    return tuple(found), size


def row_size(values: Iterable[Any]) -> int:
    """Return the size estimate of :func:`row_facts` without taking fingerprints."""
    size = 0
    for value in values:
        if type(value) is str:
            # isascii() reads a flag, so ASCII text needs no encoding.
            size += len(value) if value.isascii() else len(
                value.encode("utf-8", "surrogateescape")
            )
        elif isinstance(value, str):
            size += len(value.encode("utf-8", "surrogateescape"))
        elif isinstance(value, (bytes, bytearray, memoryview)):
            size += value.nbytes if isinstance(value, memoryview) else len(value)
        elif isinstance(value, _NESTED):
            size += row_size(_leaves(value))
        elif value is not None:
            size += 8
    return size


#: Values that drivers return for JSON documents and arrays.
_NESTED = (dict, list, tuple)
#: Types that :func:`row_size` counts as 8 bytes each, when not null.
_EIGHT_BYTES = frozenset({
    int, float, bool, decimal.Decimal, uuid.UUID,
    datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
})


def _rows_size(rows: Sequence[Sequence[Any]]) -> tuple[int, int] | None:
    """Return the :func:`row_size` sum of ``rows`` and a bound on the largest.

    Each column is sized in one pass of built-in calls, which costs less
    than a call per row. The bound is the sum of each column's maximum.
    Returns None for rows of unequal width or for columns of other types
    (subclasses, nested values, non-ASCII text), which need :func:`row_size`.
    """
    if not rows or len(set(map(len, rows))) != 1:
        return None
    size = largest = 0
    for column in zip(*rows):
        kinds = set(map(type, column))
        present = column
        if types.NoneType in kinds:
            present = [value for value in column if value is not None]
            kinds.discard(types.NoneType)
        if not kinds or kinds <= _EIGHT_BYTES:
            size += 8 * len(present)
            largest += 8 if kinds else 0
        elif kinds == {str}:
            text = "".join(present)
            if not text.isascii():
                return None
            size += len(text)
            largest += max(map(len, present))
        elif kinds == {bytes}:
            size += sum(map(len, present))
            largest += max(map(len, present))
        else:
            return None
    return size, largest


def _leaves(value: Any) -> list[Any]:
    """Return the values inside a JSON document or an array, without object keys.

    PostgreSQL stores the strings of jsonb and text[] values as they are,
    and json keeps the text it was given, so each string is a fingerprint
    (one written with escapes in json is not found). Object keys name
    fields that most rows share, so they are left out.
    """
    leaves: list[Any] = []
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            pending.extend(reversed(list(current.values())))
        elif isinstance(current, (list, tuple)):
            pending.extend(reversed(current))
        else:
            leaves.append(current)
    return leaves


class _RowFingerprints(tuple):
    """Fingerprints of one row of a group, taken while planning."""


class KeptBytes:
    """Estimated bytes of memory left for row values that groups keep."""

    __slots__ = ("left",)

    def __init__(self, limit: int | None = None) -> None:
        self.left = MAX_KEPT_BYTES if limit is None else limit


class GroupFingerprints(Sequence[bytes]):
    """The fingerprints of a group of rows, taken on first use.

    Planning keeps the rows' values and leaves the fingerprints to whichever
    thread reads them first: the thread that builds the scanner, which runs
    while the database compacts. A row larger than :data:`MAX_KEPT_ROW`
    bytes gives its fingerprints at once instead, so large values are not
    held in memory, and so does every row once the groups sharing ``kept``
    have used it up. A lock makes the fingerprints taken once. Equal to any
    sequence with the same fingerprints in order.
    """

    __slots__ = ("_rows", "_words", "_budget", "_fingerprints", "_lock")

    def __init__(self, words: bool, kept: KeptBytes | None = None) -> None:
        self._rows: list[Sequence[Any]] | None = []
        self._words = words
        self._budget = kept if kept is not None else KeptBytes()
        self._fingerprints: tuple[bytes, ...] | None = None
        self._lock = threading.Lock()

    def add(self, values: Sequence[Any]) -> int:
        """Add a row's values; return its size estimate (that of :func:`row_facts`)."""
        assert self._rows is not None, "fingerprints already taken"
        size = row_size(values)
        memory = size + KEPT_VALUE_OVERHEAD * len(values)
        if size > MAX_KEPT_ROW or memory > self._budget.left:
            self._rows.append(_RowFingerprints(row_facts(values, self._words)[0]))
        else:
            self._budget.left -= memory
            self._rows.append(values)
        return size

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> int:
        """Add several rows' values; return the sum of their size estimates.

        Rows of plain columns are sized a column at a time. When no row can
        exceed :data:`MAX_KEPT_ROW` and the budget has room for all of them,
        they are kept whole, as :meth:`add` would keep each of them.
        """
        assert self._rows is not None, "fingerprints already taken"
        sized = _rows_size(rows)
        if sized is not None:
            size, largest = sized
            memory = size + KEPT_VALUE_OVERHEAD * sum(map(len, rows))
            if largest <= MAX_KEPT_ROW and memory <= self._budget.left:
                self._budget.left -= memory
                self._rows.extend(rows)
                return size
        return sum([self.add(values) for values in rows])

    def take(self) -> tuple[bytes, ...]:
        """Return the fingerprints, taking them now if no thread has yet."""
        fingerprints = self._fingerprints
        if fingerprints is not None:
            return fingerprints
        with self._lock:
            if self._fingerprints is None:
                found: list[bytes] = []
                words = self._words
                for row in self._rows or ():
                    if type(row) is _RowFingerprints:
                        found.extend(row)
                    else:
                        found.extend(row_facts(row, words)[0])
                self._fingerprints = tuple(dict.fromkeys(found))
                self._rows = None
            return self._fingerprints

    def __len__(self) -> int:
        return len(self.take())

    def __getitem__(self, index: Any) -> Any:
        return self.take()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.take())

    def __contains__(self, value: object) -> bool:
        return value in self.take()

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, GroupFingerprints):
            other = other.take()
        if not isinstance(other, Sequence):
            return NotImplemented
        return self.take() == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GroupFingerprints({self.take()!r})"


def _text_fingerprints(text: str, raw: bytes, words: bool, found: list[bytes]) -> None:
    """Append the fingerprints of one text value, ``raw`` in UTF-8, to ``found``."""
    lowered = text.casefold()
    folded = raw if lowered == text else lowered.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_WHOLE_VALUE:
        found.extend(scan.content_fingerprints(raw))
        if folded is not raw:
            found.extend(scan.content_fingerprints(folded))
    else:
        if len(raw) >= scan.MIN_TOKEN:
            found.append(raw)
        if folded is not raw and len(folded) >= scan.MIN_TOKEN:
            found.append(folded)
    if words:
        tokens = [word for word in _WORD.findall(lowered) if word != lowered]
        found.extend(scan.token_fingerprints(*tokens)[:MAX_WORDS_PER_VALUE])


def key_parts(
    keys: Sequence[Sequence[Any]], max_keys: int, max_bytes: int | None
) -> Iterator[Sequence[Sequence[Any]]]:
    """Split ``keys`` into parts of at most ``max_keys`` keys and ``max_bytes`` bytes.

    The bytes are an estimate of what the keys' values take as bound
    parameters. A key larger than ``max_bytes`` forms a part alone.
    """
    if max_bytes is None:
        for first in range(0, len(keys), max_keys):
            yield keys[first : first + max_keys]
        return
    part: list[Sequence[Any]] = []
    size = 0
    for key in keys:
        cost = row_size(key) + KEY_PARAM_OVERHEAD * len(key)
        if part and (len(part) >= max_keys or size + cost > max_bytes):
            yield part
            part, size = [], 0
        part.append(key)
        size += cost
    if part:
        yield part


# Key value types that encode_key wraps in a one-key object. The journal would
# turn bytes into their text repr. Dicts (jsonb values) are wrapped too, so
# every object in a stored key is a wrapper and decodes unambiguously.
_WRAPPED_TYPES = frozenset({bytes, bytearray, memoryview, dict})


def encode_key(key: Sequence[Any]) -> list[Any]:
    """Return a primary key as the JSON-native list that item identities store.

    A bytes-like value becomes ``{"hex": ...}`` and a JSON object (a jsonb
    value) becomes ``{"json": ...}``. Other values are kept as they are, so
    the identities of keys without such values do not change. Read keys back
    with :func:`decode_key`.
    """
    # NOTE: Values inside an array key (a list) are not encoded, so bytes in
    # a bytea[] key still reach the journal as their text repr.
    if _WRAPPED_TYPES.isdisjoint(map(type, key)):
        return list(key)
    return [_encode_key_value(value) for value in key]


def encode_keys(keys: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Return :func:`encode_key` of each key, checking the types a column at a time."""
    if all(_WRAPPED_TYPES.isdisjoint(map(type, column)) for column in zip(*keys)):
        return [list(key) for key in keys]
    return [encode_key(key) for key in keys]


def _encode_key_value(value: Any) -> Any:
    if type(value) is dict:
        return {"json": value}
    if type(value) in _WRAPPED_TYPES:
        return {"hex": bytes(value).hex()}
    return value


def decode_key(key: Sequence[Any]) -> tuple:
    """Return the primary key stored by :func:`encode_key`, as the driver read it.

    A bytes-like value comes back as ``bytes``.
    """
    if dict not in map(type, key):
        return tuple(key)
    return tuple(_decode_key_value(value) for value in key)


def _decode_key_value(value: Any) -> Any:
    if type(value) is not dict:
        return value
    if "hex" in value:
        return bytes.fromhex(value["hex"])
    return value["json"]


def item_key(table: str, key: Sequence[Any]) -> str:
    """Return the item key of a row: its table and primary key as JSON.

    ``key`` is a key as the driver read it. Its bytes values are written as
    :func:`encode_key` stores them, so a BLOB key b'k1' and a TEXT key
    "b'k1'" of one SQLite table get different item keys.
    """
    if len(key) == 1 and type(key[0]) is int:
        return f"{table}:[{key[0]}]"  # what JSON gives, without the encoder call
    return f"{table}:{_KEY_JSON.encode(encode_key(key))}"


class _Split(NamedTuple):
    """Keys, digests and values of rows, in parallel lists."""

    keys: list[tuple]
    digests: list[str]
    values: list[Sequence[Any]]


@dataclass
class _Pending:
    """What discovery learned about an item, waiting for plan_item."""

    fingerprints: Sequence[bytes]
    refusal: Refusal | None


class ServerDigests:
    """Splitting of rows whose digest the database server computed.

    An engine's :meth:`RowStorePlugin.select_list` puts the key columns
    first, then the digest, then the values.
    """

    def split_row(self, table: TableInfo, row: Sequence[Any]) -> tuple[tuple, str, Sequence[Any]]:
        width = len(table.key)
        return tuple(row[:width]), row[width], row[width + 1 :]

    def split_rows(
        self, table: TableInfo, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple], list[str], list[Sequence[Any]]]:
        width = len(table.key)
        keys = [tuple(row[:width]) for row in rows]
        digests = [row[width] for row in rows]
        return keys, digests, [row[width + 1 :] for row in rows]


class RowStorePlugin(Plugin, abc.ABC):
    """Rows of a database table as items; purge is delete then compaction.

    Subclasses implement the engine hooks below. Every hook may raise the
    driver's exceptions; :meth:`translate` turns them into
    :mod:`plugins.errors` classes at the contract boundary.
    """

    methods = (Method.DELETE_AND_COMPACT, Method.MASK)
    #: Rows per purge batch: each batch is one delete transaction and one
    #: journal commit. Deleting 100,000 SQLite rows in batches of 5000 took
    #: 0.15 to 0.2 s longer than in batches of 20,000, in the extra commits.
    batch_size = 20000
    #: Placeholder of the driver's paramstyle, used in generated statements.
    placeholder = "?"
    #: Seconds a statement waits for another session's lock before failing.
    default_lock_timeout = 10.0
    #: Appended to the purge's re-read of rows, so no other session changes
    #: them between the digest check and the delete (" FOR UPDATE").
    row_lock_clause = ""
    #: Bytes of key values that one statement binds at most, or None for no
    #: limit. The server's maximum packet size bounds them in MySQL.
    max_key_bytes: int | None = None
    #: Target options this engine reads besides :data:`SELECTION_KEYS`.
    engine_keys: tuple[str, ...] = ()

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        try:
            target.parts.port
        except ValueError as error:
            # The message names the port text only, never the password.
            raise InvalidTarget(
                f"the port in target URL {target.parts.scheme}://... is invalid "
                f"({error}); write HOST:PORT with a port from 1 to 65535"
            ) from None
        self.selection = parse_selection(target, self.engine_keys)
        self.lock_timeout = float(
            self.selection.lock_timeout
            or context.settings.get("lock_timeout")
            or self.default_lock_timeout
        )
        self.log = structlog.get_logger(__name__).bind(
            plugin=self.name, target=self.redacted_url()
        )
        self._tables: dict[str, TableInfo] = {}
        self._pending: dict[str, _Pending] = {}
        self._touched: list[str] = []  # tables rows were deleted from, in order
        # Tables in the job's checkpoint, which outlives a crashed process.
        self._checkpointed: list[str] | None = None
        self._inherited: list[str] = []
        self._scan_residue: dict[str, list[_Residue]] = {}
        self._scan_note: str | None = None
        self._scanned: set[str] = set()
        self._scanned_files: list[str] = []
        self._clean_scan = Check("byte-scan", True, "not run: no scan has run")
        # Fingerprints of planned rows, kept so one scan serves every batch.
        self._job_fingerprints: dict[str, Sequence[bytes]] = {}
        # The scanner of those fingerprints, built while compaction runs.
        self._prepared: concurrent.futures.Future[_PreparedScan] | None = None
        # Fingerprints and offsets by file of a scan started during
        # compaction, see start_early_scan().
        self._early: (
            concurrent.futures.Future[dict[str, list[tuple[bytes, int]]]] | None
        ) = None
        # Fingerprints found by a scan, by digest, to explain hits by live rows.
        self._found_fingerprints: dict[str, bytes] = {}
        self._attributes: dict[str, dict[str, Any]] = {}
        # Keys of selected rows with compressed values, from compressed_keys().
        self._compressed: frozenset[tuple] = frozenset()
        self._residual_by_table: dict[str, tuple[str, ...]] = {}
        # Rows per item of the selected table, chosen by describe().
        self._rows_per_item = 1
        # True while the rows of grouped items are deleted.
        self._grouped_purge = False
        # Row versions of each grouped item that this process discovered.
        self._row_versions: dict[str, list[Any]] = {}
        # Memory left for the row values that groups keep until the scanner's build.
        self._kept_bytes = KeptBytes()

    # -- engine hooks -------------------------------------------------------

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection(s); raise the driver's errors unchanged."""

    @abc.abstractmethod
    def translate(self, error: Exception, action: str) -> PluginError:
        """Turn a driver exception raised during ``action`` into a plugin error."""

    @abc.abstractmethod
    def quote(self, name: str) -> str:
        """Return an identifier quoted for the engine's SQL."""

    def quote_table(self, name: str) -> str:
        """Return a table name quoted for the engine's SQL."""
        return self.quote(name)

    def rows_of(self, name: str) -> str:
        """Return the table reference of statements that read, change or delete rows.

        It reaches only the rows stored in table ``name`` itself. The default
        is :meth:`quote_table`, and PostgreSQL adds ONLY for a table that
        other tables inherit from.
        """
        return self.quote_table(name)

    @abc.abstractmethod
    def load_table(self, name: str) -> TableInfo:
        """Read a table's columns, key, indexes and incoming foreign keys.

        Raises TargetNotFound naming the table when the catalog lacks it.
        """

    def null_key_message(self, table: TableInfo, column: str, subject: str) -> str:
        """Return the refusal of rows whose key ``column`` reads as None.

        ``subject`` is the start of the sentence, such as "2 selected rows of
        people have".
        """
        return (
            f"{subject} NULL in the primary key ({', '.join(table.key)}), so the purge "
            "cannot delete or check them by key; give those rows keys, or exclude them "
            f"by adding {column} IS NOT NULL to the WHERE clause"
        )

    def compressed_keys(self, table: TableInfo) -> frozenset[tuple]:
        """Return the keys of selected rows with a value the engine stored compressed.

        A byte scan cannot recognize a compressed value, so the scan check of
        such a row is reported as not run. The default finds none.
        """
        # NOTE: only PostgreSQL looks. InnoDB's compressed row format and page
        # compression are not detected, nor values of rows reached through
        # foreign keys.
        return frozenset()

    @abc.abstractmethod
    def user_tables(self) -> list[str]:
        """Return every user table of the database, for the residue check.

        Engines leave out tables this user cannot read. The residue check
        reads the surviving rows of each listed table that :meth:`load_table`
        accepts, and skips, with a warning, each one for which it raises
        NotSupported.
        """

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple]:
        """Run a read statement and return all rows."""

    @abc.abstractmethod
    def stream(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Iterator[tuple]:
        """Run a read statement through a server-side cursor, yielding rows."""

    @abc.abstractmethod
    def delete_rows(
        self, table: TableInfo, keys: Sequence[Sequence[Any]]
    ) -> int | None:
        """Delete rows by primary key in one committed transaction.

        Returns how many rows the statements deleted, not counting rows that
        triggers deleted, or None when the engine does not count them.
        """

    @abc.abstractmethod
    def engine_info(self) -> TargetInfo:
        """Return media facts, notes and residual risks of the server or file."""

    @abc.abstractmethod
    def compaction_steps(self) -> Iterator[PurgeResult]:
        """Rewrite storage after the deletes and yield one result per step."""

    @abc.abstractmethod
    def data_files(self) -> tuple[list[str], str | None]:
        """Return the files to byte-scan, or a note saying why there are none."""

    def select_list(self, table: TableInfo) -> str:
        """Return the SELECT list that :meth:`split_row` takes apart."""
        return ", ".join(self.quote(name) for name in table.key + table.columns)

    def split_row(self, table: TableInfo, row: Sequence[Any]) -> tuple[tuple, str, Sequence[Any]]:
        """Split a row read with :meth:`select_list` into key, digest and values."""
        width = len(table.key)
        values = row[width:]
        return tuple(row[:width]), row_digest(values), values

    def split_rows(
        self, table: TableInfo, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple], list[str], list[Sequence[Any]]]:
        """Split rows read with :meth:`select_list` into keys, digests and values lists."""
        width = len(table.key)
        keys = [tuple(row[:width]) for row in rows]
        values = [row[width:] for row in rows]
        return keys, row_digests(values), values

    def key_in(self, table: TableInfo, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """Return a condition that ``column`` of ``table`` is one of ``values``, and its parameters."""
        marks = ", ".join([self.placeholder] * len(values))
        return f"{self.quote(column)} IN ({marks})", values

    def close_connections(self) -> None:
        """Close the connection(s) quietly."""

    def full_text_indexed(self, table: str) -> bool:
        """Tell whether a full-text index may hold the table's words one by one."""
        return False

    def trigger_written_tables(self, tables: Sequence[str]) -> set[str]:
        """Return the tables that triggers write to when rows of ``tables`` are deleted.

        Their rows may be copies that the purge itself made, such as an
        audit trail, so the residue check does not count them as surviving
        rows that explain a fingerprint found in the files.
        """
        return set()

    def redacted_url(self) -> str:
        """Return the target URL without password and query, for logs."""
        parts = self.target.parts
        netloc = parts.hostname or ""
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"

    # -- contract -----------------------------------------------------------

    def describe(self) -> TargetInfo:
        self._guarded("connect", self.connect)
        table = self.table(self.selection.table)
        info = self._guarded("inspect the server", self.engine_info)
        selected, total = self._count_selection(table)
        notes = list(info.notes)
        notes.append(
            f"table {table.name}: the selection matches {selected} of {total} rows, "
            f"key ({', '.join(table.key)}); rows reached through foreign keys are "
            "listed as items of their own tables"
        )
        self._rows_per_item = self._choose_rows_per_item(table, selected)
        if self._rows_per_item > 1:
            notes.append(
                f"the selected rows are planned as items of up to {self._rows_per_item} "
                f"rows each and deleted in transactions of about {type(self).batch_size} "
                "rows (option rows_per_item; 1 plans one item per row)"
            )
        elif table.referenced_by and (self.selection.rows_per_item or 1) > 1:
            notes.append(
                f"rows_per_item is ignored: other tables reference {table.name} "
                "through foreign keys, so each row is an item of its own"
            )
        if table.indexes:
            notes.append(f"indexes holding copies: {', '.join(table.indexes)}")
        for fk in self._reachable_foreign_keys(table.name):
            notes.append(
                f"{fk.child}({', '.join(fk.child_columns)}) references "
                f"{fk.parent} ON DELETE {fk.on_delete.upper()}"
            )
        return TargetInfo(media=info.media, notes=tuple(notes), residual=info.residual)

    def discover(self) -> Iterator[Item]:
        table = self.table(self.selection.table)
        self._compressed = self._guarded(
            f"find compressed values in {table.name}",
            lambda: self.compressed_keys(table),
        )
        columns = self.select_list(table)
        version = self.row_version_sql(table) if self._rows_per_item > 1 else None
        if version is not None:
            columns += f", {version}"
        sql = f"SELECT {columns} FROM {self.rows_of(table.name)}"
        if self.selection.where:
            sql += f" WHERE {self.selection.where}"
        if self._rows_per_item > 1:
            yield from self._discover_groups(table, sql, versioned=version is not None)
            return
        seen: set[str] = set()
        null_keyed: list[tuple[tuple, str, Sequence[Any]]] = []
        # Without incoming foreign keys a row reaches no other row, so its
        # item is built directly instead of through a generator per row.
        direct = not table.referenced_by
        for row in self._read_selection(sql, table.name):
            if not direct:
                split = self.split_row(table, row)
                if None in split[0]:
                    null_keyed.append(split)
                    continue
                yield from self._items_for(table, row, seen, via=None)
                continue
            key, digest, values = self.split_row(table, row)
            if None in key:
                null_keyed.append((key, digest, values))
                continue
            name = item_key(table.name, key)
            if name not in seen:
                seen.add(name)
                yield self._row_item(table, name, key, digest, values, None, None)
        yield from self._null_key_items(table, null_keyed)

    def batch_weight(self, attributes: Mapping[str, Any]) -> int:
        return int(attributes.get("rows", 1))

    def _choose_rows_per_item(self, table: TableInfo, selected: int) -> int:
        """Return how many rows each item stands for in this selection.

        Rows that other rows reference through foreign keys stay one item
        each, because each one may reach or be blocked by different rows.
        """
        limit = self.selection.rows_per_item or DEFAULT_ROWS_PER_ITEM
        if limit <= 1 or table.referenced_by:
            return 1
        if self.selection.rows_per_item is None and selected <= limit:
            return 1
        return limit

    def _discover_groups(self, table: TableInfo, sql: str, versioned: bool) -> Iterator[Item]:
        """Yield items of up to ``rows_per_item`` rows each, in key order.

        The order makes the same rows form the same items when the target is
        planned again, which the comparison of a plan with the world needs.
        With ``versioned``, each row ends with its version, which this process
        keeps for the purge. Rows are split a group at a time, because list
        comprehensions cost less per row than a loop with calls.
        """
        order = ", ".join(self.quote(column) for column in table.key)
        limit = self._rows_per_item
        rows = iter(self._read_selection(f"{sql} ORDER BY {order}", table.name))
        group = _Split([], [], [])
        versions: list[Any] = []
        null_keyed: list[tuple[tuple, str, Sequence[Any]]] = []
        while chunk := list(itertools.islice(rows, limit - len(group.keys))):
            if versioned:
                versions += [row[-1] for row in chunk]
                chunk = [row[:-1] for row in chunk]
            split = _Split(*self.split_rows(table, chunk))
            if any(None in key for key in split.keys):
                split, versions = self._without_null_keys(split, versions, null_keyed)
            group.keys.extend(split.keys)
            group.digests.extend(split.digests)
            group.values.extend(split.values)
            if len(group.keys) >= limit:
                yield self._versioned(self._group_item(table, group), versions)
                group, versions = _Split([], [], []), []
        if group.keys:
            yield self._versioned(self._group_item(table, group), versions)
        yield from self._null_key_items(table, null_keyed)

    @staticmethod
    def _without_null_keys(
        split: _Split, versions: list[Any], null_keyed: list[tuple[tuple, str, Sequence[Any]]]
    ) -> tuple[_Split, list[Any]]:
        """Move the rows of ``split`` with NULL in the key to ``null_keyed``.

        ``versions`` ends with the versions of the rows of ``split``, and the
        versions of the moved rows are dropped from the returned list.
        """
        earlier = len(versions) - len(split.keys) if versions else 0
        remaining = _Split([], [], [])
        remaining_versions = versions[:earlier]
        for number, (key, digest, values) in enumerate(zip(*split)):
            if None in key:
                null_keyed.append((key, digest, values))
                continue
            remaining.keys.append(key)
            remaining.digests.append(digest)
            remaining.values.append(values)
            if versions:
                remaining_versions.append(versions[earlier + number])
        return remaining, remaining_versions

    def _null_key_items(
        self, table: TableInfo, rows: Sequence[tuple[tuple, str, Sequence[Any]]]
    ) -> Iterator[Item]:
        """Yield a refused item for each key with NULL in it, standing for all its rows.

        SQLite allows NULL in a primary key column that is not declared NOT
        NULL, and several rows may share such a key. A delete or check by key
        would reach none of them, so the purge would report them gone.
        """
        by_name: dict[str, list[tuple[tuple, str, Sequence[Any]]]] = {}
        for row in rows:
            by_name.setdefault(item_key(table.name, row[0]), []).append(row)
        for name, members in by_name.items():
            key = members[0][0]
            empty = table.key[list(key).index(None)]
            count = len(members)
            verb = "has" if count == 1 else "have"
            subject = f"{_count(count, 'selected row')} of {table.name} {verb}"
            refusal = Refusal("not-supported", self.null_key_message(table, empty, subject))
            self._pending[name] = _Pending((), refusal)
            key_text = name[len(table.name) + 1 :]
            yield Item(
                key=name,
                kind="row",
                size=sum(row_facts(values)[1] for _key, _digest, values in members),
                identity={
                    "table": table.name,
                    "key": encode_key(key),
                    "digests": sorted(digest for _key, digest, _values in members),
                },
                attributes={
                    "table": table.name,
                    "columns": table.columns,
                    "rows": count,
                },
                label=f"{_count(count, 'row')} of {table.name} with key {key_text}",
            )

    def _versioned(self, item: Item, versions: list[Any]) -> Item:
        if versions:
            self._row_versions[item.key] = versions
        return item

    def _group_item(self, table: TableInfo, rows: _Split) -> Item:
        """Build the item of several rows and keep their fingerprints for plan_item."""
        fingerprints = GroupFingerprints(self.full_text_indexed(table.name), self._kept_bytes)
        size = fingerprints.add_rows(rows.values)
        first, last = rows.keys[0], rows.keys[-1]
        last_text = item_key(table.name, last)[len(table.name) + 1 :]
        name = f"{item_key(table.name, first)}..{last_text}"
        self._pending[name] = _Pending(fingerprints, None)
        count = len(rows.keys)
        attributes = {"table": table.name, "columns": table.columns, "rows": count}
        if self._compressed and not self._compressed.isdisjoint(rows.keys):
            attributes["compressed"] = True
        return Item(
            key=name,
            kind="rows",
            size=size,
            identity={
                "table": table.name,
                "keys": encode_keys(rows.keys),
                "digests": rows.digests,
            },
            attributes=attributes,
            label=f"{count} rows of {table.name}, keys {name[len(table.name) + 1 :]}",
        )

    def plan_item(self, item: Item) -> Decision:
        pending = self._pending.pop(item.key, None)
        if pending is None:
            pending = self._reload(item)
        if pending.refusal is not None:
            return Decision(refusal=pending.refusal)
        table = item.attributes["table"]
        self._job_fingerprints[item.key] = pending.fingerprints
        residual = self._residual_by_table.get(table)
        if residual is None:
            residual = (f"copies in the engine's logs and backups are not rewritten ({table})",)
            self._residual_by_table[table] = residual
        return Decision(
            method=Method.DELETE_AND_COMPACT,
            fingerprints=pending.fingerprints,
            residual=residual,
            params=EMPTY_MAPPING,
        )

    def table_columns(self, name: str) -> list[str] | None:
        """Return the columns of a table, or None when the database has no such table."""
        try:
            table = self.table(name)
        except TargetNotFound:
            return None
        return list(dict.fromkeys(table.key + table.columns))

    def plan_mask(self, item: Item, mask: Mapping[str, Any]) -> Decision:
        from plugins import _rowmask

        if item.kind == "rows":
            return Decision(
                refusal=Refusal(
                    "unsupported",
                    f"the policy masks rows of {item.attributes['table']}, and masking "
                    "works on one row per item; set rows_per_item: 1 for this target "
                    "and plan again",
                )
            )

        return _rowmask.plan_mask(self, item, mask)

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        from plugins import _rowmask

        groups = [entry for entry in batch if entry.item.kind == "rows"]
        if groups:
            yield from self._purge_groups(groups)
            batch = [entry for entry in batch if entry.item.kind != "rows"]
        by_table: dict[str, list[PlannedItem]] = {}
        for entry in batch:
            by_table.setdefault(entry.item.attributes["table"], []).append(entry)
        # Items arrive children first, so tables go in the order first seen.
        for table_name, entries in by_table.items():
            self._checkpoint_touched(table_name)
            masked = [e for e in entries if e.decision.method == Method.MASK]
            deleted = [e for e in entries if e.decision.method != Method.MASK]
            if masked:
                yield from _rowmask.mask_table(self, self.table(table_name), masked)
            if deleted:
                yield from self._purge_table(self.table(table_name), deleted)

    def _purge_groups(self, groups: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        """Delete the rows of items that group rows, one transaction per table.

        Each row goes through the same checks as a row item. A row that
        changed since planning is kept, and the item's result names every
        kept row, so the journal shows exactly which rows are gone.
        """
        by_table: dict[str, list[PlannedItem]] = {}
        for group in groups:
            by_table.setdefault(group.item.attributes["table"], []).append(group)
        for table_name, members in by_table.items():
            self._checkpoint_touched(table_name)
            members, deleted_now = yield from self._purge_groups_whole(
                self.table(table_name), members
            )
            if not members:
                continue
            rows_of = {group.item.key: expand_group(group) for group in members}
            owner = {
                row.item.key: key for key, rows in rows_of.items() for row in rows
            }
            rows = [row for group_rows in rows_of.values() for row in group_rows]
            results: dict[str, list[PurgeResult]] = {key: [] for key in rows_of}
            # No row of these tables is reached through a foreign key, so only
            # another connection can have changed them since discovery.
            self._grouped_purge = True
            try:
                for result in self._purge_table(self.table(table_name), rows):
                    results[owner[result.key]].append(result)
            finally:
                self._grouped_purge = False
            for group in members:
                # Rows that the grouped delete removed count as deleted, not
                # as already gone.
                answered = [
                    replace(result, detail="deleted")
                    if result.key in deleted_now and result.status == "purged"
                    else result
                    for result in results[group.item.key]
                ]
                folded = group_result(group, answered)
                if folded.status == "purged":
                    self.context.progress(group.item.size)
                yield folded

    def _purge_groups_whole(
        self, table: TableInfo, members: list[PlannedItem]
    ) -> Generator[PurgeResult, None, tuple[list[PlannedItem], set[str]]]:
        """Delete the rows of whole groups in one statement where the engine can.

        Yields the results of the groups whose every row was deleted. Returns
        the groups left for the row-by-row path and the keys of their rows
        that this statement deleted. A group with a row that did not match
        (changed, or already gone) goes that way whole.
        """
        keys = [
            decode_key(key) for group in members for key in group.item.identity["keys"]
        ]
        digests = [digest for group in members for digest in group.item.identity["digests"]]
        known = [self._row_versions.pop(group.item.key, None) for group in members]
        versions = None
        if all(
            found is not None and len(found) == len(group.item.identity["keys"])
            for found, group in zip(known, members, strict=True)
        ):
            versions = [version for found in known for version in found]
        try:
            deleted = self.delete_group_rows(table, keys, digests, versions)
        except Exception as error:  # noqa: BLE001 - translated below
            failure = self.translate(error, f"delete {len(keys)} row(s) of {table.name}")
            if isinstance(failure, (TargetUnreachable, AccessDenied)):
                raise failure from None
            # The row-by-row path runs the delete again and reports each row.
            self.log.warning("grouped delete failed", table=table.name, error=str(failure))
            return members, set()
        if deleted is None:
            return members, set()
        if deleted and table.name not in self._touched:
            self._touched.append(table.name)
        self.log.info("rows deleted", table=table.name, rows=len(deleted))
        rest: list[PlannedItem] = []
        deleted_now: set[str] = set()
        first = 0
        for group in members:
            count = len(group.item.identity["keys"])
            removed = [number for number in range(first, first + count) if number in deleted]
            if len(removed) == count:
                self.context.progress(group.item.size)
                yield _group_purged(group, count, already=0)
            else:
                rest.append(group)
                deleted_now.update(item_key(table.name, keys[number]) for number in removed)
            first += count
        return rest, deleted_now

    def delete_group_rows(
        self,
        table: TableInfo,
        keys: Sequence[Sequence[Any]],
        digests: Sequence[str],
        versions: Sequence[Any] | None,
    ) -> set[int] | None:
        """Delete, in one committed transaction, the rows still at their key with their digest.

        ``versions`` are the rows' versions that discovery read in this
        process (see :meth:`row_version_sql`), or None. Returns the positions
        in ``keys`` of the rows deleted, or None when the engine has no such
        statement and each row goes through :meth:`_purge_table`.
        """
        return None

    def row_version_sql(self, table: TableInfo) -> str | None:
        """Return an expression that changes whenever a row changes, or None.

        Comparing it costs the engine less than recomputing a row's digest.
        """
        return None

    def _checkpoint_touched(self, name: str) -> None:
        """Record, before its rows change, that the job changes rows of ``name``.

        A process killed after a delete commits leaves items that a resumed
        job verifies without purging them again. The record makes the resumed
        job still compact their table.
        """
        tables = self._checkpoint_tables()
        if name not in tables:
            tables.append(name)
            self.context.checkpoints.save(TOUCHED_CHECKPOINT, {"tables": list(tables)})

    def _checkpoint_tables(self) -> list[str]:
        if self._checkpointed is None:
            saved = self.context.checkpoints.load(TOUCHED_CHECKPOINT) or {}
            self._checkpointed = list(saved.get("tables", ()))
            # Tables an earlier process of this job recorded.
            self._inherited = list(self._checkpointed)
        return self._checkpointed

    def complete(self) -> Iterator[PurgeResult]:
        self._prepare_scanner()
        self._checkpoint_tables()
        for name in self._inherited:
            if name not in self._touched:
                self._touched.append(name)
        if not self._touched:
            return
        try:
            yield from self.compaction_steps()
        except PluginError:
            raise
        except Exception as error:  # noqa: BLE001 - translated below
            raise self.translate(error, "compact the database") from None

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        from plugins import _rowmask

        masked = [entry for entry in batch if entry.decision.method == Method.MASK]
        mask_checks = self._guarded(
            "check the masked rows", lambda: _rowmask.masked_checks(self, masked)
        )
        groups = [entry for entry in batch if entry.item.kind == "rows"]
        singles = [entry for entry in batch if entry.item.kind != "rows"]
        present = self._guarded(
            "check the rows are gone", lambda: self._present_group_rows(groups)
        )
        gone = self._guarded("check the rows are gone", lambda: self._missing_keys(singles))
        self._scan_for(batch)
        for entry in batch:
            if entry.item.kind == "rows":
                absent = group_absent_check(
                    len(entry.item.identity["keys"]), present.get(entry.item.key, [])
                )
                yield Evidence(entry.item.key, (absent, self._scan_check(entry)))
                continue
            if entry.item.key in mask_checks:
                checks = [mask_checks[entry.item.key], self._scan_check(entry)]
                yield Evidence(entry.item.key, tuple(checks))
                continue
            absent = _ROW_ABSENT if entry.item.key in gone else _ROW_PRESENT
            yield Evidence(entry.item.key, (absent, self._scan_check(entry)))

    def close(self) -> None:
        self.close_connections()

    # -- selection and discovery --------------------------------------------

    def table(self, name: str) -> TableInfo:
        if name not in self._tables:
            self._tables[name] = self._guarded(f"read table {name}", lambda: self.load_table(name))
        return self._tables[name]

    def _guarded(self, action: str, call: Any) -> Any:
        try:
            return call()
        except PluginError:
            raise
        except Exception as error:  # noqa: BLE001 - translated below
            raise self.translate(error, action) from None

    def _count_selection(self, table: TableInfo) -> tuple[int, int]:
        """Count the selected and all rows, rejecting an unflagged whole-table purge."""
        name = self.rows_of(table.name)
        total = self._guarded(
            f"count rows of {table.name}",
            lambda: self.query(f"SELECT COUNT(*) FROM {name}")[0][0],
        )
        if not self.selection.where:
            if not self.selection.all_rows:
                raise InvalidTarget(
                    f"no WHERE clause given for table {table.name}, which selects "
                    "every row; set all_rows: true to purge the whole table"
                )
            return total, total
        try:
            with self.read_only():
                selected = self.query(
                    f"SELECT COUNT(*) FROM {name} WHERE {self.selection.where}",
                    self.selection.params,
                )[0][0]
        except PluginError:
            raise
        except Exception as error:  # noqa: BLE001 - translated below
            raise self._selection_error(error, f"count selected rows of {table.name}") from None
        if total and selected == total and not self.selection.all_rows:
            raise InvalidTarget(
                f"the WHERE clause selects all {total} rows of table {table.name}; "
                "set all_rows: true if that is intended"
            )
        return selected, total

    def _items_for(
        self, table: TableInfo, row: tuple, seen: set[str], via: ForeignKey | None
    ) -> Iterator[Item]:
        key, digest, values = self.split_row(table, row)
        name = item_key(table.name, key)
        if name in seen:
            return
        seen.add(name)
        blockers: list[str] = []
        for fk in table.referenced_by:
            parent_values = [values[table.columns.index(col)] for col in fk.parent_columns]
            if any(value is None for value in parent_values):
                continue
            child = self.table(fk.child)
            if fk.cascades or (fk.blocks and self.selection.delete_dependents):
                for child_row in self._referencing_rows(child, fk, parent_values):
                    yield from self._items_for(child, child_row, seen, via=fk)
            elif fk.blocks:
                count = self._count_referencing(child, fk, parent_values)
                if count:
                    blockers.append(f"{count} row(s) of {fk.child}")
        refusal = None
        if blockers:
            refusal = Refusal(
                "referenced",
                f"referenced by {', '.join(blockers)} through a foreign key without "
                "ON DELETE CASCADE; set delete_dependents: true to purge them too",
            )
        yield self._row_item(table, name, key, digest, values, refusal, via)

    def _row_item(
        self,
        table: TableInfo,
        name: str,
        key: Sequence[Any],
        digest: str,
        values: Sequence[Any],
        refusal: Refusal | None,
        via: ForeignKey | None,
    ) -> Item:
        """Build a row's item and keep its fingerprints for plan_item."""
        fingerprints, size = row_facts(values, self.full_text_indexed(table.name))
        self._pending[name] = _Pending(fingerprints, refusal)
        if via is None:
            # Rows selected directly share one attributes mapping per table.
            attributes = self._attributes.get(table.name)
            if attributes is None:
                attributes = {"table": table.name, "columns": table.columns}
                self._attributes[table.name] = attributes
        else:
            attributes = {
                "table": table.name,
                "columns": table.columns,
                "reached_by": f"{via.child} -> {via.parent} ON DELETE {via.on_delete}",
            }
        if via is None and self._compressed and tuple(key) in self._compressed:
            attributes = {**attributes, "compressed": True}
        return Item(
            key=name,
            kind="row",
            size=size,
            identity={"table": table.name, "key": encode_key(key), "digest": digest},
            attributes=attributes,
            label=name,
        )

    def _referencing_rows(
        self, child: TableInfo, fk: ForeignKey, parent_values: Sequence[Any]
    ) -> list[tuple]:
        condition = " AND ".join(
            f"{self.quote(col)} = {self.placeholder}" for col in fk.child_columns
        )
        sql = f"SELECT {self.select_list(child)} FROM {self.rows_of(child.name)} WHERE {condition}"
        return self._guarded(
            f"read rows of {child.name} that reference {fk.parent}",
            lambda: self.query(sql, list(parent_values)),
        )

    def _count_referencing(
        self, child: TableInfo, fk: ForeignKey, parent_values: Sequence[Any]
    ) -> int:
        condition = " AND ".join(
            f"{self.quote(col)} = {self.placeholder}" for col in fk.child_columns
        )
        sql = f"SELECT COUNT(*) FROM {self.rows_of(child.name)} WHERE {condition}"
        return self._guarded(
            f"count rows of {child.name} that reference {fk.parent}",
            lambda: self.query(sql, list(parent_values))[0][0],
        )

    def _reachable_foreign_keys(self, name: str) -> list[ForeignKey]:
        found: list[ForeignKey] = []
        pending = [name]
        visited: set[str] = set()
        while pending:
            current = pending.pop()
            if current in visited:
                continue
            visited.add(current)
            for fk in self.table(current).referenced_by:
                found.append(fk)
                if fk.cascades or self.selection.delete_dependents:
                    pending.append(fk.child)
        return found

    def _reload(self, item: Item) -> _Pending:
        table = self.table(item.attributes["table"])
        keys = item.identity["keys"] if item.kind == "rows" else [item.identity["key"]]
        rows = self._rows_by_key(table, [decode_key(key) for key in keys])
        words = self.full_text_indexed(table.name)
        fingerprints: list[bytes] = []
        for row in rows:
            _, _, values = self.split_row(table, row)
            fingerprints.extend(row_facts(values, words)[0])
        return _Pending(tuple(dict.fromkeys(fingerprints)), None)

    def _rows_by_key(
        self,
        table: TableInfo,
        keys: Sequence[Sequence[Any]],
        lock: bool = False,
        columns: str | None = None,
    ) -> list[tuple]:
        """Read rows by key; with ``lock``, add :attr:`row_lock_clause` to the reads.

        ``columns`` replaces :meth:`select_list` in the statements.
        """
        columns = columns or self.select_list(table)
        base = f"SELECT {columns} FROM {self.rows_of(table.name)} WHERE "
        suffix = self.row_lock_clause if lock else ""
        if len(table.key) == 1:
            found: list[tuple] = []
            # Parts of bounded size, because engines cap the parameters of a
            # statement (SQLite at 32,766, MySQL by its packet size) and
            # rows_per_item has no ceiling.
            for keys_part in key_parts(keys, KEYS_PER_READ, self.max_key_bytes):
                part = [key[0] for key in keys_part]
                condition, params = self.key_in(table, table.key[0], part)
                found.extend(self.query(base + condition + suffix, params))
            return found
        condition = " AND ".join(f"{self.quote(col)} = {self.placeholder}" for col in table.key)
        rows: list[tuple] = []
        for key in keys:
            rows.extend(self.query(base + condition + suffix, list(key)))
        return rows

    # -- purge --------------------------------------------------------------

    def read_only(self) -> contextlib.AbstractContextManager[Any]:
        """Return a context in which statements cannot change the database.

        Planning evaluates the user's WHERE clause, which could call a
        function that writes (``nextval``), and a plan must change nothing.
        """
        return contextlib.nullcontext()

    def is_read_only_error(self, error: Exception) -> bool:
        """Tell whether ``error`` is a write rejected inside :meth:`read_only`."""
        return False

    def selection_starting(self) -> None:
        """Note that discovery is about to read the selection (a hook for engines)."""

    def unchanged_since_selection(self) -> bool:
        """Tell whether no other connection has changed the database since discovery.

        Called inside :meth:`purge_transaction`. True lets the purge of
        grouped rows skip reading each row again to compare its digest.
        """
        return False

    def _read_selection(self, sql: str, table: str) -> Iterator[tuple]:
        """Stream the rows a selection statement returns, with writes rejected."""
        with self.read_only():
            try:
                self.selection_starting()
                yield from self.stream(sql, self.selection.params)
            except PluginError:
                raise
            except Exception as error:  # noqa: BLE001 - translated below
                raise self._selection_error(error, f"select rows of {table}") from None

    def _selection_error(self, error: Exception, action: str) -> PluginError:
        """Translate an error of a statement that evaluates the WHERE clause."""
        if not self.is_read_only_error(error):
            return self.translate(error, action)
        return InvalidTarget(
            f"the WHERE clause of the target on table {self.selection.table} tried to "
            "change the database (a call such as nextval() or a function that "
            "writes); planning only reads, so select the rows without side effects"
        )

    def purge_transaction(self) -> contextlib.AbstractContextManager[Any]:
        """Return a context that keeps other writers out while a batch is deleted."""
        return contextlib.nullcontext()

    def _purge_table(self, table: TableInfo, entries: list[PlannedItem]) -> Iterator[PurgeResult]:
        try:
            # Results leave only after the commit, so none reports a row
            # deleted that a rollback would bring back.
            with self.purge_transaction():
                results = list(self._purge_checked(table, entries))
        except Exception as error:  # noqa: BLE001 - translated below
            failure = self.translate(error, f"delete rows of {table.name}")
            if isinstance(failure, (TargetUnreachable, AccessDenied)):
                raise failure from None
            self.log.error("delete failed", table=table.name, rows=len(entries), error=str(failure))
            results = [
                PurgeResult(
                    entry.item.key,
                    "failed",
                    f"{as_sentence(failure)} The transaction was rolled back, so row "
                    f"{entry.item.key} is still present; run the purge again.",
                )
                for entry in entries
            ]
        yield from results

    def _purge_checked(self, table: TableInfo, entries: list[PlannedItem]) -> Iterator[PurgeResult]:
        keys = [decode_key(entry.item.identity["key"]) for entry in entries]
        if self._grouped_purge and self.unchanged_since_selection():
            # Every row is as discovery read it, so it needs no second read.
            current = {entry.item.key: entry.item.identity["digest"] for entry in entries}
            moved: set[str] = set()
        else:
            current, moved = self._reread(table, entries, keys)
        to_delete: list[PlannedItem] = []
        for entry in entries:
            digest = current.get(entry.item.key)
            if digest is not None and digest != entry.item.identity["digest"]:
                yield PurgeResult(
                    entry.item.key,
                    "failed",
                    f"row {entry.item.key} changed since planning; it was not deleted, "
                    "plan again to include its new values",
                )
            elif entry.item.key in moved:
                yield PurgeResult(
                    entry.item.key,
                    "failed",
                    f"row {entry.item.key} has another rowid since planning (the table "
                    "was rewritten); it was not deleted, plan again",
                )
            else:
                to_delete.append(entry)
        if not to_delete:
            return
        kept: set[str] = set()
        try:
            present = [
                decode_key(entry.item.identity["key"])
                for entry in to_delete
                if entry.item.key in current
            ]
            deleted = self.delete_rows(table, present) if present else None
            if deleted is not None and deleted < len(present):
                kept = self._keys_present(table, present)
        except Exception as error:  # noqa: BLE001 - translated below
            failure = self.translate(error, f"delete {len(present)} row(s) of {table.name}")
            if isinstance(failure, (TargetUnreachable, AccessDenied)):
                raise failure from None
            self.log.error("delete failed", table=table.name, rows=len(present), error=str(failure))
            for entry in to_delete:
                yield PurgeResult(
                    entry.item.key,
                    "failed",
                    f"{as_sentence(failure)} The transaction was rolled back, so row "
                    f"{entry.item.key} is still present; run the purge again.",
                )
            return
        if table.name not in self._touched:
            self._touched.append(table.name)
        self.log.info("rows deleted", table=table.name, rows=len(present) - len(kept))
        for entry in to_delete:
            if entry.item.key in kept:
                yield PurgeResult(entry.item.key, "failed", skipped_delete_reason(entry.item.key))
                continue
            self.context.progress(entry.item.size)
            detail = "deleted" if entry.item.key in current else "already gone when the purge ran"
            yield PurgeResult(
                entry.item.key,
                "purged",
                detail,
                bytes=entry.item.size,
                method=Method.DELETE_AND_COMPACT,
                facts=EMPTY_MAPPING,
            )

    def _keys_present(
        self, table: TableInfo, keys: Sequence[Sequence[Any]]
    ) -> set[str]:
        """Return the item keys of the rows at ``keys``, whatever their content."""
        return {
            item_key(table.name, self.split_row(table, row)[0])
            for row in self._rows_by_key(table, keys)
        }

    def _reread(
        self, table: TableInfo, entries: list[PlannedItem], keys: list[tuple]
    ) -> tuple[dict[str, str], set[str]]:
        """Return the current digest of each planned row found, and the rows that moved."""
        try:
            current = {}
            for row in self._rows_by_key(table, keys, lock=True):
                key, digest, _ = self.split_row(table, row)
                current[item_key(table.name, key)] = digest
            if not current.keys() <= {entry.item.key for entry in entries}:
                self._mark_rekeyed(table, entries, current)
            moved = self._moved_rows(table, [e for e in entries if e.item.key not in current])
        except Exception as error:  # noqa: BLE001 - translated below
            raise self.translate(error, f"re-read rows of {table.name}") from None
        return current, moved

    def _mark_rekeyed(
        self, table: TableInfo, entries: list[PlannedItem], current: dict[str, str]
    ) -> None:
        """Give a changed digest to planned rows whose key now reads differently.

        A read by key also returns a row whose key equals the planned key
        only in the engine's comparison, as 'A' equals 'a' in a
        case-insensitive collation. Such a row changed since planning, so
        it must be kept and reported, not counted as already gone.
        """
        for entry in entries:
            if entry.item.key in current:
                continue
            key = decode_key(entry.item.identity["key"])
            if self._rows_by_key(table, [key], lock=True):
                current[entry.item.key] = ""

    def _moved_rows(self, table: TableInfo, missing: list[PlannedItem]) -> set[str]:
        """Return the keys of missing rows whose values sit under another key.

        Only an implicit key can move, and only a row whose digest is found
        nowhere in the table counts as already gone.
        """
        if not table.implicit_key or not missing:
            return set()
        wanted = {entry.item.identity["digest"]: entry.item.key for entry in missing}
        found: set[str] = set()
        for row in self.stream(f"SELECT {self.select_list(table)} FROM {self.rows_of(table.name)}"):
            _, digest, _ = self.split_row(table, row)
            if digest in wanted:
                found.add(wanted[digest])
        return found

    def step(self, name: str, call: Any, detail: str) -> PurgeResult:
        """Run one compaction step and return its result; driver errors fail it."""
        try:
            facts = call() or {}
        except PluginError as error:
            self.log.error("compaction step failed", step=name, error=str(error))
            return PurgeResult(name, "failed", str(error))
        except Exception as error:  # noqa: BLE001 - translated below
            failure = self.translate(error, f"run step {name}")
            if isinstance(failure, TargetUnreachable):
                raise failure from None
            self.log.error("compaction step failed", step=name, error=str(failure))
            return PurgeResult(name, "failed", str(failure))
        self.log.info("compaction step done", step=name)
        return PurgeResult(
            name, "purged", detail, method=Method.DELETE_AND_COMPACT, facts=facts
        )

    # -- verification -------------------------------------------------------

    def _missing_keys(self, batch: Sequence[PlannedItem]) -> set[str]:
        by_table: dict[str, list[PlannedItem]] = {}
        for entry in batch:
            by_table.setdefault(entry.item.attributes["table"], []).append(entry)
        gone: set[str] = set()
        for name, entries in by_table.items():
            table = self.table(name)
            keys = [decode_key(entry.item.identity["key"]) for entry in entries]
            # A row counts as present only with its old content, because
            # VACUUM renumbers the implicit rowids of SQLite tables.
            present = set()
            for row in self._rows_by_key(table, keys):
                key, digest, _ = self.split_row(table, row)
                present.add((item_key(name, key), digest))
            gone.update(
                entry.item.key
                for entry in entries
                if (entry.item.key, entry.item.identity["digest"]) not in present
            )
        return gone

    def _present_group_rows(self, groups: Sequence[PlannedItem]) -> dict[str, list[str]]:
        """Map each group with rows still present, with their old content, to those rows' keys.

        The rows are read by key in one statement per table. Only when some
        row is found are the planned keys named, because usually none is.
        """
        by_table: dict[str, list[PlannedItem]] = {}
        for group in groups:
            by_table.setdefault(group.item.attributes["table"], []).append(group)
        present: dict[str, list[str]] = {}
        for name, members in by_table.items():
            table = self.table(name)
            keys = [
                decode_key(key)
                for group in members
                for key in group.item.identity["keys"]
            ]
            found = {}
            for row in self._rows_by_key(table, keys):
                key, digest, _ = self.split_row(table, row)
                found[item_key(name, key)] = digest
            if not found:
                continue
            for group in members:
                identity = group.item.identity
                still = [
                    row_key
                    for row_key, digest in (
                        (item_key(name, decode_key(key)), digest)
                        for key, digest in zip(identity["keys"], identity["digests"], strict=True)
                    )
                    # VACUUM renumbers implicit rowids, so a row counts as
                    # present only with its old content.
                    if found.get(row_key) == digest
                ]
                if still:
                    present[group.item.key] = still
        return present

    def _prepare_scanner(self) -> None:
        """Start building the scanner of the planned rows' fingerprints.

        The build runs in a thread while the compaction steps run in the
        database engine, which releases the GIL. The data files are read
        only after compaction. Fingerprints planned after
        the build started are added at verification.
        """
        if self._prepared is not None or not self._job_fingerprints:
            return
        planned = self._job_fingerprints
        self._job_fingerprints = {}
        # At a lower priority: on 2 cores with another job running, VACUUM
        # FULL of 1,000,000 rows beside the build took 2.8 s, and 2.4 s with
        # the build at nice 10.
        self._prepared = start_side_thread(
            lambda: _PreparedScan.build(planned), "lethe-scan-index", yield_cpu=True
        )

    def start_early_scan(self, files: Sequence[str]) -> None:
        """Start scanning ``files`` for the planned fingerprints in a thread.

        An engine calls this during compaction for files that already hold
        their final content, such as the new files of a rewritten table,
        while later steps (statistics, checkpoint) still run on the server.
        Verification reuses the findings of each file whose path is still
        among the data files, and scans the others.
        """
        future = self._prepared
        if future is None or not files or self._early is not None:
            return
        paths = list(files)

        def run() -> dict[str, list[tuple[bytes, int]]]:
            scanner = future.result().scanner
            found: dict[str, list[tuple[bytes, int]]] = {}
            for path in paths:
                try:
                    found[path] = list(scanner.find_in_file(path))
                except OSError:
                    # Verification scans the file again and reports the error.
                    continue
            return found

        self._early = start_side_thread(run, "lethe-early-scan")

    def _take_early(self) -> dict[str, list[tuple[bytes, int]]]:
        """Return the findings of the scan started during compaction, once, by file."""
        future, self._early = self._early, None
        if future is None:
            return {}
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - verification scans every file again
            self.log.warning("early scan failed; scanning again", exc_info=True)
            return {}

    def _take_prepared(self) -> _PreparedScan | None:
        """Return the scanner started by :meth:`_prepare_scanner`, once."""
        future, self._prepared = self._prepared, None
        if future is None:
            return None
        return future.result()

    def _scan_for(self, batch: Sequence[PlannedItem]) -> None:
        """Scan the data files once for every fingerprint not yet scanned for."""
        wanted = [
            entry
            for entry in batch
            if entry.decision.fingerprints and entry.item.key not in self._scanned
        ]
        if not wanted:
            return
        prepared = self._take_prepared() or _PreparedScan(RowScanner(), {})
        # The early scan shares the scanner, so it ends before any change.
        early = self._take_early()
        scanner = prepared.scanner
        owners = set(prepared.fingerprints)
        registered = len(scanner)
        for entry in wanted:
            key = entry.item.key
            # A prepared row is registered with the fingerprints its plan took.
            if prepared.fingerprints.get(key) != entry.decision.fingerprints:
                scanner.add_all(key, entry.decision.fingerprints)
            owners.add(key)
        # Fingerprints of the other planned rows ride along, so a job scans
        # its files once rather than once per batch.
        for key, fingerprints in self._job_fingerprints.items():
            if key not in self._scanned:
                scanner.add_all(key, fingerprints)
                owners.add(key)
        self._job_fingerprints = {}
        if len(scanner) != registered:
            # The early scan did not look for the fingerprints added since.
            early = {}
        files, note = self._guarded("locate the data files", self.data_files)
        self._scan_note = note
        # Places by fingerprint, not hits by row: a value that 20,000 planned
        # rows share and surviving rows keep in 20,000 places would make
        # 400 million hits. A place is one int (see _place).
        found: dict[bytes, list[int]] = {}
        for number, path in enumerate(files):
            try:
                occurrences = early.get(path)
                if occurrences is None:
                    occurrences = scanner.find_in_file(path)
                for fingerprint, offset in occurrences:
                    found.setdefault(fingerprint, []).append(_place(number, offset))
            except FileNotFoundError:
                continue
            except OSError as error:
                self._scan_note = f"could not read {path}: {error.strerror}"
        digests = {fingerprint: scanner.digest(fingerprint) for fingerprint in found}
        self._found_fingerprints.update(
            (digest, fingerprint) for fingerprint, digest in digests.items()
        )
        live = self._explained_by_live_rows(set(digests.values()))
        residue: dict[str, list[_Residue]] = {}
        for fingerprint, places in found.items():
            digest = digests[fingerprint]
            if digest in live:
                continue
            for owner in scanner.owners(fingerprint):
                residue.setdefault(owner, []).append(_Residue(digest, places, files))
        # Only rows with residue get an entry, because most rows have none.
        for owner in owners:
            if owner in residue:
                self._scan_residue[owner] = residue[owner]
            else:
                self._scan_residue.pop(owner, None)
        self._scanned |= owners
        self._scanned_files = files
        if files:
            detail = f"no fingerprint found in {len(files)} data file(s)"
            if self._scan_note:
                detail += f"; {self._scan_note}"
            self._clean_scan = Check("byte-scan", True, detail)
        else:
            self._clean_scan = Check("byte-scan", True, f"not run: {self._scan_note}")

    def _explained_by_live_rows(self, digests: set[str]) -> set[str]:
        """Return the ``digests`` whose fingerprints also occur in rows that still exist.

        A value shared with a surviving row (a country, a city) is found in
        the files legitimately, so it is no evidence of residue.
        """
        if not digests:
            return set()
        return self._guarded("read surviving rows", lambda: self._live_digests(digests))

    def _live_digests(self, digests: set[str]) -> set[str]:
        fingerprints = self._fingerprints_by_digest(digests)
        scanner = scan.FingerprintScanner()
        # A surviving value one or two bytes shorter than a fingerprint also
        # explains a hit: the length header or separator stored after it can
        # supply the missing bytes ("person 2" followed by a header byte "4"
        # reads as "person 24").
        extended: dict[bytes, str] = {}
        lengths: dict[str, int] = {}
        for fingerprint in fingerprints:
            scanner.add("live", fingerprint)
            digest = scan.fingerprint_digest(fingerprint)
            lengths[digest] = len(fingerprint)
            for cut in (1, 2):
                if len(fingerprint) - cut >= scan.MIN_TOKEN // 2:
                    extended[fingerprint[:-cut]] = digest
        found: set[str] = set()
        rows = _LiveRows(scanner, lengths, found)
        copies = self.trigger_written_tables(self._touched)
        for name in self.user_tables():
            if name in copies:
                self.log.info(
                    "surviving rows not read", table=name, reason="DELETE triggers write to it"
                )
                continue
            try:
                table = self.table(name)
            except NotSupported as error:
                # A hit that only this table's rows would explain stays
                # reported as residue, which errs on the safe side.
                self.log.warning("surviving rows not read", table=name, error=str(error))
                continue
            columns = ", ".join(self.quote(col) for col in table.columns)
            for row in self.stream(f"SELECT {columns} FROM {self.rows_of(name)}"):
                values = list(_row_bytes(row))
                rows.add(b"\0".join(values))
                found.update(extended[value] for value in values if value in extended)
                if rows.full():
                    rows.scan()
                    if found >= digests:
                        return found
        rows.scan()
        return found

    def _fingerprints_by_digest(self, digests: set[str]) -> list[bytes]:
        return [
            fingerprint
            for digest, fingerprint in self._found_fingerprints.items()
            if digest in digests
        ]

    def _scan_check(self, entry: PlannedItem) -> Check:
        if not entry.decision.fingerprints:
            return _NO_FINGERPRINTS
        if entry.item.key not in self._scanned:
            return Check("byte-scan", True, f"not run: {self._scan_note}")
        found = self._scan_residue.get(entry.item.key)
        if found and self._scanned_files:
            count = sum(len(residue.places) for residue in found)
            pairs = (
                (place, residue.files) for residue in found for place in residue.places
            )
            first = heapq.nsmallest(5, pairs, key=lambda pair: pair[0])
            where = ", ".join(
                f"{files[place >> _PLACE_SHIFT]} at offset {place & _OFFSET_MASK}"
                for place, files in first
            )
            return Check(
                "byte-scan",
                False,
                f"{count} fingerprint(s) of the row remain in the data files ({where})",
            )
        if entry.item.attributes.get("compressed"):
            return _COMPRESSED_NOT_SCANNED
        # The outcome of the last scan, shared by every clean row.
        return self._clean_scan


class _Residue(NamedTuple):
    """A fingerprint of a row that the byte scan found, and where."""

    digest: str
    #: Places in ``files`` (see _place), shared by the rows with this fingerprint.
    places: list[int]
    #: The files of the scan that found it.
    files: Sequence[str]


#: Bits of a place that contain the offset. The file's number is above them.
_PLACE_SHIFT = 48
_OFFSET_MASK = (1 << _PLACE_SHIFT) - 1


def _place(file_number: int, offset: int) -> int:
    """Return a file's number and an offset in it as one int, smaller than a tuple."""
    return file_number << _PLACE_SHIFT | offset


@dataclass(frozen=True)
class _PreparedScan:
    """A scanner with the planned rows' fingerprints registered and indexed."""

    scanner: RowScanner
    #: The fingerprints registered for each row key.
    fingerprints: Mapping[str, Sequence[bytes]]

    @classmethod
    def build(cls, planned: Mapping[str, Sequence[bytes]]) -> _PreparedScan:
        scanner = RowScanner()
        for key, fingerprints in planned.items():
            scanner.add_all(key, fingerprints)
        scanner.build()
        return cls(scanner, planned)


class _LiveRows:
    """Surviving rows' bytes, scanned many rows at a time for planned fingerprints.

    With one scan call per row, checking 20,000 surviving SQLite rows took
    about 5 s on a 2-core VM. Rows are joined into buffers of about ``LIVE_SCAN_BYTES``, and a
    hit counts only when it lies wholly inside one row, as a scan of each
    row alone would find it.
    """

    def __init__(
        self, scanner: scan.FingerprintScanner, lengths: Mapping[str, int], found: set[str]
    ) -> None:
        self._scanner = scanner
        self._lengths = lengths
        self._found = found
        self._parts: list[bytes] = []
        self._ends: list[int] = []
        self._size = 0

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        self._ends.append(self._size)
        # One separator byte keeps the offsets of consecutive rows apart.
        self._size += 1

    def full(self) -> bool:
        return self._size >= LIVE_SCAN_BYTES

    def scan(self) -> None:
        """Scan the rows added since the last scan and add the digests found."""
        if not self._parts:
            return
        ends = self._ends
        for hit in self._scanner.scan_chunks([b"\0".join(self._parts)]):
            row = bisect.bisect_right(ends, hit.offset)
            start = ends[row - 1] + 1 if row else 0
            inside = start <= hit.offset and hit.offset + self._lengths[hit.digest] <= ends[row]
            if inside:
                self._found.add(hit.digest)
        self._parts, self._ends, self._size = [], [], 0


def _row_bytes(row: Iterable[Any]) -> Iterator[bytes]:
    for value in row:
        if isinstance(value, str):
            yield value.encode("utf-8", "surrogateescape")
            yield value.casefold().encode("utf-8", "surrogateescape")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            yield bytes(value)
        elif isinstance(value, _NESTED):
            yield from _row_bytes(_leaves(value))


# -- items that group rows ------------------------------------------------

#: Maximum number of row keys that a group's failure or check lists; the rest are counted.
MAX_KEYS_IN_DETAIL = 1000


class _RowItem(NamedTuple):
    """The fields of a row's :class:`Item` that the row checks read."""

    key: str
    kind: str
    size: int
    identity: Mapping[str, Any]
    attributes: Mapping[str, Any]


class _RowEntry(NamedTuple):
    """A row of a grouped item, shaped like a :class:`PlannedItem`."""

    item: _RowItem
    decision: Decision


def expand_group(group: PlannedItem) -> list[PlannedItem]:
    """Return one row entry per row of an item that groups rows.

    The row entries carry the key and digest that the row checks read. Their
    size is 0, because the group reports its bytes once all rows are gone.
    They are named tuples, because building 100,000 frozen dataclasses took
    about half a second.
    """
    table = group.item.attributes["table"]
    identity = group.item.identity
    attributes = group.item.attributes
    decision = group.decision
    rows: list[Any] = [
        _RowEntry(
            _RowItem(
                item_key(table, decode_key(key)),
                "row",
                0,
                {"table": table, "key": key, "digest": digest},
                attributes,
            ),
            decision,
        )
        for key, digest in zip(identity["keys"], identity["digests"], strict=True)
    ]
    return rows


def group_result(group: PlannedItem, results: Sequence[PurgeResult]) -> PurgeResult:
    """Fold the results of a group's rows into the group's result."""
    failed = [result for result in results if result.status != "purged"]
    total = len(group.item.identity["keys"])
    if len(results) < total:
        answered = {result.key for result in results}
        table = group.item.attributes["table"]
        stored = group.item.identity["keys"]
        row_keys = (item_key(table, decode_key(row)) for row in stored)
        failed += [
            PurgeResult(key, "failed", f"no delete result for row {key}")
            for key in row_keys
            if key not in answered
        ]
    if not failed:
        already = sum(1 for result in results if result.detail != "deleted")
        return _group_purged(group, total, already)
    if len(failed) == total:
        return PurgeResult(
            group.item.key,
            "failed",
            f"none of the {total} rows was deleted: {failed[0].detail}",
        )
    kept_keys = [result.key for result in failed]
    deleted = total - len(kept_keys)
    reason = as_sentence(failed[0].detail)
    # Most reasons already contain the advice to plan again, so it is added
    # only when the reason lacks it.
    advice = "" if "plan again" in reason.lower() else " Plan again to select the rows still present."
    return PurgeResult(
        group.item.key,
        "failed",
        f"{len(kept_keys)} of {total} rows were kept and the other {deleted} "
        f"{'was' if deleted == 1 else 'were'} deleted. First reason: {reason} "
        f"Kept rows: {_key_list(kept_keys)}.{advice}",
    )


def _group_purged(group: PlannedItem, total: int, already: int) -> PurgeResult:
    """Return the result of a group whose ``total`` rows are gone.

    ``already`` of them were gone before the purge ran.
    """
    detail = f"deleted {_count(total - already, 'row')}"
    if already:
        verb = "was" if already == 1 else "were"
        detail += f"; {already} {verb} already gone when the purge ran"
    return PurgeResult(
        group.item.key,
        "purged",
        detail,
        bytes=group.item.size,
        method=Method.DELETE_AND_COMPACT,
        facts={"rows": total},
    )


def skipped_delete_reason(key: str) -> str:
    """Return the failure reason of a row that its DELETE statement left unchanged."""
    return (
        f"row {key} is still present after its DELETE statement, which a "
        "trigger can skip (RAISE(IGNORE) in SQLite, a BEFORE DELETE trigger "
        "returning NULL in PostgreSQL); it was not deleted. Disable that "
        "trigger for the purge, then run the purge again"
    )


def group_absent_check(total: int, present: Sequence[str]) -> Check:
    """Return the row-absent check of a group of ``total`` rows with rows ``present`` left."""
    if not present:
        return Check("row-absent", True, f"none of the {total} rows selects any more")
    return Check(
        "row-absent",
        False,
        f"{len(present)} of {total} rows still select: {_key_list(present)}",
    )


def _count(number: int, noun: str) -> str:
    """Return ``number`` and ``noun``, plural unless the number is 1."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _key_list(keys: Sequence[str]) -> str:
    """Return up to ``MAX_KEYS_IN_DETAIL`` row keys, joined, and a count of the rest."""
    listed = ", ".join(keys[:MAX_KEYS_IN_DETAIL])
    if len(keys) > MAX_KEYS_IN_DETAIL:
        listed += f" and {len(keys) - MAX_KEYS_IN_DETAIL} more"
    return listed
