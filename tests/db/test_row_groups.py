"""Items that stand for many rows: planning, purge, partial failure, resume."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from plugins import _rows
from plugins.base import JobContext, PlannedItem, Target, plugin_batches
from plugins.errors import InvalidTarget
from plugins.mysql import MySQLPlugin
from plugins.postgresql import PostgreSQLPlugin
from plugins.sqlite import SQLitePlugin
from tests.db.conftest import (
    canary,
    files_contain,
    mysql_admin,
    pg_admin,
    pg_relation_files,
    sqlite_files,
)
from tests.helpers.cli import run_cli
from tests.helpers.driver import run_plugin

def sqlite_people(path: Path, rows: int) -> dict[int, str]:
    """Create table people with ``rows`` rows, each holding a canary; return them."""
    markers = {number: canary(f"person{number}") for number in range(1, rows + 1)}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO people VALUES (?, ?)", markers.items())
    conn.execute("COMMIT")
    conn.close()
    return markers


def sqlite_url(path: Path, where: str = "id <= ?") -> str:
    return f"sqlite://{path}?table=people&where={where}"


def test_large_selection_grouped(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    markers = sqlite_people(path, 3000)

    run = run_plugin(SQLitePlugin, sqlite_url(path), {"params": [2500]})

    assert [entry.item.kind for entry in run.planned] == ["rows"] * 3
    assert [entry.item.attributes["rows"] for entry in run.planned] == [1000, 1000, 500]
    assert run.planned[0].item.key == "people:[1]..[1000]"
    assert run.planned[2].item.label == "500 rows of people, keys [2001]..[2500]"
    assert any("items of up to 1000 rows" in note for note in run.info.notes)
    assert set(run.statuses().values()) == {"purged"}
    assert run.results[0].detail == "deleted 1000 rows"
    assert not run.unverified()
    for number in (1, 1000, 1001, 2500):
        assert not files_contain(sqlite_files(path), markers[number].encode())
    assert files_contain(sqlite_files(path), markers[2501].encode())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 500


def test_small_selection_row_items(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 3000)

    run = run_plugin(SQLitePlugin, sqlite_url(path), {"params": [1000]}, purge=False)

    assert len(run.planned) == 1000
    assert {entry.item.kind for entry in run.planned} == {"row"}


def test_rows_per_item_option(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 20)

    run = run_plugin(
        SQLitePlugin, sqlite_url(path), {"params": [10], "rows_per_item": 4}, purge=False
    )

    assert [entry.item.attributes["rows"] for entry in run.planned] == [4, 4, 2]


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_invalid_rows_per_item(tmp_path: Path, value: str) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 3)

    with pytest.raises(InvalidTarget, match="'rows_per_item' must be a positive whole number"):
        run_plugin(SQLitePlugin, sqlite_url(path), {"params": [2], "rows_per_item": value})


def purge_after_change(plugin, change) -> list:
    """Plan every item with ``plugin``, call ``change``, then purge in batches."""
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        change()
        return [
            result
            for batch in plugin_batches(planned, plugin)
            for result in plugin.purge(batch)
        ]
    finally:
        plugin.close()


def test_changed_row_fails_its_group(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    markers = sqlite_people(path, 12)
    target = Target(sqlite_url(path), {"params": [10], "rows_per_item": 4})

    def change() -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE people SET email = 'changed' WHERE id = 6")

    results = purge_after_change(SQLitePlugin(target, JobContext(dry_run=False)), change)

    statuses = {result.key: result.status for result in results}
    assert statuses == {
        "people:[1]..[4]": "purged",
        "people:[5]..[8]": "failed",
        "people:[9]..[10]": "purged",
    }
    detail = results[1].detail
    assert "1 of 4 rows were kept and the other 3 were deleted" in detail
    assert "Kept rows: people:[6]." in detail
    assert detail.lower().count("plan again") == 1
    assert markers[5] not in detail
    with sqlite3.connect(path) as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM people ORDER BY id")]
    assert left == [6, 11, 12]

    rerun = run_plugin(SQLitePlugin, sqlite_url(path), {"params": [10]})

    assert rerun.statuses() == {"people:[6]": "purged"}
    assert not rerun.unverified()


def test_referenced_table_keeps_row_items(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 30)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
            "person INTEGER REFERENCES people(id) ON DELETE CASCADE)"
        )
        conn.execute("INSERT INTO notes VALUES (1, 2)")

    run = run_plugin(
        SQLitePlugin, sqlite_url(path), {"params": [20], "rows_per_item": 5}, purge=False
    )

    assert {entry.item.kind for entry in run.planned} == {"row"}
    assert len(run.planned) == 21
    assert any("rows_per_item is ignored" in note for note in run.info.notes)


def test_masking_grouped_rows_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 10)
    plugin = SQLitePlugin(
        Target(sqlite_url(path), {"params": [8], "rows_per_item": 4}), JobContext()
    )
    try:
        plugin.describe()
        decisions = [plugin.plan_mask(item, {"fields": {"email": "hash"}}) for item in plugin.discover()]
    finally:
        plugin.close()

    assert [decision.refusal.reason for decision in decisions] == ["unsupported"] * 2
    assert "set rows_per_item: 1" in decisions[0].refusal.detail


def test_postgresql_groups_leave_no_canary(pg_database: str) -> None:
    import psycopg

    markers = {number: canary(f"person{number}") for number in range(1, 2601)}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO people VALUES (%s, %s)", list(markers.items()))
        conn.execute("CHECKPOINT")
        files = pg_relation_files(conn, "people")
    assert files_contain(files, markers[7].encode())

    run = run_plugin(
        PostgreSQLPlugin, f"{pg_database}?table=people&where=id <= %s", {"params": [2500]}
    )

    assert [entry.item.attributes["rows"] for entry in run.planned] == [1000, 1000, 500]
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        files = pg_relation_files(conn, "people")
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 100
    for number in (1, 1500, 2500):
        assert not files_contain(files, markers[number].encode())
    assert files_contain(files, markers[2501].encode())


def test_mysql_groups_purged(mysql_database: str) -> None:
    name = mysql_database.rsplit("/", 1)[1]
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(200)) ENGINE=InnoDB")
        for number in range(1, 21):
            cursor.execute("INSERT INTO people VALUES (%s, %s)", (number, canary(str(number))))

    run = run_plugin(
        MySQLPlugin,
        f"{mysql_database}?table=people&where=id <= %s",
        {"params": [15], "rows_per_item": 6},
    )

    assert [entry.item.attributes["rows"] for entry in run.planned] == [6, 6, 3]
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM people ORDER BY id")
        assert [row[0] for row in cursor.fetchall()] == [16, 17, 18, 19, 20]


def test_crash_then_resume_groups(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    # Items of up to 1000 rows, in two full batches and one of four items.
    per_batch = SQLitePlugin.batch_size // 1000
    items = 2 * per_batch + 4
    selected = items * 1000
    markers = sqlite_people(path, selected + 1000)
    state_dir = tmp_path / "state"
    target = sqlite_url(path) + f"&param={selected}"

    first_plan = run_cli(state_dir, "plan", target, "--json")
    second_plan = run_cli(state_dir, "plan", target, "--json")
    crashed = run_cli(state_dir, "purge", "--yes", target, crash_after=3)

    assert first_plan.returncode == 0, first_plan.stderr
    assert _plan_hash(first_plan.stdout) == _plan_hash(second_plan.stdout)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    job_id, states = _purge_job_states(state_dir)
    assert states == {"purging": per_batch, "planned": items - per_batch}

    resumed = run_cli(state_dir, "purge", "--resume", job_id)

    assert resumed.returncode in (0, 1), resumed.stdout + resumed.stderr
    assert _purge_job_states(state_dir) == (job_id, {"verified": items})
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MIN(id), COUNT(*) FROM people").fetchone() == (
            selected + 1,
            1000,
        )
    for number in (1, per_batch * 1000, selected):
        assert not files_contain(sqlite_files(path), markers[number].encode())
    assert files_contain(sqlite_files(path), markers[selected + 1].encode())


def _purge_job_states(state_dir: Path) -> tuple[str, dict[str, int]]:
    with sqlite3.connect(state_dir / "journal.sqlite") as journal:
        [(job_id,)] = journal.execute("SELECT id FROM jobs WHERE dry_run = 0").fetchall()
        states = dict(
            journal.execute(
                "SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state", (job_id,)
            )
        )
    return job_id, states


def _plan_hash(output: str) -> str:
    import json

    return json.loads(output)["plan_hash"]


def purge_counting_rereads(plugin: SQLitePlugin, planned: list, monkeypatch) -> tuple[list, int]:
    """Purge ``planned`` with ``plugin`` and count the row re-reads it makes."""
    calls = []
    original = SQLitePlugin._rows_by_key

    def counted(self, table, keys, lock=False):
        calls.append(len(keys))
        return original(self, table, keys, lock)

    monkeypatch.setattr(SQLitePlugin, "_rows_by_key", counted)
    results = [r for batch in plugin_batches(planned, plugin) for r in plugin.purge(batch)]
    return results, len(calls)


def test_unchanged_rows_not_reread(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "app.db"
    sqlite_people(path, 30)
    target = Target(sqlite_url(path), {"params": [20], "rows_per_item": 5})
    plugin = SQLitePlugin(target, JobContext(dry_run=False))
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        results, rereads = purge_counting_rereads(plugin, planned, monkeypatch)
    finally:
        plugin.close()

    assert rereads == 0
    assert {result.status for result in results} == {"purged"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MIN(id) FROM people").fetchone()[0] == 21


def test_other_process_rows_reread(tmp_path: Path, monkeypatch) -> None:
    """A plugin that did not discover the rows itself, as after a resume, checks them."""
    path = tmp_path / "app.db"
    sqlite_people(path, 30)
    target = Target(sqlite_url(path), {"params": [20], "rows_per_item": 5})
    planner = SQLitePlugin(target, JobContext(dry_run=True))
    try:
        planner.describe()
        planned = [PlannedItem(item, planner.plan_item(item)) for item in planner.discover()]
    finally:
        planner.close()
    resumed = SQLitePlugin(target, JobContext(dry_run=False))
    try:
        resumed.describe()
        results, rereads = purge_counting_rereads(resumed, planned, monkeypatch)
    finally:
        resumed.close()

    assert rereads > 0
    assert {result.status for result in results} == {"purged"}


def test_postgresql_changed_row_fails_only_its_group(pg_database: str) -> None:
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people SELECT i, 'person' || i FROM generate_series(1, 12) i")
    target = Target(
        f"{pg_database}?table=people&where=id <= %s", {"params": [10], "rows_per_item": 4}
    )

    def change() -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE people SET email = 'changed' WHERE id = 6")
            conn.execute("DELETE FROM people WHERE id = 9")

    results = purge_after_change(PostgreSQLPlugin(target, JobContext(dry_run=False)), change)

    by_key = {result.key: result for result in results}
    assert by_key["public.people:[1]..[4]"].detail == "deleted 4 rows"
    assert by_key["public.people:[9]..[10]"].status == "purged"
    assert by_key["public.people:[9]..[10]"].detail == (
        "deleted 1 row; 1 was already gone when the purge ran"
    )
    assert by_key["public.people:[5]..[8]"].status == "failed"
    # The three rows the grouped statement took count as deleted, not as
    # already gone.
    assert "1 of 4 rows were kept and the other 3 were deleted" in by_key["public.people:[5]..[8]"].detail
    assert "Kept rows: public.people:[6]." in by_key["public.people:[5]..[8]"].detail
    with psycopg.connect(pg_database, autocommit=True) as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM people ORDER BY id")]
    assert left == [6, 11, 12]


def test_group_larger_than_statement_parameters(tmp_path: Path) -> None:
    # SQLite caps a statement at 32,766 parameters; one item of 40,000 rows
    # is read back by key in parts.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40010) "
        "INSERT INTO people SELECT i, 'person' || i || '@example.org' FROM n"
    )
    conn.close()

    run = run_plugin(
        SQLitePlugin, sqlite_url(path), {"params": [40000], "rows_per_item": 40000}
    )

    assert [entry.item.attributes["rows"] for entry in run.planned] == [40000]
    assert run.statuses() == {"people:[1]..[40000]": "purged"}
    assert not run.unverified()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 10


def test_postgresql_partitioned_and_keyless_groups(pg_database: str, monkeypatch) -> None:
    # The grouped delete takes every row of a partitioned table, where it
    # compares row versions (xmin), and of a table keyed by ctid, where it
    # compares digests.
    import psycopg

    def row_by_row(*_args: object) -> None:
        pytest.fail("the grouped delete left rows to the row-by-row path")

    monkeypatch.setattr(PostgreSQLPlugin, "_purge_table", row_by_row)

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)"
        )
        conn.execute("CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (1500)")
        conn.execute(
            "CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (1500) TO (9999)"
        )
        conn.execute("INSERT INTO events SELECT i, 'event' || i FROM generate_series(1, 3000) i")
        conn.execute("CREATE TABLE notes (id bigint, body text)")
        conn.execute("INSERT INTO notes SELECT i, 'note' || i FROM generate_series(1, 3000) i")

    for table in ("events", "notes"):
        run = run_plugin(
            PostgreSQLPlugin, f"{pg_database}?table={table}&where=id <= %s", {"params": [2500]}
        )

        assert sum(entry.item.attributes["rows"] for entry in run.planned) == 2500
        assert set(run.statuses().values()) == {"purged"}
        assert not run.unverified()
        with psycopg.connect(pg_database, autocommit=True) as conn:
            left = conn.execute(f"SELECT MIN(id), COUNT(*) FROM {table}").fetchone()
        assert left == (2501, 500)


def test_postgresql_rewritten_files_scanned_early(pg_database: str, tmp_path: Path, monkeypatch) -> None:
    # The new files of a rewritten table are scanned while the statistics
    # rewrite and the checkpoint run, and verification uses those hits. A
    # planted copy of a purged value, found early and removed before
    # verification, must still fail the check.
    import psycopg

    markers = {number: canary(f"person{number}") for number in range(1, 2101)}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO people VALUES (%s, %s)", list(markers.items()))
    planted = tmp_path / "planted.bin"
    planted.write_bytes(b"\0" * 100 + markers[5].encode() + b"\0" * 100)
    relation_files = PostgreSQLPlugin._relation_files
    switch_wal = PostgreSQLPlugin._switch_wal

    def with_planted(self: PostgreSQLPlugin, statistics: bool) -> list[str]:
        return [*relation_files(self, statistics), str(planted)]

    def switch_then_remove(self: PostgreSQLPlugin) -> object:
        result = switch_wal(self)
        planted.unlink()
        return result

    monkeypatch.setattr(PostgreSQLPlugin, "_relation_files", with_planted)
    monkeypatch.setattr(PostgreSQLPlugin, "_switch_wal", switch_then_remove)

    run = run_plugin(
        PostgreSQLPlugin, f"{pg_database}?table=people&where=id <= %s", {"params": [2000]}
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not planted.exists()
    failed = {evidence.key for evidence in run.unverified()}
    assert failed == {"public.people:[1]..[1000]"}


def test_sqlite_change_during_discovery_kept(tmp_path: Path) -> None:
    # In WAL mode another connection can commit while discovery streams the
    # rows from an older snapshot, and the purge must still notice it.
    path = tmp_path / "app.db"
    sqlite_people(path, 12)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    target = Target(sqlite_url(path), {"params": [10], "rows_per_item": 4})
    plugin = SQLitePlugin(target, JobContext(dry_run=False))
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        plugin.describe()
        planned = []
        for item in plugin.discover():
            planned.append(PlannedItem(item, plugin.plan_item(item)))
            if len(planned) == 1:
                writer.execute("UPDATE people SET email = 'changed' WHERE id = 6")
        results = [
            result
            for batch in plugin_batches(planned, plugin)
            for result in plugin.purge(batch)
        ]
    finally:
        plugin.close()
        writer.close()

    by_key = {result.key: result for result in results}
    assert by_key["people:[5]..[8]"].status == "failed"
    assert by_key["people:[1]..[4]"].status == "purged"
    assert "Kept rows: people:[6]." in by_key["people:[5]..[8]"].detail
    with sqlite3.connect(path) as conn:
        changed = conn.execute("SELECT email FROM people WHERE id = 6").fetchone()
    assert changed == ("changed",)


def test_sqlite_key_with_nul_character(tmp_path: Path) -> None:
    # A JSON array of keys would carry "a\u0000b" to SQLite as "a".
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE people (code TEXT PRIMARY KEY NOT NULL, email TEXT, n INT)"
        )
        rows = [("a\0b", canary("selected"), 1), ("c", canary("selected"), 2)]
        rows.append(("a", canary("kept"), 99))
        conn.executemany("INSERT INTO people VALUES (?, ?, ?)", rows)

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=people&where=n < ?",
        {"params": [10], "rows_per_item": 5},
    )

    assert run.statuses() == {'people:["a\\u0000b"]..["c"]': "purged"}
    assert not run.unverified()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT code FROM people").fetchall() == [("a",)]


def test_sqlite_trigger_keeps_grouped_delete(tmp_path: Path, monkeypatch) -> None:
    # An audit trigger writes a row per delete, and the grouped delete
    # counts only the rows its own statement deleted.
    path = tmp_path / "app.db"
    sqlite_people(path, 12)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE audit (person INTEGER, at TEXT)")
        conn.execute(
            "CREATE TRIGGER people_audit AFTER DELETE ON people "
            "BEGIN INSERT INTO audit VALUES (old.id, 'now'); END"
        )

    def row_by_row(*_args: object) -> None:
        pytest.fail("the grouped delete left rows to the row-by-row path")

    monkeypatch.setattr(SQLitePlugin, "_purge_table", row_by_row)

    run = run_plugin(SQLitePlugin, sqlite_url(path), {"params": [10], "rows_per_item": 4})

    assert set(run.statuses().values()) == {"purged"}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 10


def test_sqlite_row_a_trigger_deleted_already_gone(tmp_path: Path, monkeypatch) -> None:
    # Deleting row 2 makes a trigger of the same connection delete row 6 of
    # the next batch. That batch's rows are then read again, not assumed to
    # be as discovery left them.
    path = tmp_path / "app.db"
    sqlite_people(path, 12)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER people_pair AFTER DELETE ON people WHEN old.id = 2 "
            "BEGIN DELETE FROM people WHERE id = 6; END"
        )
    monkeypatch.setattr(SQLitePlugin, "batch_size", 4)

    run = run_plugin(SQLitePlugin, sqlite_url(path), {"params": [10], "rows_per_item": 4})

    details = {result.key: result.detail for result in run.results}
    assert details["people:[5]..[8]"] == (
        "deleted 3 rows; 1 was already gone when the purge ran"
    )
    assert details["people:[1]..[4]"] == "deleted 4 rows"
    assert not run.unverified()


def test_postgresql_keyless_groups_after_vacuum_full(pg_database: str) -> None:
    # VACUUM FULL packs the rows left after another session's delete into
    # the first pages, keeping their xmin. Rows loaded in one transaction
    # then sit at planned ctids with the planned xmin, but are other rows.
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (n int, body text)")
        conn.execute("INSERT INTO notes SELECT i, 'note' || i FROM generate_series(1, 3000) i")
    target = Target(f"{pg_database}?table=notes&where=n <= %s", {"params": [2000]})

    def change() -> None:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("DELETE FROM notes WHERE n <= 500")
            conn.execute("VACUUM FULL notes")

    results = purge_after_change(PostgreSQLPlugin(target, JobContext(dry_run=False)), change)

    assert {result.status for result in results} == {"failed"}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        left = conn.execute("SELECT MIN(n), MAX(n), COUNT(*) FROM notes").fetchone()
    assert left == (501, 3000, 2500)
