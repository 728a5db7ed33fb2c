"""Database targets given odd names, values and settings by a careless user.

Tests that name system tables only plan, so a plugin that failed to reject
them would still change nothing.
"""

from __future__ import annotations

import secrets
import socket
import sqlite3

import psycopg
import pytest

from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    NotSupported,
    TargetNotFound,
    TargetUnreachable,
)
from plugins.mysql import MySQLPlugin
from plugins.postgresql import PostgreSQLPlugin
from plugins.sqlite import SQLitePlugin
from tests.db.conftest import canary, mysql_admin, pg_admin
from tests.helpers.driver import run_plugin


@pytest.mark.parametrize(
    "table", ["pg_catalog.pg_class", "pg_class", "information_schema.sql_parts"]
)
def test_postgresql_system_catalog_rejected(pg_database, table):
    with pytest.raises(InvalidTarget, match="system catalog") as raised:
        run_plugin(
            PostgreSQLPlugin,
            f"{pg_database}?table={table}&where=true",
            {"all_rows": True},
            purge=False,
        )

    assert "user schema" in str(raised.value)


@pytest.mark.parametrize("table", ["sqlite_sequence", "SQLITE_STAT1"])
def test_sqlite_internal_table_rejected(tmp_path, table):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)")
    conn.execute("INSERT INTO log (v) VALUES ('a')")
    conn.execute("CREATE INDEX log_v ON log(v)")
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()

    with pytest.raises(InvalidTarget, match="internal to SQLite"):
        run_plugin(
            SQLitePlugin, f"sqlite://{path}?table={table}", {"all_rows": True}, purge=False
        )

    with sqlite3.connect(path) as check:
        assert check.execute("SELECT COUNT(*) FROM sqlite_sequence").fetchone()[0] == 1


