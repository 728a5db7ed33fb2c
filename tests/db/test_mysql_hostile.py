"""MariaDB purges of tables whose keys or layout the driver reads inexactly.

A purge deletes and checks rows by the key values that discovery read. A
key value that does not bind back to its row makes every statement miss
the row, so the row stays while the purge reports it already gone and the
verification finds nothing at its key. These tests check that such rows
are deleted, or that the table is rejected before planning.
"""

from __future__ import annotations

import secrets
import uuid

import pytest
import structlog

from plugins.errors import NotSupported
from plugins.mysql import MySQLPlugin
from tests.db.conftest import canary, mysql_admin
from tests.db.test_mysql_groups import (
    database_name,
    execute,
    fetch,
    make_people,
    purge_after_change,
)
from tests.helpers.cli import clean_summary, run_cli
from tests.helpers.driver import run_plugin


def make_keyed(url: str, key_type: str, keys: list[str]) -> None:
    """Create table ``items`` keyed by ``key_type`` with one row per SQL literal in ``keys``."""
    execute(
        url,
        f"CREATE TABLE items (k {key_type} PRIMARY KEY, note VARCHAR(20), "
        "selected BOOL NOT NULL) ENGINE=InnoDB",
        *[f"INSERT INTO items VALUES ({key}, 'row {n}', 1)" for n, key in enumerate(keys)],
        "INSERT INTO items (k, note, selected) VALUES (DEFAULT, 'keep', 0)",
    )


def purge_all_but_kept(url: str, where: str, options: dict) -> list[tuple]:
    """Purge the rows that ``where`` selects and return the notes of the rows left."""
    run = run_plugin(
        MySQLPlugin, f"{url}?table=items&where={where}", {"rows_per_item": 2, **options}
    )
    assert run.refused == []
    assert set(run.statuses().values()) == {"purged"}
    assert run.unverified() == []
    return fetch(url, "SELECT note FROM items ORDER BY note")


def test_float_key_read_as_text(mysql_database):
    # Without placeholders the selection comes back as text, where MariaDB
    # prints a FLOAT with six digits.
    make_keyed(mysql_database, "FLOAT NOT NULL DEFAULT 0", ["1.0000001", "0.1", "3.4e38"])

    left = purge_all_but_kept(mysql_database, "selected = 1", {})

    assert left == [("keep",)]


def test_negative_time_key(mysql_database):
    make_keyed(
        mysql_database,
        "TIME(6) NOT NULL DEFAULT '00:00:00'",
        ["'-00:00:00.000001'", "'-01:00:00.5'", "'-838:59:59'", "'12:00:00'"],
    )

    left = purge_all_but_kept(mysql_database, "selected = %s", {"params": [1]})

    assert left == [("keep",)]


def test_bit_key_with_high_bit(mysql_database):
    make_keyed(
        mysql_database,
        "BIT(64) NOT NULL DEFAULT 0",
        ["b'1'", "0xFFFFFFFFFFFFFFFF", "0x8000000000000000"],
    )

    left = purge_all_but_kept(mysql_database, "selected = %s", {"params": [1]})

    assert left == [("keep",)]


def test_set_key_read_as_text(mysql_database):
    make_keyed(
        mysql_database, "SET('a', 'b', 'c') NOT NULL DEFAULT 'c'", ["'a,b'", "'b'", "''"]
    )

    left = purge_all_but_kept(mysql_database, "selected = 1", {})

    assert left == [("keep",)]


def test_system_versioned_table_rejected(mysql_database):
    # A DELETE keeps each row of such a table as a history row.
    execute(
        mysql_database,
        "CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(20)) "
        "WITH SYSTEM VERSIONING ENGINE=InnoDB",
        "INSERT INTO items VALUES (1, 'a'), (2, 'b')",
    )

    with pytest.raises(NotSupported) as raised:
        run_plugin(
            MySQLPlugin,
            f"{mysql_database}?table=items&where=id = %s",
            {"params": [1]},
            purge=False,
        )

    assert "system-versioned" in str(raised.value)
    assert "DROP SYSTEM VERSIONING" in str(raised.value)
    assert fetch(mysql_database, "SELECT COUNT(*) FROM items FOR SYSTEM_TIME ALL") == [(2,)]


