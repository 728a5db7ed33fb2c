"""SQLite plugin against real database files."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from pathlib import Path

import pytest

from plugins import _rows, scan
from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import InvalidTarget, TargetNotFound
from plugins.sqlite import SQLitePlugin
from tests.db.conftest import canary, files_contain, sqlite_files
from tests.helpers.driver import run_plugin


def url(path: Path, table: str, where: str = "") -> str:
    query = f"?table={table}"
    if where:
        query += f"&where={where}"
    return f"sqlite://{path}{query}"


def fill_accounts(conn: sqlite3.Connection, secrets_by_id: dict[int, str], size: int) -> None:
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("CREATE INDEX accounts_note ON accounts(note)")
    for row_id, marker in secrets_by_id.items():
        # Repeat the marker around random filler so the row spills to
        # overflow pages and the marker sits at several offsets.
        filler = hashlib.sha256(marker.encode()).hexdigest() * (size // 64)
        conn.execute("INSERT INTO accounts VALUES (?, ?)", (row_id, marker + filler + marker))


def test_overflow_rows_leave_no_canary(sqlite_db):
    path, conn = sqlite_db()
    markers = {row_id: canary(f"row{row_id}") for row_id in range(1, 9)}
    fill_accounts(conn, markers, size=12000)
    conn.close()

    run = run_plugin(
        SQLitePlugin, url(path, "accounts", "id <= ?"), {"params": [3]}
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    for row_id in (1, 2, 3):
        assert not files_contain(sqlite_files(path), markers[row_id].encode())
    assert files_contain(sqlite_files(path), markers[4].encode())


def test_plain_delete_leaves_overflow_canary(sqlite_db):
    path, conn = sqlite_db()
    markers = {row_id: canary(f"row{row_id}") for row_id in range(1, 5)}
    fill_accounts(conn, markers, size=12000)

    conn.execute("DELETE FROM accounts WHERE id <= 2")
    conn.close()

    assert files_contain(sqlite_files(path), markers[1].encode())


def test_wal_with_idle_connection(sqlite_db):
    path, conn = sqlite_db(journal_mode="wal")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    markers = {row_id: canary() for row_id in range(1, 6)}
    fill_accounts(conn, markers, size=3000)
    other = sqlite3.connect(path)  # open, idle, holding no snapshot
    assert Path(f"{path}-wal").stat().st_size > 0

    run = run_plugin(SQLitePlugin, url(path, "accounts", "id = ?"), {"params": [2]})
    other.close()
    conn.close()

    assert not run.unverified()
    assert [step.status for step in run.completion] == ["purged", "purged"]
    assert not files_contain(sqlite_files(path), markers[2].encode())


def test_reader_blocks_checkpoint(sqlite_db):
    path, conn = sqlite_db(journal_mode="wal")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    markers = {row_id: canary() for row_id in range(1, 6)}
    fill_accounts(conn, markers, size=3000)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM accounts").fetchone()  # pins a snapshot

    run = run_plugin(SQLitePlugin, url(path, "accounts", "id = ?"), {"params": [2]})
    reader.execute("COMMIT")
    reader.close()
    conn.close()

    steps = {step.key: step for step in run.completion}
    assert steps["wal-checkpoint"].status == "failed"
    assert "read transaction" in steps["wal-checkpoint"].detail
    assert run.unverified()


def test_fts5_terms_leave_shadow_tables(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    secret_word = "zx" + canary("term").replace("-", "")
    for number in range(200):
        conn.execute("INSERT INTO notes(body) VALUES (?)", (f"ordinary note {number} text",))
    conn.execute("INSERT INTO notes(body) VALUES (?)", (f"call {secret_word} tomorrow",))
    conn.close()

    run = run_plugin(
        SQLitePlugin, url(path, "notes", "notes MATCH ?"), {"params": [secret_word]}
    )

    assert len(run.permitted) == 1
    assert not run.unverified()
    # Terms inside a segment share prefixes with their neighbours, so look for
    # the tail of the term.
    assert not files_contain(sqlite_files(path), secret_word[-20:].encode())


def test_plain_delete_keeps_fts_term(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE VIRTUAL TABLE notes USING fts5(body)")
    secret_word = "zx" + canary("term").replace("-", "")
    conn.execute("INSERT INTO notes(body) VALUES (?)", (f"call {secret_word} now",))
    conn.execute("INSERT INTO notes(body) VALUES ('other words here')")

    conn.execute("DELETE FROM notes WHERE notes MATCH ?", (secret_word,))
    conn.close()

    assert files_contain(sqlite_files(path), secret_word[-20:].encode())


def customer_rows(path: Path, exclude: int) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT * FROM Customer WHERE CustomerId <> ? ORDER BY CustomerId", (exclude,)
        ).fetchall()
    finally:
        conn.close()


def checksum(rows: list[tuple]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def surviving_fingerprints(path: Path, fingerprints: list[bytes]) -> set[bytes]:
    """Return the fingerprints that also occur in rows still in the database."""
    conn = sqlite3.connect(path)
    found: set[bytes] = set()
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                text = b"\0".join(
                    part
                    for value in row
                    if isinstance(value, str)
                    for part in (value.encode(), value.casefold().encode())
                )
                found.update(fp for fp in fingerprints if fp in text)
    finally:
        conn.close()
    return found


def test_chinook_customer_with_invoices(chinook_sqlite):
    conn = sqlite3.connect(chinook_sqlite)
    customer = conn.execute("SELECT * FROM Customer WHERE CustomerId = 12").fetchone()
    invoices = conn.execute("SELECT COUNT(*) FROM Invoice WHERE CustomerId = 12").fetchone()[0]
    conn.close()
    others_before = customer_rows(chinook_sqlite, exclude=12)

    run = run_plugin(
        SQLitePlugin,
        url(chinook_sqlite, "Customer", "CustomerId = ?"),
        {"params": [12], "delete_dependents": True},
    )

    tables = [entry.item.attributes["table"] for entry in run.permitted]
    assert tables.count("Invoice") == invoices
    assert tables.count("Customer") == 1
    assert tables.count("InvoiceLine") > 0
    assert not run.unverified()
    fingerprints = _rows.row_fingerprints(customer)
    unique = [fp for fp in fingerprints if fp not in surviving_fingerprints(chinook_sqlite, fingerprints)]
    assert unique
    scanner = scan.FingerprintScanner()
    scanner.add_all("customer", unique)
    assert list(scanner.scan_file(chinook_sqlite)) == []
    others_after = customer_rows(chinook_sqlite, exclude=12)
    assert len(others_after) == 58
    assert checksum(others_after) == checksum(others_before)


def test_chinook_control_plain_delete(chinook_sqlite):
    conn = sqlite3.connect(chinook_sqlite, isolation_level=None)
    email = conn.execute("SELECT Email FROM Customer WHERE CustomerId = 12").fetchone()[0]
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("DELETE FROM InvoiceLine WHERE InvoiceId IN (SELECT InvoiceId FROM Invoice WHERE CustomerId = 12)")
    conn.execute("DELETE FROM Invoice WHERE CustomerId = 12")
    conn.execute("DELETE FROM Customer WHERE CustomerId = 12")
    conn.close()

    assert email.encode() in chinook_sqlite.read_bytes()


def test_referenced_row_is_refused(chinook_sqlite):
    run = run_plugin(
        SQLitePlugin, url(chinook_sqlite, "Customer", "CustomerId = ?"), {"params": [12]}
    )

    assert run.refusal_reasons() == {"Customer:[12]": "referenced"}
    assert run.results == []


def test_all_rows_needs_flag(chinook_sqlite):
    with pytest.raises(InvalidTarget, match="all_rows"):
        run_plugin(
            SQLitePlugin,
            url(chinook_sqlite, "Genre", "GenreId > ?"),
            {"params": [0]},
            purge=False,
        )


def test_missing_where_needs_flag(chinook_sqlite):
    with pytest.raises(InvalidTarget, match="all_rows"):
        run_plugin(SQLitePlugin, url(chinook_sqlite, "Genre"), purge=False)


def test_all_rows_with_flag(sqlite_db):
    path, conn = sqlite_db()
    fill_accounts(conn, {1: canary(), 2: canary()}, size=100)
    conn.close()

    run = run_plugin(SQLitePlugin, url(path, "accounts"), {"all_rows": True})

    assert len(run.permitted) == 2
    assert not run.unverified()


def test_missing_table(chinook_sqlite):
    with pytest.raises(TargetNotFound, match="'Clients'"):
        run_plugin(SQLitePlugin, url(chinook_sqlite, "Clients", "id = ?"), {"params": [1]})


def test_missing_column(chinook_sqlite):
    with pytest.raises(TargetNotFound, match="no such column: Nmae"):
        run_plugin(
            SQLitePlugin, url(chinook_sqlite, "Customer", "Nmae = ?"), {"params": ["x"]}
        )


def test_quoted_literal_rejected(chinook_sqlite):
    with pytest.raises(InvalidTarget, match="bind parameter"):
        run_plugin(SQLitePlugin, url(chinook_sqlite, "Customer", "Email = 'a@b.c'"))


def test_missing_file(tmp_path):
    with pytest.raises(TargetNotFound, match="does not exist"):
        run_plugin(SQLitePlugin, url(tmp_path / "none.db", "t", "id = ?"), {"params": [1]})


def test_lock_timeout_then_rerun(sqlite_db):
    path, conn = sqlite_db()
    markers = {1: canary(), 2: canary(), 3: canary()}
    fill_accounts(conn, markers, size=100)
    conn.execute("BEGIN IMMEDIATE")  # holds the write lock

    blocked = run_plugin(
        SQLitePlugin,
        url(path, "accounts", "id = ?"),
        {"params": [2], "lock_timeout": 0.2},
    )
    conn.execute("ROLLBACK")
    conn.close()
    rerun = run_plugin(SQLitePlugin, url(path, "accounts", "id = ?"), {"params": [2]})

    assert blocked.statuses() == {"accounts:[2]": "failed"}
    assert "locked" in blocked.results[0].detail
    assert rerun.statuses() == {"accounts:[2]": "purged"}
    assert not rerun.unverified()


def test_table_without_primary_key_uses_rowid(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE log (line TEXT)")
    marker = canary()
    conn.executemany("INSERT INTO log VALUES (?)", [(canary(),), (marker,), (canary(),)])
    conn.close()

    run = run_plugin(SQLitePlugin, url(path, "log", "line = ?"), {"params": [marker]})

    assert [entry.item.identity["key"] for entry in run.permitted] == [[2]]
    assert not run.unverified()
    assert not files_contain(sqlite_files(path), marker.encode())


def test_cascade_rows_become_items(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE owners (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
        "owner INTEGER REFERENCES owners(id) ON DELETE CASCADE, body TEXT)"
    )
    secret = canary("note")
    conn.executemany("INSERT INTO owners VALUES (?, ?)", [(1, canary()), (2, canary())])
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?, ?)", [(10, 1, secret), (11, 1, canary()), (12, 2, canary())]
    )
    conn.close()

    run = run_plugin(SQLitePlugin, url(path, "owners", "id = ?"), {"params": [1]})

    keys = [entry.item.key for entry in run.permitted]
    assert keys == ["notes:[10]", "notes:[11]", "owners:[1]"]
    assert "CASCADE" in run.permitted[0].item.attributes["reached_by"].upper()
    assert not run.unverified()
    assert not files_contain(sqlite_files(path), secret.encode())


def test_renumbered_rowid_is_not_deleted(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE log (line TEXT)")
    lines = [canary(f"l{number}") for number in range(4)]
    conn.executemany("INSERT INTO log VALUES (?)", [(line,) for line in lines])
    plugin = SQLitePlugin(
        Target(url(path, "log", "line IN (?, ?)"), {"params": [lines[2], lines[3]]}),
        JobContext(job_id="test", dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        # VACUUM renumbers rowids: the planned rows 3 and 4 become 2 and 3,
        # so rowid 3 now contains the row planned as rowid 4.
        conn.execute("DELETE FROM log WHERE line = ?", (lines[0],))
        conn.execute("VACUUM")

        results = {result.key: result for result in plugin.purge(planned)}
    finally:
        plugin.close()

    assert {result.status for result in results.values()} == {"failed"}
    assert "changed since planning" in results["log:[3]"].detail
    assert "another rowid" in results["log:[4]"].detail
    left = [row[0] for row in conn.execute("SELECT line FROM log")]
    assert left == lines[1:]


def test_failed_batch_deletes_nothing(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(n, canary()) for n in range(1, 7)])
    conn.execute(
        "CREATE TRIGGER keep_four BEFORE DELETE ON accounts WHEN old.id = 4 "
        "BEGIN SELECT RAISE(ABORT, 'account 4 is kept'); END"
    )
    conn.close()

    run = run_plugin(SQLitePlugin, url(path, "accounts", "id < ?"), {"params": [6]})

    assert set(run.statuses().values()) == {"failed"}
    check = sqlite3.connect(path)
    # Rows 1 to 3 were deleted before the trigger stopped row 4.
    assert check.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 6
    check.close()


def test_verify_scans_fingerprints_of_its_batch(sqlite_db):
    # Verification scans with a scanner built from the plan's fingerprints
    # while compaction runs. A row whose batch entry carries other
    # fingerprints must be scanned for those too.
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(n, canary()) for n in range(1, 5)])
    plugin = SQLitePlugin(
        Target(url(path, "accounts", "id <= ?"), {"params": [2]}),
        JobContext(job_id="test", dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        list(plugin.purge(planned))
        list(plugin.complete())
        # Bytes of no live row, left in a free page after compaction.
        residue = canary("residue")
        conn.execute("INSERT INTO accounts VALUES (9, ?)", (residue,))
        conn.execute("DELETE FROM accounts WHERE id = 9")
        first = planned[0]
        extended = dataclasses.replace(
            first.decision, fingerprints=(*first.decision.fingerprints, residue.encode())
        )
        batch = [PlannedItem(first.item, extended), *planned[1:]]

        evidence = {found.key: found for found in plugin.verify(batch)}
    finally:
        plugin.close()

    assert files_contain(sqlite_files(path), residue.encode())
    assert not evidence[first.item.key].verified
    detail = evidence[first.item.key].checks[1].detail
    assert "remain in the data files" in detail
    offset = Path(path).read_bytes().find(residue.encode())
    assert f"{path} at offset {offset}" in detail
    assert evidence[planned[1].item.key].verified
