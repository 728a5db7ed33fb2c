"""Grouped deletes of MariaDB rows: one statement per batch, only unchanged rows.

The grouped DELETE compares a digest that the server computes from every
column. These tests change rows between planning and purge and check that
each changed row survives and is named in its group's result.
"""

from __future__ import annotations

import pytest

from plugins.base import JobContext, PlannedItem, Target, plugin_batches
from plugins.mysql import MySQLPlugin
from tests.db.conftest import mysql_admin


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def execute(url: str, *statements: str | tuple[str, tuple]) -> None:
    """Run statements on another connection, as another client would."""
    with mysql_admin(database_name(url)) as conn, conn.cursor() as cursor:
        for statement in statements:
            if isinstance(statement, tuple):
                cursor.execute(*statement)
            else:
                cursor.execute(statement)


def fetch(url: str, sql: str) -> list[tuple]:
    with mysql_admin(database_name(url)) as conn, conn.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def make_people(url: str, rows: int = 12) -> None:
    execute(
        url,
        "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(200), note TEXT) ENGINE=InnoDB",
        *[
            (
                "INSERT INTO people VALUES (%s, %s, %s)",
                (n, f"p{n}@example.org", f"note {n}"),
            )
            for n in range(1, rows + 1)
        ],
    )


class Statements:
    """The prepared statements the plugin sends, recorded as they run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import mysql.connector.connection as connections
        import mysql.connector.cursor as cursors

        self.executed: list[str] = []
        self.prepared: list[str] = []
        execute_prepared = cursors.MySQLCursorPrepared.execute
        prepare = connections.MySQLConnection.cmd_stmt_prepare

        def record_execute(cursor, operation, params=None, *args, **kwargs):
            self.executed.append(str(operation))
            return execute_prepared(cursor, operation, params, *args, **kwargs)

        def record_prepare(connection, statement, *args, **kwargs):
            text = (
                statement.decode() if isinstance(statement, bytes) else str(statement)
            )
            self.prepared.append(text)
            return prepare(connection, statement, *args, **kwargs)

        monkeypatch.setattr(cursors.MySQLCursorPrepared, "execute", record_execute)
        monkeypatch.setattr(
            connections.MySQLConnection, "cmd_stmt_prepare", record_prepare
        )

    def grouped_deletes(self) -> list[str]:
        """Return the DELETE statements that compare digests."""
        return [
            sql for sql in self.executed if sql.startswith("DELETE") and "SHA2" in sql
        ]

    def locking_reads(self) -> list[str]:
        return [sql for sql in self.executed if sql.endswith("FOR UPDATE")]


def forbid_row_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def row_by_row(*_args: object) -> None:
        pytest.fail("the grouped delete left rows to the row-by-row path")

    monkeypatch.setattr(MySQLPlugin, "_purge_table", row_by_row)


def purge_after_change(
    url: str, table: str, where: str, params: list, change, rows_per_item: int = 4
):
    """Plan the rows of ``table`` that ``where`` selects, call ``change``, then purge."""
    target = Target(
        f"{url}?table={table}&where={where}",
        {"params": params, "rows_per_item": rows_per_item},
    )
    plugin = MySQLPlugin(target, JobContext(dry_run=False))
    try:
        plugin.describe()
        planned = [
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        ]
        change()
        return {
            result.key: result
            for batch in plugin_batches(planned, plugin)
            for result in plugin.purge(batch)
        }
    finally:
        plugin.close()


def test_unchanged_groups_one_statement(mysql_database, monkeypatch):
    make_people(mysql_database, rows=30)
    statements = Statements(monkeypatch)
    forbid_row_path(monkeypatch)

    results = purge_after_change(
        mysql_database, "people", "id <= %s", [20], lambda: None
    )

    assert len(results) == 5
    assert {result.status for result in results.values()} == {"purged"}
    assert {result.detail for result in results.values()} == {"deleted 4 rows"}
    assert len(statements.grouped_deletes()) == 1
    assert statements.locking_reads() == []
    left = [
        row[0] for row in fetch(mysql_database, "SELECT id FROM people ORDER BY id")
    ]
    assert left == list(range(21, 31))


def test_batches_reuse_prepared_delete(mysql_database, monkeypatch):
    # Batches of 8 rows: two of 8 and one of 4, so two statement texts.
    make_people(mysql_database, rows=24)
    monkeypatch.setattr(MySQLPlugin, "batch_size", 8)
    statements = Statements(monkeypatch)
    forbid_row_path(monkeypatch)

    results = purge_after_change(
        mysql_database, "people", "id <= %s", [20], lambda: None
    )

    assert {result.status for result in results.values()} == {"purged"}
    assert len(statements.grouped_deletes()) == 3
    prepared = [sql for sql in statements.prepared if sql.startswith("DELETE")]
    assert len(prepared) == 2
    assert fetch(mysql_database, "SELECT MIN(id), COUNT(*) FROM people") == [(21, 4)]


def test_updated_row_survives(mysql_database, monkeypatch):
    make_people(mysql_database)
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "people",
        "id <= %s",
        [10],
        lambda: execute(
            mysql_database, "UPDATE people SET email = 'changed' WHERE id = 6"
        ),
    )

    assert len(statements.grouped_deletes()) == 1
    assert results["people:[1]..[4]"].detail == "deleted 4 rows"
    assert results["people:[9]..[10]"].detail == "deleted 2 rows"
    changed_group = results["people:[5]..[8]"]
    assert changed_group.status == "failed"
    assert "1 of 4 rows were kept and the other 3 were deleted" in changed_group.detail
    assert "Kept rows: people:[6]." in changed_group.detail
    left = fetch(mysql_database, "SELECT id, email FROM people ORDER BY id")
    assert left == [(6, "changed"), (11, "p11@example.org"), (12, "p12@example.org")]


def test_deleted_row_already_gone(mysql_database, monkeypatch):
    make_people(mysql_database)
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "people",
        "id <= %s",
        [10],
        lambda: execute(mysql_database, "DELETE FROM people WHERE id = 7"),
    )

    assert len(statements.grouped_deletes()) == 1
    assert {result.status for result in results.values()} == {"purged"}
    assert results["people:[5]..[8]"].detail == (
        "deleted 3 rows; 1 was already gone when the purge ran"
    )
    left = [
        row[0] for row in fetch(mysql_database, "SELECT id FROM people ORDER BY id")
    ]
    assert left == [11, 12]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, ""),
        ("", None),
        ("", "NULL"),
        ("NULL", ""),
        (None, "NULL"),
        ("NULL", None),
    ],
    ids=[
        "null-to-empty",
        "empty-to-null",
        "empty-to-text",
        "text-to-empty",
        "null-to-text",
        "text-to-null",
    ],
)
def test_null_empty_and_text_null_differ(mysql_database, monkeypatch, before, after):
    execute(
        mysql_database,
        "CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(20)) ENGINE=InnoDB",
        *[("INSERT INTO notes VALUES (%s, %s)", (n, before)) for n in range(1, 6)],
    )
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "notes",
        "id <= %s",
        [4],
        lambda: execute(
            mysql_database, ("UPDATE notes SET body = %s WHERE id = 2", (after,))
        ),
    )

    assert len(statements.grouped_deletes()) == 1
    assert results["notes:[1]..[4]"].status == "failed"
    assert "Kept rows: notes:[2]." in results["notes:[1]..[4]"].detail
    assert fetch(mysql_database, "SELECT id, body FROM notes ORDER BY id") == [
        (2, after),
        (5, before),
    ]


def test_blob_changed_in_one_byte(mysql_database, monkeypatch):
    blob = bytes(range(256)) * 400
    execute(
        mysql_database,
        "CREATE TABLE files (id INT PRIMARY KEY, data LONGBLOB) ENGINE=InnoDB",
        *[("INSERT INTO files VALUES (%s, %s)", (n, blob)) for n in range(1, 7)],
    )
    changed = blob[:50000] + bytes([blob[50000] ^ 1]) + blob[50001:]
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "files",
        "id <= %s",
        [4],
        lambda: execute(
            mysql_database, ("UPDATE files SET data = %s WHERE id = 3", (changed,))
        ),
    )

    assert len(statements.grouped_deletes()) == 1
    assert results["files:[1]..[4]"].status == "failed"
    assert "Kept rows: files:[3]." in results["files:[1]..[4]"].detail
    assert fetch(mysql_database, "SELECT id FROM files ORDER BY id") == [
        (3,),
        (5,),
        (6,),
    ]
    assert fetch(mysql_database, "SELECT data FROM files WHERE id = 3") == [(changed,)]


def test_float_changed_past_sixth_digit(mysql_database, monkeypatch):
    # MariaDB prints both FLOAT values as 1, so the digest must not use that text.
    execute(
        mysql_database,
        "CREATE TABLE readings (id INT PRIMARY KEY, level FLOAT) ENGINE=InnoDB",
        "INSERT INTO readings VALUES (1, 1.0000001), (2, 1.0000001), (3, 1.0000001)",
    )
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "readings",
        "id <= %s",
        [2],
        lambda: execute(
            mysql_database, "UPDATE readings SET level = 1.0000002 WHERE id = 2"
        ),
        rows_per_item=2,
    )

    assert len(statements.grouped_deletes()) == 1
    assert results["readings:[1]..[2]"].status == "failed"
    assert "Kept rows: readings:[2]." in results["readings:[1]..[2]"].detail
    assert fetch(mysql_database, "SELECT id FROM readings ORDER BY id") == [(2,), (3,)]


def test_values_copied_from_other_planned_row(mysql_database, monkeypatch):
    # Row 2 takes row 3's planned values, so only the key makes their
    # digests differ.
    make_people(mysql_database)
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "people",
        "id <= %s",
        [8],
        lambda: execute(
            mysql_database,
            "UPDATE people SET email = 'p3@example.org', note = 'note 3' WHERE id = 2",
        ),
    )

    assert len(statements.grouped_deletes()) == 1
    assert results["people:[1]..[4]"].status == "failed"
    assert "Kept rows: people:[2]." in results["people:[1]..[4]"].detail
    assert results["people:[5]..[8]"].detail == "deleted 4 rows"
    left = fetch(mysql_database, "SELECT id, email, note FROM people ORDER BY id")
    assert left[0] == (2, "p3@example.org", "note 3")
    assert [row[0] for row in left] == [2, 9, 10, 11, 12]


def make_accounts(url: str) -> None:
    execute(
        url,
        "CREATE TABLE accounts (tenant INT, code VARCHAR(20), owner VARCHAR(50), "
        "PRIMARY KEY (tenant, code)) ENGINE=InnoDB",
        *[
            (
                "INSERT INTO accounts VALUES (%s, %s, %s)",
                (tenant, f"c{n}", f"owner {n}"),
            )
            for tenant in (1, 2)
            for n in range(1, 9)
        ],
    )


def test_composite_key_one_statement(mysql_database, monkeypatch):
    make_accounts(mysql_database)
    statements = Statements(monkeypatch)
    forbid_row_path(monkeypatch)

    results = purge_after_change(
        mysql_database, "accounts", "tenant = %s", [1], lambda: None
    )

    assert list(results) == [
        'accounts:[1, "c1"]..[1, "c4"]',
        'accounts:[1, "c5"]..[1, "c8"]',
    ]
    assert {result.status for result in results.values()} == {"purged"}
    assert len(statements.grouped_deletes()) == 1
    left = fetch(
        mysql_database, "SELECT tenant, COUNT(*) FROM accounts GROUP BY tenant"
    )
    assert left == [(2, 8)]


def test_composite_key_changed_row_survives(mysql_database, monkeypatch):
    make_accounts(mysql_database)
    statements = Statements(monkeypatch)

    results = purge_after_change(
        mysql_database,
        "accounts",
        "tenant = %s",
        [1],
        lambda: execute(
            mysql_database,
            "UPDATE accounts SET owner = 'new' WHERE tenant = 1 AND code = 'c6'",
        ),
    )

    assert len(statements.grouped_deletes()) == 1
    assert results['accounts:[1, "c1"]..[1, "c4"]'].detail == "deleted 4 rows"
    changed_group = results['accounts:[1, "c5"]..[1, "c8"]']
    assert changed_group.status == "failed"
    assert 'Kept rows: accounts:[1, "c6"].' in changed_group.detail
    left = fetch(
        mysql_database, "SELECT tenant, code, owner FROM accounts WHERE tenant = 1"
    )
    assert left == [(1, "c6", "new")]
    assert fetch(mysql_database, "SELECT COUNT(*) FROM accounts WHERE tenant = 2") == [
        (8,)
    ]


def test_unique_index_key_one_statement(mysql_database, monkeypatch):
    # Without a primary key, rows are addressed by a unique index on NOT
    # NULL columns.
    execute(
        mysql_database,
        "CREATE TABLE contacts (code VARCHAR(20) NOT NULL, email VARCHAR(200), "
        "UNIQUE KEY contacts_code (code)) ENGINE=InnoDB",
        *[
            (
                "INSERT INTO contacts VALUES (%s, %s)",
                (f"code-{n:02}", f"c{n}@example.org"),
            )
            for n in range(1, 11)
        ],
    )
    statements = Statements(monkeypatch)
    forbid_row_path(monkeypatch)

    results = purge_after_change(
        mysql_database, "contacts", "code <= %s", ["code-08"], lambda: None
    )

    assert list(results) == [
        'contacts:["code-01"]..["code-04"]',
        'contacts:["code-05"]..["code-08"]',
    ]
    assert {result.status for result in results.values()} == {"purged"}
    assert len(statements.grouped_deletes()) == 1
    left = fetch(mysql_database, "SELECT code FROM contacts ORDER BY code")
    assert left == [("code-09",), ("code-10",)]


def test_reads_by_key_reuse_prepared_statement(mysql_database, monkeypatch):
    # Verification reads the planned keys back in parts of equal size, so
    # one prepared statement serves every part.
    from plugins import _rows, mysql

    make_people(mysql_database, rows=28)
    monkeypatch.setattr(MySQLPlugin, "batch_size", 8)
    monkeypatch.setattr(_rows, "KEYS_PER_READ", 4)
    monkeypatch.setattr(mysql, "KEPT_FROM_PARAMS", 1)
    target = Target(
        f"{mysql_database}?table=people&where=id <= %s", {"params": [24], "rows_per_item": 4}
    )
    plugin = MySQLPlugin(target, JobContext(dry_run=False))
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        for batch in plugin_batches(planned, plugin):
            list(plugin.purge(batch))
        statements = Statements(monkeypatch)
        evidence = [
            found for batch in plugin_batches(planned, plugin) for found in plugin.verify(batch)
        ]
    finally:
        plugin.close()

    reads = [sql for sql in statements.executed if sql.startswith("SELECT") and " IN (" in sql]
    prepared = [sql for sql in statements.prepared if sql in reads]
    assert len(reads) == 6
    assert len(prepared) == 1
    assert all(found.verified for found in evidence)
    assert fetch(mysql_database, "SELECT MIN(id), COUNT(*) FROM people") == [(25, 4)]