def skipped_tables(logs: list[dict]) -> dict[str, str]:
    """Map each table that the surviving-row check skipped to the logged reason."""
    return {
        entry["table"]: entry["error"]
        for entry in logs
        if entry["event"] == "surviving rows not read"
    }


def test_rejected_tables_skipped_by_live_row_check(mysql_database):
    # A value that a surviving row shares makes verification read the rows
    # of every user table, including tables the plugin rejects as targets.
    shared = canary("city")
    execute(
        mysql_database,
        "CREATE TABLE people (id INT PRIMARY KEY, city VARCHAR(100)) ENGINE=InnoDB",
        ("INSERT INTO people VALUES (1, %s), (2, %s)", (shared, shared)),
        "CREATE TABLE visits (id INT PRIMARY KEY, note VARCHAR(20)) "
        "WITH SYSTEM VERSIONING ENGINE=InnoDB",
        "CREATE TABLE legacy (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=MyISAM",
        "CREATE TABLE loose (note VARCHAR(20)) ENGINE=InnoDB",
    )

    with structlog.testing.capture_logs() as logs:
        run = run_plugin(
            MySQLPlugin, f"{mysql_database}?table=people&where=id = %s", {"params": [1]}
        )

    skipped = skipped_tables(logs)
    assert run.statuses() == {"people:[1]": "purged"}
    assert run.unverified() == []
    assert sorted(skipped) == ["legacy", "loose", "visits"]
    assert "system-versioned" in skipped["visits"]
    assert "MyISAM" in skipped["legacy"]
    assert "no primary key" in skipped["loose"]
    assert fetch(mysql_database, "SELECT id FROM people") == [(2,)]


@pytest.mark.parametrize(
    "new_code", ["C2", "c2  "], ids=["letter-case", "trailing-spaces"]
)
def test_key_rewritten_equal_in_collation(mysql_database, new_code):
    # The new key equals the planned one in the column's collation, so a
    # read by the planned key finds the changed row.
    execute(
        mysql_database,
        "CREATE TABLE codes (code VARCHAR(20) COLLATE utf8mb4_general_ci PRIMARY KEY, "
        "secret VARCHAR(40)) ENGINE=InnoDB",
        *[
            ("INSERT INTO codes VALUES (%s, %s)", (f"c{n}", f"secret {n}"))
            for n in range(1, 9)
        ],
        "INSERT INTO codes VALUES ('zz', 'not selected')",
    )

    results = purge_after_change(
        mysql_database,
        "codes",
        "code <> %s",
        ["zz"],
        lambda: execute(
            mysql_database,
            ("UPDATE codes SET code = %s WHERE code = 'c2'", (new_code,)),
        ),
    )

    changed_group = results['codes:["c1"]..["c4"]']
    assert changed_group.status == "failed"
    assert 'Kept rows: codes:["c2"].' in changed_group.detail
    assert "already gone" not in changed_group.detail
    assert results['codes:["c5"]..["c8"]'].detail == "deleted 4 rows"
    assert fetch(mysql_database, "SELECT code, secret FROM codes ORDER BY code") == [
        (new_code, "secret 2"),
        ("zz", "not selected"),
    ]


@pytest.mark.timeout(60)
def test_row_locked_by_other_session(mysql_database):
    # The lock is on a row after the first in key order, so the locking
    # re-read has sent rows before its lock wait fails.
    make_people(mysql_database)
    holder = mysql_admin(database_name(mysql_database))
    holder.begin()
    with holder.cursor() as cursor:
        cursor.execute("SELECT * FROM people WHERE id = 6 FOR UPDATE")
    url = f"{mysql_database}?table=people&where=id <= %s"
    options = {"params": [8], "rows_per_item": 4, "lock_timeout": 1}

    try:
        blocked = run_plugin(MySQLPlugin, url, options)
    finally:
        holder.rollback()
        holder.close()
    rerun = run_plugin(MySQLPlugin, url, options)

    assert set(blocked.statuses().values()) == {"failed"}
    assert all("timed out" in result.detail for result in blocked.results)
    assert set(rerun.statuses().values()) == {"purged"}
    assert rerun.unverified() == []
    assert fetch(mysql_database, "SELECT id FROM people ORDER BY id") == [
        (9,),
        (10,),
        (11,),
        (12,),
    ]