def test_sqlite_shadow_table_rejected(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    conn.execute("INSERT INTO docs VALUES ('first'), ('second')")
    conn.commit()
    conn.close()

    with pytest.raises(InvalidTarget, match="shadow table"):
        run_plugin(
            SQLitePlugin, f"sqlite://{path}?table=docs_data", {"all_rows": True}, purge=False
        )


def test_sqlite_table_named_like_shadow(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    conn.execute("CREATE TABLE docs_archive (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO docs_archive VALUES (1, 'old'), (2, 'older')")
    conn.commit()
    conn.close()

    run = run_plugin(
        SQLitePlugin, f"sqlite://{path}?table=docs_archive&where=id = ?", {"params": [1]}
    )

    assert run.statuses() == {"docs_archive:[1]": "purged"}


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_sqlite_column_named_rowid(tmp_path, rows_per_item):
    # A column named rowid hides the rowid of a table without a primary
    # key, so deleting by that column would take the unselected row too.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (rowid INT, body TEXT, selected INT)")
    conn.executemany(
        "INSERT INTO notes VALUES (?, ?, ?)",
        [(1, canary("first"), 1), (1, canary("kept"), 0), (2, canary("second"), 1)],
    )
    conn.commit()
    conn.close()

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=notes&where=selected = 1",
        {"rows_per_item": rows_per_item},
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT rowid, selected FROM notes").fetchall() == [(1, 0)]


def test_sqlite_rowid_hidden_by_every_alias(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute('CREATE TABLE notes (rowid INT, "_ROWID_" INT, oid INT, body TEXT)')
    conn.commit()
    conn.close()

    with pytest.raises(NotSupported, match="hide the rowid") as raised:
        run_plugin(
            SQLitePlugin, f"sqlite://{path}?table=notes&where=body = ?", {"params": ["x"]}
        )

    assert "add a primary key" in str(raised.value)


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_sqlite_null_primary_key_refused(tmp_path, rows_per_item):
    # SQLite lets a TEXT PRIMARY KEY hold NULL, in any number of rows. Such
    # rows cannot be deleted or checked by key, so they are refused.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (code TEXT PRIMARY KEY, email TEXT, n INT)")
    rows = [
        (None if n % 3 == 0 else f"c{n}", canary(f"person{n}"), n) for n in range(1, 8)
    ]
    conn.executemany("INSERT INTO people VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=people&where=n <= ?",
        {"params": [6], "rows_per_item": rows_per_item},
    )

    [refused] = run.refused
    assert refused.item.key == "people:[null]"
    assert refused.item.label == "2 rows of people with key [null]"
    assert refused.decision.refusal.reason == "not-supported"
    assert "2 selected rows of people have NULL in the primary key (code)" in (
        refused.decision.refusal.detail
    )
    assert "code IS NOT NULL" in refused.decision.refusal.detail
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with sqlite3.connect(path) as check:
        left = check.execute("SELECT code, n FROM people ORDER BY n").fetchall()
    assert left == [(None, 3), (None, 6), ("c7", 7)]


@pytest.mark.parametrize("rows_per_item", [1, 4])
def test_sqlite_delete_skipped_by_trigger(tmp_path, rows_per_item):
    # A soft-delete trigger turns each DELETE into an UPDATE. The rows stay,
    # with a new digest that verification would take for a row gone.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, deleted INT DEFAULT 0)"
    )
    conn.executemany(
        "INSERT INTO people (id, email) VALUES (?, ?)",
        [(number, canary(f"person{number}")) for number in range(1, 7)],
    )
    conn.execute(
        "CREATE TRIGGER soft_delete BEFORE DELETE ON people BEGIN "
        "UPDATE people SET deleted = 1 WHERE id = old.id; SELECT RAISE(IGNORE); END"
    )
    conn.commit()
    conn.close()

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=people&where=id <= ?",
        {"params": [4], "rows_per_item": rows_per_item},
    )

    assert set(run.statuses().values()) == {"failed"}
    assert "still present after its DELETE statement" in run.results[0].detail
    assert "Disable that trigger for the purge" in run.results[0].detail
    assert run.evidence == []
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 6


@pytest.mark.parametrize("rows_per_item", [1, 4])
def test_postgresql_delete_skipped_by_trigger(pg_database, rows_per_item):
    # A BEFORE DELETE trigger that returns NULL skips the delete and leaves
    # the row as planned, so the row is kept by a trigger, not changed.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people SELECT i, 'person' || i FROM generate_series(1, 6) i")
        conn.execute(
            "CREATE FUNCTION keep_two() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN IF old.id = 2 THEN RETURN NULL; END IF; RETURN old; END $$"
        )
        conn.execute(
            "CREATE TRIGGER keep_two BEFORE DELETE ON people "
            "FOR EACH ROW EXECUTE FUNCTION keep_two()"
        )

    run = run_plugin(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&where=id <= %s",
        {"params": [4], "rows_per_item": rows_per_item},
    )

    failed = [result for result in run.results if result.status == "failed"]
    assert len(failed) == 1
    assert "public.people:[2] is still present after its DELETE statement" in (
        failed[0].detail
    )
    assert "changed since planning" not in failed[0].detail
    with psycopg.connect(pg_database, autocommit=True) as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM people ORDER BY id")]
    assert left == [2, 5, 6]


def test_mysql_system_database_rejected():
    with pytest.raises(InvalidTarget, match="belongs to the server"):
        run_plugin(
            MySQLPlugin,
            "mysql://root@127.0.0.1:3306/mysql?table=innodb_table_stats&where=1 = %s",
            {"params": [1], "all_rows": True},
            purge=False,
        )


def make_people(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, born date, email text)")
        conn.execute(
            "INSERT INTO people VALUES (1, '1990-01-01', 'a@example.org'), "
            "(2, '1991-02-02', 'b@example.org')"
        )


@pytest.mark.parametrize(
    ("where", "value"),
    [("id = %s", "name-{marker}"), ("born = %s", "2020-13-45{marker}")],
)
def test_postgresql_bad_value_not_quoted(pg_database, where, value):
    make_people(pg_database)
    marker = canary()
    secret = value.format(marker=marker)

    with pytest.raises(InvalidTarget) as raised:
        run_plugin(
            PostgreSQLPlugin, f"{pg_database}?table=people&where={where}", {"params": [secret]}
        )

    assert marker not in str(raised.value)
    assert "'params'" in str(raised.value)


@pytest.mark.parametrize(
    ("where", "params"),
    [("id = %(id)s", [1]), ("id = %s", {"id": 1}), ("email", [])],
)
def test_postgresql_bad_where_is_usage_error(pg_database, where, params):
    make_people(pg_database)

    with pytest.raises(InvalidTarget, match="WHERE"):
        run_plugin(
            PostgreSQLPlugin,
            f"{pg_database}?table=people&where={where}",
            {"params": params},
            purge=False,
        )


@pytest.mark.parametrize("port", ["99999", "abc"])
def test_invalid_port_is_usage_error(port):
    url = f"postgresql://postgres:hunter2@127.0.0.1:{port}/db?table=people&all_rows=1"

    with pytest.raises(InvalidTarget, match="port") as raised:
        PostgreSQLPlugin(Target(url), JobContext())

    assert "hunter2" not in str(raised.value)


def make_cycle(path) -> None:
    """Create rows 1 and 2 of ``nodes`` that reference each other, and row 3."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        "CREATE TABLE nodes (id INTEGER PRIMARY KEY, next INTEGER REFERENCES nodes(id), v TEXT)"
    )
    conn.execute("INSERT INTO nodes VALUES (1, NULL, 'a'), (2, 1, 'b'), (3, NULL, 'c')")
    conn.execute("UPDATE nodes SET next = 2 WHERE id = 1")
    conn.commit()
    conn.close()


def test_sqlite_reference_cycle_purged(tmp_path):
    path = tmp_path / "app.db"
    make_cycle(path)

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=nodes&where=id = ?",
        {"params": [1], "delete_dependents": True},
    )

    assert run.statuses() == {"nodes:[1]": "purged", "nodes:[2]": "purged"}
    assert not run.unverified()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT id FROM nodes").fetchall() == [(3,)]


def test_sqlite_rejected_commit_rolls_back(tmp_path):
    path = tmp_path / "app.db"
    make_cycle(path)
    plugin = SQLitePlugin(
        Target(f"sqlite://{path}?table=nodes&where=id = ?", {"params": [3]}),
        JobContext(dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        # Row 2 starts to reference row 3 after planning, so the deferred
        # key rejects the COMMIT of row 3's delete.
        with sqlite3.connect(path) as other:
            other.execute("UPDATE nodes SET next = 3 WHERE id = 2")
        first = list(plugin.purge(planned))
        second = list(plugin.purge(planned))
        in_transaction = plugin.conn.in_transaction
    finally:
        plugin.close()

    assert [result.status for result in first] == ["failed"]
    assert [result.status for result in second] == ["failed"]
    assert "rolled back" in first[0].detail
    assert not in_transaction


def test_postgresql_unknown_database_names_url(pg_database):
    url = pg_database.rsplit("/", 1)[0] + "/lethe_no_such_database"

    with pytest.raises(TargetNotFound, match="lethe_no_such_database") as raised:
        run_plugin(PostgreSQLPlugin, f"{url}?table=people&all_rows=1", purge=False)

    assert "target URL" in str(raised.value)
    assert "purged" not in str(raised.value)


def test_mysql_closed_port_names_url():
    url = f"mysql://root@127.0.0.1:{closed_port()}/lethe_db?table=people&all_rows=1"

    with pytest.raises(TargetUnreachable, match="target URL") as raised:
        run_plugin(MySQLPlugin, url, purge=False)

    assert "purged" not in str(raised.value)


def test_mysql_wrong_password_names_fix(mysql_database):
    url = mysql_database.replace("root@", "root:wrong-password@")

    with pytest.raises(AccessDenied, match="password in the target URL") as raised:
        run_plugin(MySQLPlugin, f"{url}?table=people&all_rows=1", purge=False)

    assert "wrong-password" not in str(raised.value)


def test_mysql_extra_param_is_usage_error(mysql_database):
    with mysql_admin(mysql_database.rsplit("/", 1)[1]) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE people (id INT PRIMARY KEY, email TEXT) ENGINE=InnoDB")
        cursor.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b')")

    with pytest.raises(InvalidTarget, match="placeholders"):
        run_plugin(
            MySQLPlugin,
            f"{mysql_database}?table=people&where=id = %s",
            {"params": [1, 2]},
            purge=False,
        )


def closed_port() -> int:
    """Return a 127.0.0.1 port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_postgresql_plan_names_missing_delete(pg_database):
    make_people(pg_database)
    role = f"lethe_db_{secrets.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'GRANT SELECT ON people TO "{role}"')
        url = pg_database.replace("postgres@", f"{role}@", 1)

        run = run_plugin(
            PostgreSQLPlugin,
            f"{url}?table=people&where=id = %s",
            {"params": [1]},
            purge=False,
        )
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with pg_admin() as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')

    assert any("DELETE on public.people is not granted" in line for line in run.info.residual)


def test_postgresql_plan_with_writing_where(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        conn.execute("CREATE SEQUENCE counter")

    with pytest.raises(InvalidTarget, match="tried to change the database"):
        run_plugin(
            PostgreSQLPlugin,
            f"{pg_database}?table=people&where=id = %s AND nextval(%s::regclass) > 0",
            {"params": [1, "counter"]},
            purge=False,
        )

    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT last_value, is_called FROM counter").fetchone() == (1, False)


def test_postgresql_read_only_database_kept_read_only(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b')")
    name = pg_database.rsplit("/", 1)[1]
    with pg_admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    url = f"{pg_database}?table=people&where=id = %s"
    plan = run_plugin(PostgreSQLPlugin, url, {"params": [1]}, purge=False)
    # The purge's delete must still meet the read-only default that the
    # plan's read-only reads set and restored.
    plugin = PostgreSQLPlugin(Target(url, {"params": [1]}), JobContext(dry_run=True))
    try:
        plugin.describe()
        plugin.context.dry_run = False
        entries = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        with pytest.raises(AccessDenied, match="accepts only reads"):
            list(plugin.purge(entries))
    finally:
        plugin.close()

    assert any("accepts only reads" in note for note in plan.info.notes)
    with pytest.raises(AccessDenied, match="default_transaction_read_only is on"):
        run_plugin(PostgreSQLPlugin, url, {"params": [1]})

    with pg_admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 2


def test_mysql_plan_with_writing_where(mysql_database):
    name = mysql_database.rsplit("/", 1)[1]
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(20)) ENGINE=InnoDB")
        cursor.execute("INSERT INTO people VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        cursor.execute("CREATE SEQUENCE counter ENGINE=InnoDB")

    with pytest.raises(InvalidTarget, match="tried to change the database"):
        run_plugin(
            MySQLPlugin,
            f"{mysql_database}?table=people&where=id = %s AND NEXTVAL(counter) > 0",
            {"params": [1]},
            purge=False,
        )

    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT next_not_cached_value FROM counter")
        assert cursor.fetchone()[0] == 1


def test_mysql_long_keys_over_packet(mysql_database):
    # A batch of long text keys in one statement exceeds max_allowed_packet,
    # and the server drops the connection.
    name = mysql_database.rsplit("/", 1)[1]
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT @@max_allowed_packet")
        packet = cursor.fetchone()[0]
        count = packet // 3072 + 200
        if count > MySQLPlugin.batch_size:
            pytest.skip(f"max_allowed_packet {packet} fits a whole batch of 3 KiB keys")
        cursor.execute(
            "CREATE TABLE pages (url VARCHAR(3072) CHARACTER SET ascii PRIMARY KEY, "
            "title VARCHAR(40)) ENGINE=InnoDB"
        )
        rows = [(f"{number:06}-" + "x" * 3065, canary()) for number in range(count)]
        for first in range(0, count, 500):
            cursor.executemany("INSERT INTO pages VALUES (%s, %s)", rows[first : first + 500])

    run = run_plugin(MySQLPlugin, f"{mysql_database}?table=pages", {"all_rows": True})

    assert set(run.statuses().values()) == {"purged"}
    assert run.unverified() == []
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pages")
        assert cursor.fetchone()[0] == 0
