"""MariaDB/MySQL plugin against the real MariaDB server on 127.0.0.1:3306."""

from __future__ import annotations

import hashlib
import os

import pytest

from plugins import _rows, scan
from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import InvalidTarget, NotSupported, TargetNotFound, TargetUnreachable
from plugins.mysql import MySQLPlugin
from tests.db.conftest import canary, files_contain, load_chinook_mysql, mysql_admin
from tests.helpers.driver import run_plugin


def target(url: str, table: str, where: str = "") -> str:
    query = f"?table={table}"
    if where:
        query += f"&where={where}"
    return url + query


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def datadir() -> str:
    with mysql_admin() as admin, admin.cursor() as cursor:
        cursor.execute("SELECT @@datadir")
        return cursor.fetchone()[0]


def table_file(url: str, table: str) -> str:
    return os.path.join(datadir(), database_name(url), f"{table}.ibd")


def fill_people(url: str, rows: int = 30) -> dict[int, str]:
    markers = {number: canary(f"p{number}") for number in range(rows)}
    with mysql_admin(database_name(url)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(200), bio TEXT, "
            "KEY people_email (email)) ENGINE=InnoDB"
        )
        for number, marker in markers.items():
            cursor.execute(
                "INSERT INTO people VALUES (%s, %s, %s)", (number, marker, marker * 20)
            )
        cursor.execute("FLUSH TABLES people FOR EXPORT")
        cursor.execute("UNLOCK TABLES")
    return markers


def test_ibd_holds_no_canary(mysql_database):
    markers = fill_people(mysql_database)
    path = table_file(mysql_database, "people")
    assert files_contain([path], markers[3].encode())

    run = run_plugin(MySQLPlugin, target(mysql_database, "people", "id < %s"), {"params": [10]})

    assert len(run.permitted) == 10
    assert set(run.statuses().values()) == {"purged"}
    assert {step.status for step in run.completion} == {"purged"}
    assert not run.unverified()
    for number in range(10):
        assert not files_contain([path], markers[number].encode())
    assert files_contain([path], markers[12].encode())


def test_residual_names_binlog_and_redo(mysql_database):
    # NOTE: the shared test server runs with the binary log off, so this checks
    # that the plan states the binlog's state, not the listing of binlog files.
    fill_people(mysql_database, rows=3)

    run = run_plugin(
        MySQLPlugin, target(mysql_database, "people", "id = %s"), {"params": [1]}, purge=False
    )

    residual = " ".join(run.info.residual)
    assert "binary log" in residual
    assert "redo log" in residual
    assert "undo" in residual
    assert "free space" in residual


def test_plain_delete_leaves_ibd_canary(mysql_database):
    markers = fill_people(mysql_database)
    with mysql_admin(database_name(mysql_database)) as conn, conn.cursor() as cursor:
        cursor.execute("DELETE FROM people WHERE id < 10")
        cursor.execute("FLUSH TABLES people FOR EXPORT")
        cursor.execute("UNLOCK TABLES")

    assert files_contain([table_file(mysql_database, "people")], markers[3].encode())


def test_chinook_customer_with_invoices(mysql_database):
    name = database_name(mysql_database)
    load_chinook_mysql(name)
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT * FROM Customer WHERE CustomerId = 12")
        customer = cursor.fetchone()
        cursor.execute("SELECT * FROM Customer WHERE CustomerId <> 12 ORDER BY CustomerId")
        others_before = cursor.fetchall()

    run = run_plugin(
        MySQLPlugin,
        target(mysql_database, "Customer", "CustomerId = %s"),
        {"params": [12], "delete_dependents": True},
    )

    assert not run.unverified()
    tables = {entry.item.attributes["table"] for entry in run.permitted}
    assert tables == {"Customer", "Invoice", "InvoiceLine"}
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT * FROM Customer ORDER BY CustomerId")
        others_after = cursor.fetchall()
    remaining = " ".join(str(value) for row in others_after for value in row)
    fingerprints = [
        fp
        for fp in _rows.row_fingerprints(customer)
        if fp.decode() not in remaining and fp.decode() not in remaining.casefold()
    ]
    assert fingerprints
    scanner = scan.FingerprintScanner()
    scanner.add_all("customer", fingerprints)
    for table in ("Customer", "Invoice", "InvoiceLine"):
        path = table_file(mysql_database, table)
        assert list(scanner.scan_file(path)) == [], path
    assert len(others_after) == 58
    assert _digest(others_after) == _digest(others_before)


def _digest(rows) -> str:
    return hashlib.sha256(repr(list(rows)).encode()).hexdigest()