def test_delete_trigger_named_in_residual(mysql_database):
    # The trigger copies each deleted row to a table that the purge does
    # not touch, so the copy stays after the purge.
    make_people(mysql_database)
    execute(
        mysql_database,
        "CREATE TABLE archive (id INT, email VARCHAR(200)) ENGINE=InnoDB",
        "CREATE TRIGGER people_archive AFTER DELETE ON people FOR EACH ROW "
        "INSERT INTO archive VALUES (OLD.id, OLD.email)",
    )

    run = run_plugin(
        MySQLPlugin,
        f"{mysql_database}?table=people&where=id <= %s",
        {"params": [8], "rows_per_item": 4},
        purge=False,
    )

    named = [line for line in run.info.residual if "people_archive" in line]
    assert len(named) == 1
    assert "neither purged nor scanned" in named[0]


@pytest.mark.parametrize("where", ["joined > 0", "joined > %s"], ids=["text", "binary"])
def test_year_column_purged(mysql_database, where):
    # Statements with values return binary results, the others text.
    execute(
        mysql_database,
        "CREATE TABLE members (id INT PRIMARY KEY, joined YEAR, born YEAR) ENGINE=InnoDB",
        *[
            ("INSERT INTO members VALUES (%s, %s, %s)", (n, 1901 + n, 2155))
            for n in range(1, 9)
        ],
        "INSERT INTO members VALUES (9, 0, 2000)",
    )
    options = {"params": [0]} if "%s" in where else {}

    run = run_plugin(
        MySQLPlugin,
        f"{mysql_database}?table=members&where={where}",
        {"rows_per_item": 4, **options},
    )

    assert set(run.statuses().values()) == {"purged"}
    assert run.unverified() == []
    assert fetch(mysql_database, "SELECT id FROM members") == [(9,)]


@pytest.mark.parametrize(
    ("key_type", "zero"),
    [("DATE", "'0000-00-00'"), ("DATETIME", "'0000-00-00 00:00:00'"), ("TIMESTAMP", "0")],
    ids=["date", "datetime", "timestamp"],
)
@pytest.mark.parametrize("rows_per_item", [1, 4])
def test_zero_date_key_refused(mysql_database, key_type, zero, rows_per_item):
    # The driver reads the zero date 0000-00-00 as None, so no statement
    # could address this row by its key.
    execute(
        mysql_database,
        "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
        f"CREATE TABLE visits (day {key_type} NOT NULL PRIMARY KEY, note VARCHAR(20)) "
        "ENGINE=InnoDB",
        f"INSERT INTO visits VALUES ({zero}, 'zero'), ('2024-05-01', 'real'), "
        "('2024-05-02', 'real'), ('2024-06-01', 'keep')",
    )
    url = f"{mysql_database}?table=visits&where=note <> %s"
    options = {"params": ["keep"], "rows_per_item": rows_per_item}

    run = run_plugin(MySQLPlugin, url, options)

    [refused] = run.refused
    detail = refused.decision.refusal.detail
    assert refused.decision.refusal.reason == "not-supported"
    assert "1 selected row of visits has the zero date 0000-00-00" in detail
    assert "in key column day" in detail
    assert "NULL" not in detail
    assert "give those rows real dates" in detail
    assert "YEAR(`day`) > 0 AND MONTH(`day`) > 0 AND DAYOFMONTH(`day`) > 0" in detail
    assert set(run.statuses().values()) == {"purged"}
    assert run.unverified() == []
    assert fetch(mysql_database, "SELECT note FROM visits ORDER BY note") == [
        ("keep",),
        ("zero",),
    ]


