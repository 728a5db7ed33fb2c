"""PostgreSQL tables without a primary key: rows addressed by ctid."""

from __future__ import annotations

import psycopg
import pytest

from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import NotSupported
from plugins.postgresql import PostgreSQLPlugin
from tests.db.conftest import canary, files_contain, pg_relation_files
from tests.helpers.driver import run_plugin


def fill_log(url: str, rows: int = 40) -> dict[int, str]:
    """Create ``events`` without a primary key; return the marker of each row."""
    markers = {number: canary(f"e{number}") for number in range(rows)}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (seq int, body text)")
        conn.execute("CREATE INDEX events_body ON events(body)")
        for number, marker in markers.items():
            conn.execute("INSERT INTO events VALUES (%s, %s)", (number, marker))
        conn.execute("CHECKPOINT")
    return markers


def plan(url: str, where: str, params: list) -> tuple[PostgreSQLPlugin, list[PlannedItem]]:
    plugin = PostgreSQLPlugin(
        Target(f"{url}?table=events&where={where}", {"params": params}),
        JobContext(job_id="test", dry_run=False),
    )
    plugin.describe()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    return plugin, planned


def test_table_without_key_purged_by_ctid(pg_database):
    markers = fill_log(pg_database)

    run = run_plugin(PostgreSQLPlugin, f"{pg_database}?table=events&where=seq < %s", {"params": [10]})

    assert len(run.permitted) == 10
    assert all(entry.item.identity["key"][0].startswith("(") for entry in run.permitted)
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 30
        files = pg_relation_files(conn, "public.events")
    for number in range(10):
        assert not files_contain(files, markers[number].encode())
    assert files_contain(files, markers[20].encode())


def test_updated_row_is_not_deleted(pg_database):
    markers = fill_log(pg_database, rows=6)
    plugin, planned = plan(pg_database, "seq < %s", [3])
    try:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            # Same values, new ctid: the planned ctid now names a dead version.
            conn.execute("UPDATE events SET seq = seq WHERE seq = 1")

        results = {result.key: result for result in plugin.purge(planned)}
    finally:
        plugin.close()

    moved = [entry.item.key for entry in planned if "moved" in results[entry.item.key].detail]
    assert len(moved) == 1
    assert results[moved[0]].status == "failed"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        left = conn.execute("SELECT body FROM events WHERE seq < 3").fetchall()
    assert left == [(markers[1],)]


def test_deleted_row_counts_as_gone(pg_database):
    fill_log(pg_database, rows=6)
    plugin, planned = plan(pg_database, "seq < %s", [3])
    try:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("DELETE FROM events WHERE seq = 2")

        results = list(plugin.purge(planned))
    finally:
        plugin.close()

    assert {result.status for result in results} == {"purged"}
    assert sum(result.detail == "already gone when the purge ran" for result in results) == 1


def test_rewritten_table_fails_changed_rows(pg_database):
    fill_log(pg_database, rows=6)
    plugin, planned = plan(pg_database, "seq >= %s", [3])
    try:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            # VACUUM FULL packs the surviving rows into new ctids.
            conn.execute("DELETE FROM events WHERE seq < 3")
            conn.execute("VACUUM FULL events")

        results = list(plugin.purge(planned))
    finally:
        plugin.close()

    assert {result.status for result in results} == {"failed"}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3


def test_partitioned_table_without_key_rejected(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (seq int, body text) PARTITION BY RANGE (seq)")
        conn.execute("CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (10)")

    with pytest.raises(NotSupported, match="partitioned table public.events"):
        run_plugin(PostgreSQLPlugin, f"{pg_database}?table=events&where=seq < %s", {"params": [3]}, purge=False)