def test_all_rows_needs_flag(mysql_database):
    fill_people(mysql_database, rows=3)
    with pytest.raises(InvalidTarget, match="all_rows"):
        run_plugin(MySQLPlugin, target(mysql_database, "people", "id >= %s"), {"params": [0]})


def test_missing_table(mysql_database):
    with pytest.raises(TargetNotFound, match="'nobody'"):
        run_plugin(MySQLPlugin, target(mysql_database, "nobody", "id = %s"), {"params": [1]})


def test_missing_column(mysql_database):
    fill_people(mysql_database, rows=3)
    with pytest.raises(TargetNotFound, match="nmae"):
        run_plugin(MySQLPlugin, target(mysql_database, "people", "nmae = %s"), {"params": [1]})


def test_lost_connection_then_rerun(mysql_database):
    fill_people(mysql_database, rows=6)
    url = target(mysql_database, "people", "id < %s")
    plugin = MySQLPlugin(Target(url, {"params": [3]}), JobContext(dry_run=False))
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        with mysql_admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"KILL CONNECTION {plugin.connection.connection_id}")
        with pytest.raises(TargetUnreachable, match="run the purge again"):
            list(plugin.purge(planned))
    finally:
        plugin.close()

    rerun = run_plugin(MySQLPlugin, url, {"params": [3]})

    assert set(rerun.statuses().values()) == {"purged"}
    assert len(rerun.results) == 3
    assert not rerun.unverified()


def test_lock_timeout_then_rerun(mysql_database):
    fill_people(mysql_database, rows=6)
    holder = mysql_admin(database_name(mysql_database))
    holder.begin()
    with holder.cursor() as cursor:
        cursor.execute("SELECT * FROM people WHERE id = 2 FOR UPDATE")

    blocked = run_plugin(
        MySQLPlugin,
        target(mysql_database, "people", "id = %s"),
        {"params": [2], "lock_timeout": 1},
    )
    holder.rollback()
    holder.close()
    rerun = run_plugin(MySQLPlugin, target(mysql_database, "people", "id = %s"), {"params": [2]})

    assert blocked.statuses() == {"people:[2]": "failed"}
    assert "timed out" in blocked.results[0].detail
    assert "again. The transaction was rolled back" in blocked.results[0].detail
    assert rerun.statuses() == {"people:[2]": "purged"}
    assert not rerun.unverified()