def test_zero_date_key_excluded_by_advice(mysql_database):
    # The WHERE condition that the refusal suggests leaves out the zero date
    # and a date with a zero day.
    execute(
        mysql_database,
        "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
        "CREATE TABLE visits (day DATETIME PRIMARY KEY, note VARCHAR(20)) ENGINE=InnoDB",
        "INSERT INTO visits VALUES ('0000-00-00 00:00:00', 'zero'), "
        "('2024-05-00 10:00:00', 'zero day'), ('2024-05-01 10:00:00', 'real')",
    )
    where = "note <> %s AND YEAR(`day`) > 0 AND MONTH(`day`) > 0 AND DAYOFMONTH(`day`) > 0"

    run = run_plugin(
        MySQLPlugin, f"{mysql_database}?table=visits&where={where}", {"params": ["keep"]}
    )

    assert run.refused == []
    assert set(run.statuses().values()) == {"purged"}
    assert fetch(mysql_database, "SELECT note FROM visits ORDER BY note") == [
        ("zero",),
        ("zero day",),
    ]


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_varbinary_key_rows_purged(tmp_path, mysql_database, rows_per_item):
    # The purge reads each key back from the job journal, which stores JSON.
    # The keys are UUIDs in their 16-byte form, as UUID_TO_BIN stores them.
    first, second, kept = (uuid.uuid4().bytes for _ in range(3))
    execute(
        mysql_database,
        "CREATE TABLE tokens (id VARBINARY(16) PRIMARY KEY, note VARCHAR(60), "
        "selected BOOL NOT NULL) ENGINE=InnoDB",
        (
            "INSERT INTO tokens VALUES (%s, %s, 1), (%s, %s, 1), (%s, %s, 0)",
            (first, canary("first"), second, canary("second"), kept, "keep"),
        ),
    )
    url = (
        f"{mysql_database}?table=tokens&where=selected = 1"
        f"&rows_per_item={rows_per_item}"
    )

    result = run_cli(tmp_path / "state", "purge", "--yes", url)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert clean_summary(2 // rows_per_item) in result.stdout
    assert fetch(mysql_database, "SELECT id, note FROM tokens") == [(kept, "keep")]


def test_unreadable_table_skipped_by_live_row_check(mysql_database):
    # The purging user may not read secrets, which shares a value with a
    # surviving row, so verification reads the rows of the other tables.
    shared = canary("city")
    name = mysql_database.rsplit("/", 1)[1]
    user = f"lethe_reader_{secrets.token_hex(4)}"
    execute(
        mysql_database,
        "CREATE TABLE people (id INT PRIMARY KEY, city VARCHAR(100)) ENGINE=InnoDB",
        ("INSERT INTO people VALUES (1, %s), (2, %s)", (shared, shared)),
        "CREATE TABLE secrets (id INT PRIMARY KEY, note VARCHAR(100)) ENGINE=InnoDB",
        ("INSERT INTO secrets VALUES (1, %s)", (shared,)),
    )
    with mysql_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE USER '{user}'@'127.0.0.1'")
        try:
            # PROCESS, RELOAD and LOCK TABLES let the purge wait for InnoDB's
            # purge and flush the rebuilt table, so the scan reads its rows.
            cursor.execute(f"GRANT PROCESS, RELOAD ON *.* TO '{user}'@'127.0.0.1'")
            cursor.execute(f"GRANT LOCK TABLES ON `{name}`.* TO '{user}'@'127.0.0.1'")
            cursor.execute(f"GRANT ALL ON `{name}`.`people` TO '{user}'@'127.0.0.1'")
            # Any privilege lists the table in information_schema.TABLES.
            cursor.execute(
                f"GRANT INSERT ON `{name}`.`secrets` TO '{user}'@'127.0.0.1'"
            )
            url = f"mysql://{user}@127.0.0.1:3306/{name}?table=people&where=id = %s"

            with structlog.testing.capture_logs() as logs:
                run = run_plugin(MySQLPlugin, url, {"params": [1]})
        finally:
            cursor.execute(f"DROP USER '{user}'@'127.0.0.1'")

    skipped = skipped_tables(logs)
    assert run.statuses() == {"people:[1]": "purged"}
    assert run.unverified() == []
    assert "secrets" in skipped
    assert "denied" in skipped["secrets"]
    assert fetch(mysql_database, "SELECT id FROM people") == [(2,)]
