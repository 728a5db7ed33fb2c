"""Row digests, size estimates, grouping and fingerprints taken after planning."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from plugins import _rows
from plugins.base import SIDE_THREAD_NICE, JobContext, PlannedItem, Target, start_side_thread
from plugins.sqlite import SQLitePlugin
from tests.db.conftest import canary, files_contain, sqlite_files
from tests.helpers.driver import run_plugin

VALUES = (
    "ascii text",
    "Zoë Ångström",
    "bad \udcff byte",
    b"\x00\x01binary",
    bytearray(b"buffer"),
    memoryview(b"view!"),
    None,
    42,
    3.5,
    {"city": "Zoë's town", "tags": ["alpha", 3, None], "nested": {"deep": b"bytes"}},
    ["array text", 7],
)


def test_row_size_matches_row_facts() -> None:
    for value in VALUES:
        assert _rows.row_size([value]) == _rows.row_facts([value])[1], value
    assert _rows.row_size(VALUES) == _rows.row_facts(VALUES)[1]


def test_row_digest_unchanged() -> None:
    # Journals and saved plans keep row digests, so a new version must give
    # the digests of the old one (values computed before the text check).
    assert (
        _rows.row_digest(("Ada", 36, None, b"\x01", 1.5))
        == "284b39a7330cfea9d9899ace8071bbea35573ccc1e709d9e8c1a450f6a2e4c22"
    )
    assert (
        _rows.row_digest((memoryview(b"ab"), 1))
        == "721dc9cdef08cfa31e0465fe6c4040923dbb76c189da6f716c8c294dd173ac28"
    )


def test_row_digest_buffers_as_bytes() -> None:
    assert _rows.row_digest([memoryview(b"ab"), 1]) == _rows.row_digest([b"ab", 1])
    assert _rows.row_digest([bytearray(b"ab"), 1]) == _rows.row_digest([b"ab", 1])


def test_row_digest_text_like_a_buffer() -> None:
    row = ("bytearray(b'x')", "<memory at 0x1>")
    assert _rows.row_digest(row) == hashlib.sha256(repr(row).encode()).hexdigest()


def count_row_facts(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[int]:
    """Count calls of row_facts; return the list whose length is the count."""
    calls: list[int] = []
    real = _rows.row_facts

    def counted(values: Any, words: bool = False) -> Any:
        calls.append(1)
        if delay:
            time.sleep(delay)
        return real(values, words)

    monkeypatch.setattr(_rows, "row_facts", counted)
    return calls


def test_group_fingerprints_taken_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [("user1@example.org", "Ada"), ("user2@example.org", "Ada")]
    expected = tuple(
        dict.fromkeys(fp for values in rows for fp in _rows.row_fingerprints(values))
    )
    calls = count_row_facts(monkeypatch)
    group = _rows.GroupFingerprints(words=False)
    sizes = [group.add(values) for values in rows]

    assert sizes == [20, 20]
    assert calls == []
    assert tuple(group) == expected
    assert len(calls) == 2
    assert group == expected
    assert len(group) == len(expected)
    assert len(calls) == 2


def test_large_row_fingerprinted_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    large = ("x" * 100 + canary("large") + "y" * _rows.MAX_KEPT_ROW,)
    expected = tuple(_rows.row_fingerprints(large))
    calls = count_row_facts(monkeypatch)
    group = _rows.GroupFingerprints(words=False)

    group.add(large)

    assert len(calls) == 1
    assert large not in group._rows
    assert tuple(group) == expected
    assert len(calls) == 1


def test_kept_bytes_shared_by_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(f"user{number}@example.org",) for number in range(10, 16)]
    expected = [tuple(_rows.row_fingerprints(values)) for values in rows]
    # Room for three rows of one 18-byte value.
    budget = _rows.KeptBytes(3 * (18 + _rows.KEPT_VALUE_OVERHEAD))
    first = _rows.GroupFingerprints(words=False, kept=budget)
    second = _rows.GroupFingerprints(words=False, kept=budget)
    calls = count_row_facts(monkeypatch)

    first.add_rows(rows[:2])
    second.add_rows(rows[2:])

    assert len(calls) == 3
    assert budget.left == 0
    assert tuple(first) == expected[0] + expected[1]
    assert tuple(second) == expected[2] + expected[3] + expected[4] + expected[5]


class Label(str):
    """A text subclass, which drivers return for some column types."""


#: Groups of rows as drivers return them, for the group sizing of add_rows.
GROUPS = {
    "plain": [(1, "ada@example.org", None, 2.5), (2, "bob@example.org", "note", None)],
    "other scalars": [
        (True, decimal.Decimal("1.5"), datetime.date(2020, 1, 2), uuid.UUID(int=1)),
        (False, None, datetime.datetime(2020, 1, 2, 3, 4), uuid.UUID(int=2)),
    ],
    "null column": [(1, None), (2, None)],
    "bytes": [(1, b"\x00\x01binary"), (2, None)],
    "non-ascii": [(1, "Zoë Ångström"), (2, "plain")],
    "subclass": [(1, Label("label text")), (2, "plain text")],
    "buffers": [(1, memoryview(b"view!")), (2, bytearray(b"buffer"))],
    "nested": [(1, {"city": "Zoë's town"}), (2, ["array text", 7])],
    "unequal widths": [(1, "short row"), (2, "longer row", 3)],
    "large row": [(1, "x" * _rows.MAX_KEPT_ROW), (2, "small")],
    # No row passes MAX_KEPT_ROW, but the sum of the columns' largest does.
    "large columns": [
        (1, "x" * (_rows.MAX_KEPT_ROW // 2 + 1), "y" * 10),
        (2, "z", "y" * (_rows.MAX_KEPT_ROW // 2)),
    ],
}


@pytest.mark.parametrize("name", sorted(GROUPS))
@pytest.mark.parametrize("room", [None, 0, 100])
def test_add_rows_matches_add(name: str, room: int | None) -> None:
    rows = GROUPS[name]
    by_group = _rows.GroupFingerprints(words=False, kept=_rows.KeptBytes(room))
    by_row = _rows.GroupFingerprints(words=False, kept=_rows.KeptBytes(room))

    size = by_group.add_rows(rows)
    sizes = [by_row.add(values) for values in rows]

    assert size == sum(sizes)
    assert by_group._budget.left == by_row._budget.left
    assert [type(row) for row in by_group._rows] == [type(row) for row in by_row._rows]
    assert tuple(by_group) == tuple(by_row)


def test_add_rows_sizes_plain_columns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [(number, f"user{number}@example.org", None, 1.5) for number in range(1000)]
    calls: list[int] = []
    real = _rows.row_size

    def counted(values: Any) -> int:
        calls.append(1)
        return real(values)

    monkeypatch.setattr(_rows, "row_size", counted)
    group = _rows.GroupFingerprints(words=False)

    size = group.add_rows(rows)

    assert size == sum(real(values) for values in rows)
    assert calls == []


def test_planning_memory_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany(
        "INSERT INTO people VALUES (?, ?)",
        [(number, f"person{number:05}@example.org") for number in range(1, 3001)],
    )
    # Room for the values of 1000 rows: the id (8 bytes) and a 23-byte email.
    row_memory = 8 + 23 + 2 * _rows.KEPT_VALUE_OVERHEAD
    monkeypatch.setattr(_rows, "MAX_KEPT_BYTES", 1000 * row_memory)
    calls = count_row_facts(monkeypatch)
    plugin = SQLitePlugin(
        Target(f"sqlite://{path}?table=people", {"all_rows": True}),
        JobContext(job_id="test", dry_run=True),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        planned_calls = len(calls)
        fingerprints = [tuple(entry.decision.fingerprints) for entry in planned]
    finally:
        plugin.close()
        conn.close()

    assert len(planned) == 3
    assert planned_calls == 2000
    assert len(calls) == 3000
    assert fingerprints[2] == tuple(
        f"person{number:05}@example.org".encode() for number in range(2001, 3001)
    )


def test_group_fingerprints_taken_once_across_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = count_row_facts(monkeypatch, delay=0.01)
    group = _rows.GroupFingerprints(words=False)
    for number in range(5):
        group.add((f"user{number}@example.org",))
    seen: list[tuple[bytes, ...]] = []
    threads = [threading.Thread(target=lambda: seen.append(group.take())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(calls) == 5
    assert len(seen) == 4
    assert all(fingerprints is seen[0] for fingerprints in seen)


def test_planning_takes_no_fingerprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    emails = {number: canary(f"person{number}") for number in range(1, 3001)}
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO people VALUES (?, ?)", emails.items())
    conn.execute("COMMIT")
    calls = count_row_facts(monkeypatch)
    plugin = SQLitePlugin(
        Target(f"sqlite://{path}?table=people&where=id <= ?", {"params": [2500]}),
        JobContext(job_id="test", dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        planned_calls = len(calls)
        list(plugin.purge(planned))
        list(plugin.complete())
        # A planned row's value, left in the free space of a page after
        # compaction by a row outside the selection.
        conn.execute("UPDATE people SET email = ? WHERE id = 2600", (emails[1500],))
        conn.execute("DELETE FROM people WHERE id = 2600")
        evidence = {found.key: found for found in plugin.verify(planned)}
    finally:
        plugin.close()
        conn.close()

    assert planned_calls == 0
    assert len(calls) == 2500
    assert files_contain(sqlite_files(path), emails[1500].encode())
    second = planned[1].item.key
    assert second == "people:[1001]..[2000]"
    assert not evidence[second].verified
    assert "remain in the data files" in evidence[second].checks[1].detail
    assert evidence[planned[0].item.key].verified
    assert evidence[planned[2].item.key].verified


def test_null_keys_leave_group_with_versions() -> None:
    split = _rows._Split([(1,), (None,), (3,)], ["d1", "d2", "d3"], [("a",), ("b",), ("c",)])
    null_keyed: list[tuple[tuple, str, Any]] = []

    remaining, versions = _rows.RowStorePlugin._without_null_keys(
        split, ["earlier", "v1", "v2", "v3"], null_keyed
    )

    assert remaining.keys == [(1,), (3,)]
    assert remaining.digests == ["d1", "d3"]
    assert remaining.values == [("a",), ("c",)]
    assert versions == ["earlier", "v1", "v3"]
    assert null_keyed == [((None,), "d2", ("b",))]


def test_row_digests_match_row_digest() -> None:
    rows = [("Ada", 1), (memoryview(b"ab"), None), ("bytearray(b'')", 2.5)]

    assert _rows.row_digests(rows) == [_rows.row_digest(row) for row in rows]


def test_side_thread_priority() -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    usual = niceness()

    lowered = start_side_thread(niceness, "lethe-test", yield_cpu=True).result()
    plain = start_side_thread(niceness, "lethe-test").result()

    assert lowered == min(usual + SIDE_THREAD_NICE, 19)
    assert plain == usual
    assert niceness() == usual


def test_scanner_built_at_lower_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The build runs beside the compaction, which should get the processor first.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany(
        "INSERT INTO people VALUES (?, ?)",
        [(number, canary(f"person{number}")) for number in range(1, 101)],
    )
    conn.close()
    niceness: list[int] = []
    build = _rows._PreparedScan.build.__func__

    def recording(cls: type, planned: Any) -> Any:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return build(cls, planned)

    monkeypatch.setattr(_rows._PreparedScan, "build", classmethod(recording))
    usual = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    run = run_plugin(SQLitePlugin, f"sqlite://{path}?table=people&where=id <= ?", {"params": [50]})

    assert niceness == [min(usual + SIDE_THREAD_NICE, 19)]
    assert run.evidence
    assert not run.unverified()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ((b"k1",), (b"k1",)),
        ((bytearray(b"\x00\xff"),), (b"\x00\xff",)),
        ((memoryview(b"view"), 7), (b"view", 7)),
        ((b"",), (b"",)),
        (({"hex": "6b31"},), ({"hex": "6b31"},)),
        (({"json": 1},), ({"json": 1},)),
        (("b'k1'", None), ("b'k1'", None)),
    ],
)
def test_key_survives_journal(key: tuple, expected: tuple) -> None:
    from agent.journal import dumps, loads

    stored = loads(dumps({"key": _rows.encode_key(key)}))["key"]

    assert _rows.decode_key(stored) == expected


@pytest.mark.parametrize(
    "key",
    [
        (1,),
        ("text", 2),
        (None, 1.5),
        (decimal.Decimal("1.10"), datetime.date(2024, 5, 1)),
        (uuid.UUID(int=1), True),
    ],
)
def test_key_encoding_keeps_other_types(key: tuple) -> None:
    # Saved plans and item keys of existing jobs name these keys as before.
    encoded = _rows.encode_key(key)

    assert encoded == list(key)
    text = json.dumps(list(key), default=str, ensure_ascii=False)
    assert _rows.item_key("t", key) == f"t:{text}"


def test_blob_and_text_keys_differ() -> None:
    assert _rows.item_key("t", (b"k1",)) != _rows.item_key("t", ("b'k1'",))


def test_encode_keys_matches_encode_key() -> None:
    plain = [(1, "a"), (2, "b")]
    mixed = [(1, "a"), (2, b"k2"), (3, {"city": "x"})]

    assert _rows.encode_keys(plain) == [_rows.encode_key(key) for key in plain]
    assert _rows.encode_keys(mixed) == [_rows.encode_key(key) for key in mixed]
    assert _rows.encode_keys(mixed)[1] == [2, {"hex": "6b32"}]