def test_values_travel_as_bind_parameters(mysql_database, monkeypatch):
    """MariaDB keeps no statement log by default, so check the driver calls.

    Every statement the plugin sends must keep the value out of its text and
    carry it in the parameters of a server-side prepared statement.
    """
    import mysql.connector.cursor as cursors

    fill_people(mysql_database, rows=4)
    secret = canary("d6")
    with mysql_admin(database_name(mysql_database)) as conn, conn.cursor() as cursor:
        cursor.execute("UPDATE people SET email = %s WHERE id = 1", (secret,))
        cursor.execute(
            "CREATE TABLE visits (id INT PRIMARY KEY, person INT, "
            "FOREIGN KEY (person) REFERENCES people(id)) ENGINE=InnoDB"
        )
    texts: list[str] = []
    bound: list[tuple] = []
    spliced: list[tuple] = []  # parameters a plain cursor would splice into the text
    plain_execute = cursors.MySQLCursor.execute
    prepared_execute = cursors.MySQLCursorPrepared.execute

    def record_plain(self, operation, params=None, *args, **kwargs):
        texts.append(str(operation))
        if params:
            spliced.append(tuple(params))
        return plain_execute(self, operation, params, *args, **kwargs)

    def record_prepared(self, operation, params=None, *args, **kwargs):
        texts.append(str(operation))
        bound.append(tuple(params or ()))
        return prepared_execute(self, operation, params, *args, **kwargs)

    monkeypatch.setattr(cursors.MySQLCursor, "execute", record_plain)
    monkeypatch.setattr(cursors.MySQLCursorPrepared, "execute", record_prepared)
    plugin = MySQLPlugin(
        Target(target(mysql_database, "people", "email = %s"), {"params": [secret]}),
        JobContext(dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        # A reference appears after planning, so the DELETE fails on the constraint.
        with mysql_admin(database_name(mysql_database)) as conn, conn.cursor() as cursor:
            cursor.execute("INSERT INTO visits VALUES (1, 1)")
        results = list(plugin.purge(planned))
    finally:
        plugin.close()

    assert [result.status for result in results] == ["failed"]
    assert "foreign key" in results[0].detail
    assert secret not in results[0].detail
    assert texts
    assert all(secret not in text for text in texts)
    assert any(secret in params for params in bound)
    assert spliced == []


def make_keyless(url: str, columns: str, rows: list[tuple]) -> None:
    with mysql_admin(database_name(url)) as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE TABLE contacts ({columns}) ENGINE=InnoDB")
        for row in rows:
            marks = ", ".join(["%s"] * len(row))
            cursor.execute(f"INSERT INTO contacts VALUES ({marks})", row)
        cursor.execute("FLUSH TABLES contacts FOR EXPORT")
        cursor.execute("UNLOCK TABLES")


def test_unique_not_null_index_as_key(mysql_database):
    markers = [canary(f"c{number}") for number in range(6)]
    make_keyless(
        mysql_database,
        "code VARCHAR(20) NOT NULL, email VARCHAR(200), UNIQUE KEY contacts_code (code)",
        [(f"code-{number}", marker) for number, marker in enumerate(markers)],
    )
    path = table_file(mysql_database, "contacts")

    run = run_plugin(
        MySQLPlugin, target(mysql_database, "contacts", "code < %s"), {"params": ["code-3"]}
    )

    assert sorted(run.statuses()) == [f'contacts:["code-{number}"]' for number in range(3)]
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    for marker in markers[:3]:
        assert not files_contain([path], marker.encode())
    for marker in markers[3:]:
        assert files_contain([path], marker.encode())


@pytest.mark.parametrize(
    "columns",
    [
        "email VARCHAR(200)",
        "email VARCHAR(200), UNIQUE KEY contacts_email (email)",
        "email VARCHAR(200) NOT NULL, KEY contacts_email (email)",
    ],
    ids=["no-index", "nullable-unique", "not-unique"],
)
def test_table_without_row_key_rejected(mysql_database, columns):
    make_keyless(mysql_database, columns, [("one@example.org",), ("two@example.org",)])

    with pytest.raises(NotSupported, match="no primary key and no unique index"):
        run_plugin(
            MySQLPlugin,
            target(mysql_database, "contacts", "email = %s"),
            {"params": ["one@example.org"]},
        )


def test_reread_locks_rows_until_delete(mysql_database, monkeypatch):
    """Another session cannot change a row between the digest check and the delete."""
    fill_people(mysql_database, rows=4)
    outcome = {}
    original = MySQLPlugin.delete_rows

    def change_then_delete(self, table, keys):
        with mysql_admin(database_name(mysql_database)) as other, other.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
            try:
                cursor.execute("UPDATE people SET email = 'changed' WHERE id = 1")
                other.commit()
                outcome["update"] = "committed"
            except Exception as error:  # noqa: BLE001 - the lock wait is the point
                outcome["update"] = type(error).__name__
        return original(self, table, keys)

    monkeypatch.setattr(MySQLPlugin, "delete_rows", change_then_delete)
    run = run_plugin(MySQLPlugin, target(mysql_database, "people", "id < %s"), {"params": [2]})

    assert outcome["update"] != "committed"
    assert run.statuses() == {"people:[0]": "purged", "people:[1]": "purged"}


def test_reference_cycle_advice(mysql_database):
    name = database_name(mysql_database)
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE nodes (id INT PRIMARY KEY, ref INT, "
            "FOREIGN KEY (ref) REFERENCES nodes(id)) ENGINE=InnoDB"
        )
        cursor.execute("INSERT INTO nodes VALUES (1, NULL), (2, 1), (3, NULL)")
        cursor.execute("UPDATE nodes SET ref = 2 WHERE id = 1")

    run = run_plugin(
        MySQLPlugin,
        target(mysql_database, "nodes", "id < %s"),
        {"params": [3], "delete_dependents": True},
    )

    details = [result.detail for result in run.results]
    assert {result.status for result in run.results} == {"failed"}
    assert "reference each other" in details[0]
    assert "set delete_dependents" not in details[0]


def test_key_statements_mark_values_with_question_marks(mysql_database, monkeypatch):
    # The prepared cursor rewrites each %s with a regular expression that
    # scans the rest of the statement, so thousands of %s marks took seconds.
    import mysql.connector.cursor as cursors

    fill_people(mysql_database, rows=30)
    marks: list[int] = []
    prepared_execute = cursors.MySQLCursorPrepared.execute

    def record(self, operation, params=None, *args, **kwargs):
        marks.append(str(operation).count("%s"))
        return prepared_execute(self, operation, params, *args, **kwargs)

    monkeypatch.setattr(cursors.MySQLCursorPrepared, "execute", record)
    run = run_plugin(
        MySQLPlugin,
        target(mysql_database, "people", "id <= %s"),
        {"params": [25], "rows_per_item": 10},
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    assert marks
    assert max(marks) <= 1
