"""Masking of held rows through the PostgreSQL and MariaDB plugins, on the real servers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest

from plugins.base import JobContext, Method, PlannedItem, Target, chunked
from plugins.mysql import MySQLPlugin
from plugins.postgresql import PostgreSQLPlugin
from tests.db.conftest import files_contain, mysql_admin, pg_relation_files
from tests.helpers.driver import DriverRun


def phone() -> str:
    """Return a random 18-character phone-like value that appears nowhere else."""
    return "1" + "".join(secrets.choice("0123456789") for _ in range(17))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "mask.key"
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(0o600)
    return path


def mask_spec(key_file: Path) -> dict:
    return {
        "key_file": str(key_file),
        "fields": {
            "phone": {"method": "keep", "keep_last": 4},
            "email": {"method": "hmac", "length": 16},
        },
    }


def run_mask(plugin_class, url: str, options: dict, spec: dict) -> DriverRun:
    """Plan every selected row for masking, then mask, compact and verify."""
    plugin = plugin_class(Target(url, options), JobContext(job_id="t", dry_run=False))
    try:
        run = DriverRun(info=plugin.describe())
        for item in plugin.discover():
            run.planned.append(PlannedItem(item, plugin.plan_mask(item, spec)))
        for batch in chunked(run.permitted, plugin_class.batch_size):
            run.results.extend(plugin.purge(batch))
        run.completion.extend(plugin.complete())
        run.evidence.extend(plugin.verify(run.permitted))
        return run
    finally:
        plugin.close()


def people_rows(count: int) -> list[tuple[int, str, str, str]]:
    return [
        (number, f"person {number}", phone(), f"user{secrets.token_hex(8)}@example.cn")
        for number in range(count)
    ]


def assert_masked(run: DriverRun, held: int) -> None:
    assert len(run.permitted) == held
    assert {entry.decision.method for entry in run.permitted} == {Method.MASK}
    assert set(run.statuses().values()) == {"purged"}
    assert run.completion
    assert {step.status for step in run.completion} == {"purged"}
    assert len(run.evidence) == held
    assert not run.unverified()
    names = {check.name for evidence in run.evidence for check in evidence.checks}
    assert names == {"row-masked", "byte-scan"}


def test_postgresql_mask_leaves_no_old_bytes(pg_database, key_file):
    rows = people_rows(40)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text, phone text, email text)"
        )
        conn.execute("CREATE INDEX people_phone ON people(phone)")
        for row in rows:
            conn.execute("INSERT INTO people VALUES (%s, %s, %s, %s)", row)
        conn.execute("CHECKPOINT")
        files = pg_relation_files(conn, "people")
    assert files_contain(files, rows[2][2].encode())

    run = run_mask(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&where=id < %s",
        {"params": [10]},
        mask_spec(key_file),
    )

    assert_masked(run, 10)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        stored = dict(
            conn.execute("SELECT id, phone FROM people WHERE id < 10").fetchall()
        )
        emails = dict(conn.execute("SELECT id, email FROM people").fetchall())
        files = pg_relation_files(conn, "people")
    for number, _, old_phone, old_email in rows[:10]:
        assert stored[number] == "*" * 14 + old_phone[-4:]
        assert len(emails[number]) == 16
        assert not files_contain(files, old_phone.encode())
        assert not files_contain(files, old_email.encode())
    # Rows outside the selection keep their values.
    assert files_contain(files, rows[20][2].encode())
    assert emails[20] == rows[20][3]


def mysql_table_file(url: str, table: str) -> str:
    with mysql_admin() as admin, admin.cursor() as cursor:
        cursor.execute("SELECT @@datadir")
        directory = cursor.fetchone()[0]
    return os.path.join(directory, url.rsplit("/", 1)[1], f"{table}.ibd")


def test_mysql_mask_leaves_no_old_bytes(mysql_database, key_file):
    rows = people_rows(30)
    name = mysql_database.rsplit("/", 1)[1]
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(100), "
            "phone VARCHAR(40), email VARCHAR(200), KEY people_phone (phone)) "
            "ENGINE=InnoDB"
        )
        for row in rows:
            cursor.execute("INSERT INTO people VALUES (%s, %s, %s, %s)", row)
        cursor.execute("FLUSH TABLES people FOR EXPORT")
        cursor.execute("UNLOCK TABLES")
    path = mysql_table_file(mysql_database, "people")
    assert files_contain([path], rows[3][2].encode())

    run = run_mask(
        MySQLPlugin,
        f"{mysql_database}?table=people&where=id < %s",
        {"params": [10]},
        mask_spec(key_file),
    )

    assert_masked(run, 10)
    with mysql_admin(name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id, phone, email FROM people")
        stored = {row[0]: row[1:] for row in cursor.fetchall()}
    for number, _, old_phone, old_email in rows[:10]:
        assert stored[number][0] == "*" * 14 + old_phone[-4:]
        assert len(stored[number][1]) == 16
        assert not files_contain([path], old_phone.encode())
        assert not files_contain([path], old_email.encode())
    assert files_contain([path], rows[20][2].encode())
    assert stored[20] == (rows[20][2], rows[20][3])


def test_mask_without_compaction_fails_scan(pg_database, key_file, monkeypatch):
    # Without VACUUM FULL the old row versions stay in the heap file, and
    # the byte scan must report them.
    rows = people_rows(12)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text, phone text, email text)"
        )
        for row in rows:
            conn.execute("INSERT INTO people VALUES (%s, %s, %s, %s)", row)
        conn.execute("CHECKPOINT")
    monkeypatch.setattr(PostgreSQLPlugin, "compaction_steps", lambda self: iter(()))

    run = run_mask(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&where=id < %s",
        {"params": [4]},
        mask_spec(key_file),
    )

    assert set(run.statuses().values()) == {"purged"}
    failed = run.unverified()
    assert failed
    assert all(
        check.name == "byte-scan"
        for evidence in failed
        for check in evidence.checks
        if not check.passed
    )


def test_mask_naming_missing_column_is_refused(pg_database, key_file):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, phone text)")
        conn.execute("INSERT INTO people VALUES (1, %s)", (phone(),))

    run = run_mask(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&all_rows=true",
        {},
        mask_spec(key_file),
    )

    assert list(run.refusal_reasons().values()) == ["invalid-mask"]
    detail = run.refused[0].decision.refusal.detail
    assert "'email'" in detail
    assert "people" in detail
