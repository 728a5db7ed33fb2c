"""PostgreSQL plugin against the real server on 127.0.0.1:5432."""

from __future__ import annotations

import hashlib
import os
import secrets
import urllib.parse
from pathlib import Path

import psycopg
import pytest

from plugins import _rows, scan
from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import AccessDenied, InvalidTarget, TargetNotFound, TargetUnreachable
from plugins.postgresql import PostgreSQLPlugin
from tests.db.conftest import (
    canary,
    files_contain,
    load_chinook_postgresql,
    pg_admin,
    pg_relation_files,
)
from tests.helpers.cli import clean_summary, run_cli
from tests.helpers.driver import run_plugin


def target(url: str, table: str, where: str = "") -> str:
    query = f"?table={table}"
    if where:
        query += f"&where={where}"
    return url + query


def fill_people(url: str, rows: int = 60) -> dict[str, str]:
    """Create ``people`` with an index, a TOAST column and a frequent value."""
    frequent = canary("country")
    markers = {"frequent": frequent, "name": canary("name"), "bio": canary("bio")}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE people (id int PRIMARY KEY, name text, country text, bio text)"
        )
        conn.execute("CREATE INDEX people_name ON people(name)")
        # Stored uncompressed so the planted bytes sit in the TOAST file as is.
        conn.execute("ALTER TABLE people ALTER COLUMN bio SET STORAGE EXTERNAL")
        for number in range(rows):
            selected = number % 3 == 0
            conn.execute(
                "INSERT INTO people VALUES (%s, %s, %s, %s)",
                (
                    number,
                    markers["name"] if number == 0 else f"person {number}",
                    frequent if selected else f"country {number % 7}",
                    (markers["bio"] if selected else "b") * 300,
                ),
            )
        conn.execute("ANALYZE people")
        conn.execute("CHECKPOINT")
    return markers


def statistics_files(conn: psycopg.Connection) -> list[str]:
    return pg_relation_files(conn, "pg_catalog.pg_statistic")


def test_table_index_toast_statistics(pg_database):
    markers = fill_people(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        stats = conn.execute(
            "SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'people' "
            "AND attname = 'country'"
        ).fetchone()[0]
        assert markers["frequent"] in stats

    run = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "people", "country = %s"),
        {"params": [markers["frequent"]]},
    )

    assert len(run.permitted) == 20
    assert set(run.statuses().values()) == {"purged"}
    assert [step.status for step in run.completion] == ["purged"] * 5
    assert not run.unverified()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        files = pg_relation_files(conn, "people") + statistics_files(conn)
        assert conn.execute("SELECT COUNT(*) FROM people").fetchone()[0] == 40
    for marker in markers.values():
        assert not files_contain(files, marker.encode())


def test_residual_report(pg_database):
    fill_people(pg_database, rows=6)

    run = run_plugin(
        PostgreSQLPlugin, target(pg_database, "people", "id = %s"), {"params": [1]}, purge=False
    )

    residual = " ".join(run.info.residual)
    notes = " ".join(run.info.notes)
    assert "pg_wal" in residual
    assert "server log" in residual
    assert "backups" in residual
    assert "archive_mode=" in notes
    assert "replication slot" in notes
    assert "TOAST table" in notes


def test_plain_delete_leaves_toast_canary(pg_database):
    markers = fill_people(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DELETE FROM people WHERE country = %s", (markers["frequent"],))
        conn.execute("CHECKPOINT")
        files = pg_relation_files(conn, "people") + statistics_files(conn)

    assert files_contain(files, markers["bio"].encode())


def server_log_path(conn: psycopg.Connection) -> Path:
    """Return the file the server logs to.

    With logging_collector off, Debian's pg_ctlcluster sends the server's
    stderr to /var/log/postgresql/postgresql-MAJOR-main.log.
    """
    current = conn.execute("SELECT pg_current_logfile()").fetchone()[0]
    if current:
        directory = conn.execute("SHOW data_directory").fetchone()[0]
        return Path(directory, current)
    major = conn.execute("SHOW server_version_num").fetchone()[0][:2]
    return Path(f"/var/log/postgresql/postgresql-{major}-main.log")


def test_failed_delete_logs_no_value(pg_database):
    fill_people(pg_database, rows=6)
    secret = canary("d6")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("UPDATE people SET name = %s WHERE id = 1", (secret,))
        conn.execute("CREATE TABLE visits (id int PRIMARY KEY, person int REFERENCES people)")
        log = server_log_path(conn)
    assert log.exists()
    start = log.stat().st_size
    plugin = PostgreSQLPlugin(
        Target(target(pg_database, "people", "name = %s"), {"params": [secret]}),
        JobContext(dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        # A reference appears after planning, so the DELETE fails on the constraint.
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("INSERT INTO visits VALUES (1, 1)")
        results = list(plugin.purge(planned))
    finally:
        plugin.close()
    logged = log.read_bytes()[start:]

    assert [result.status for result in results] == ["failed"]
    assert "constraint" in results[0].detail
    assert secret not in results[0].detail
    assert b"violates foreign key constraint" in logged
    assert secret.encode() not in logged


def test_chinook_customer_with_invoices(pg_database):
    load_chinook_postgresql(pg_database)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        customer = conn.execute("SELECT * FROM customer WHERE customer_id = 12").fetchone()
        others_before = conn.execute(
            "SELECT * FROM customer WHERE customer_id <> 12 ORDER BY customer_id"
        ).fetchall()

    run = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "customer", "customer_id = %s"),
        {"params": [12], "delete_dependents": True},
    )

    assert not run.unverified()
    tables = {entry.item.attributes["table"] for entry in run.permitted}
    assert tables == {"public.customer", "public.invoice", "public.invoice_line"}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        files = []
        for table in ("customer", "invoice", "invoice_line"):
            files += pg_relation_files(conn, table)
        others_after = conn.execute(
            "SELECT * FROM customer ORDER BY customer_id"
        ).fetchall()
        remaining = " ".join(
            str(value) for row in conn.execute("SELECT * FROM customer") for value in row
        )
    fingerprints = [
        fp
        for fp in _rows.row_fingerprints(customer)
        if fp.decode() not in remaining and fp.decode() not in remaining.casefold()
    ]
    assert fingerprints
    scanner = scan.FingerprintScanner()
    scanner.add_all("customer", fingerprints)
    for path in files:
        assert list(scanner.scan_file(path)) == [], path
    assert len(others_after) == 58
    assert _digest(others_after) == _digest(others_before)


def _digest(rows: list[tuple]) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_all_rows_needs_flag(pg_database):
    fill_people(pg_database, rows=4)
    with pytest.raises(InvalidTarget, match="all_rows"):
        run_plugin(
            PostgreSQLPlugin, target(pg_database, "people", "id >= %s"), {"params": [0]}
        )


def test_missing_table(pg_database):
    with pytest.raises(TargetNotFound, match="'nobody'"):
        run_plugin(PostgreSQLPlugin, target(pg_database, "nobody", "id = %s"), {"params": [1]})


def test_missing_column(pg_database):
    fill_people(pg_database, rows=4)
    with pytest.raises(TargetNotFound, match="nmae"):
        run_plugin(PostgreSQLPlugin, target(pg_database, "people", "nmae = %s"), {"params": [1]})


def test_lost_connection_then_rerun(pg_database):
    fill_people(pg_database, rows=6)
    plugin = PostgreSQLPlugin(
        Target(target(pg_database, "people", "id < %s"), {"params": [3]}),
        JobContext(dry_run=False),
    )
    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        with pg_admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (plugin.connection.info.backend_pid,))
        with pytest.raises(TargetUnreachable, match="run the purge again"):
            list(plugin.purge(planned))
    finally:
        plugin.close()

    rerun = run_plugin(PostgreSQLPlugin, target(pg_database, "people", "id < %s"), {"params": [3]})

    assert set(rerun.statuses().values()) == {"purged"}
    assert len(rerun.results) == 3
    assert not rerun.unverified()


def test_lock_timeout_then_rerun(pg_database):
    fill_people(pg_database, rows=6)
    holder = psycopg.connect(pg_database)
    holder.execute("SELECT * FROM people WHERE id = 2 FOR UPDATE")

    blocked = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "people", "id = %s"),
        {"params": [2], "lock_timeout": 0.5},
    )
    holder.rollback()
    holder.close()
    rerun = run_plugin(PostgreSQLPlugin, target(pg_database, "people", "id = %s"), {"params": [2]})

    assert blocked.statuses() == {"public.people:[2]": "failed"}
    assert "timed out" in blocked.results[0].detail
    assert rerun.statuses() == {"public.people:[2]": "purged"}
    assert not rerun.unverified()


def test_read_only_database(pg_database):
    fill_people(pg_database, rows=6)
    name = pg_database.rsplit("/", 1)[1]
    with pg_admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    with pytest.raises(AccessDenied, match="accepts only reads"):
        run_plugin(PostgreSQLPlugin, target(pg_database, "people", "id = %s"), {"params": [2]})


def test_data_files_cover_toast_and_statistics(pg_database):
    fill_people(pg_database, rows=3)
    plugin = PostgreSQLPlugin(
        Target(target(pg_database, "people", "id = %s"), {"params": [1]}), JobContext()
    )
    try:
        plugin.describe()
        files, note = plugin.data_files()
    finally:
        plugin.close()

    with psycopg.connect(pg_database, autocommit=True) as conn:
        expected = pg_relation_files(conn, "people") + statistics_files(conn)
    assert note is None
    assert set(expected) <= set(files)
    assert all(os.path.exists(path) for path in files)


def test_open_snapshot_fails_vacuum_step(pg_database, monkeypatch):
    import plugins.postgresql as module

    monkeypatch.setattr(module, "VACUUM_RETRY_DELAY", 0.1)
    markers = fill_people(pg_database, rows=6)
    holder = psycopg.connect(pg_database)
    holder.execute("SELECT txid_current()")  # an open transaction with an xid
    pid = holder.info.backend_pid

    run = run_plugin(
        PostgreSQLPlugin, target(pg_database, "people", "name = %s"), {"params": [markers["name"]]}
    )
    holder.rollback()
    holder.close()

    steps = {step.key: step for step in run.completion}
    assert steps["vacuum-full:public.people"].status == "failed"
    assert f"pid {pid}" in steps["vacuum-full:public.people"].detail
    assert run.unverified()


def test_missing_privileges_named_in_plan(pg_database):
    import secrets

    role = f"lethe_db_{secrets.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        markers = fill_people(pg_database, rows=6)
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'ALTER TABLE people OWNER TO "{role}"')
        url = pg_database.replace("postgres@", f"{role}@", 1)

        run = run_plugin(
            PostgreSQLPlugin, target(url, "people", "name = %s"), {"params": [markers["name"]]}
        )

        residual = " ".join(run.info.residual)
        steps = {step.key: step for step in run.completion}
        assert "VACUUM FULL pg_statistic cannot run" in residual
        assert "CHECKPOINT cannot run" in residual
        assert steps["vacuum-full:public.people"].status == "purged"
        assert steps["rewrite-statistics"].status == "failed"
        assert steps["checkpoint"].status == "failed"
        assert "not run" in run.evidence[0].checks[1].detail
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with pg_admin() as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_array_param_literal_only_when_safe() -> None:
    from plugins.postgresql import _array_param

    assert _array_param("bigint", [1, 22, -3]) == ("%s::bigint[]", "{1,22,-3}")
    assert _array_param("text", ["ab12", "907"]) == ("%s::text[]", "{ab12,907}")
    assert _array_param("bigint", [1, True]) == ("%b::bigint[]", [1, True])
    assert _array_param("text", ["NULL"]) == ("%b::text[]", ["NULL"])
    assert _array_param("text", ["ab", ""]) == ("%b::text[]", ["ab", ""])
    assert _array_param("text", ["a,b"]) == ("%b::text[]", ["a,b"])
    assert _array_param("uuid", ["ab"]) == ("%b::uuid[]", ["ab"])


def test_text_keys_that_look_like_array_syntax(pg_database):
    # Keys that an array literal would misread (NULL, empty, comma, braces)
    # sit next to hex-like keys that go as a literal.
    keys = ["abc", "123", "NULL", "", "a,b", "{x}", '"q"', "keep"]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE tags (name text PRIMARY KEY, note text)")
        for key in keys:
            conn.execute("INSERT INTO tags VALUES (%s, %s)", (key, canary(f"tag{len(key)}")))

    run = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "tags", "name <> %s"),
        {"params": ["keep"], "rows_per_item": 3},
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with psycopg.connect(pg_database) as conn:
        left = [row[0] for row in conn.execute("SELECT name FROM tags")]
    assert left == ["keep"]


def test_dense_key_range_keeps_rows_between(pg_database):
    # Keys 1, 2, 4, 5, ... are dense enough to be read through one index
    # range, which also contains the unselected 3, 6, 9, ...
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, email text)")
        for number in range(1, 31):
            conn.execute("INSERT INTO people VALUES (%s, %s)", (number, canary(f"p{number}")))

    run = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "people", "id %% 3 <> %s"),
        {"params": [0], "rows_per_item": 5},
    )

    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()
    with psycopg.connect(pg_database) as conn:
        left = [row[0] for row in conn.execute("SELECT id FROM people ORDER BY id")]
    assert left == list(range(3, 31, 3))


def test_json_and_array_values_fingerprinted(pg_database):
    # Strings inside jsonb and text[] are stored as they are. A value that a
    # surviving row's document also contains is explained by that row.
    secret, tag, shared = canary("inside-json"), canary("in-array"), canary("shared-city")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body jsonb, tags text[])")
        conn.execute(
            "INSERT INTO docs VALUES (1, %s, %s), (2, %s, '{}')",
            (
                psycopg.types.json.Jsonb({"name": secret, "city": shared, "n": 7}),
                [tag],
                psycopg.types.json.Jsonb({"city": shared}),
            ),
        )

    run = run_plugin(PostgreSQLPlugin, target(pg_database, "docs", "id = %s"), {"params": [1]})

    fingerprints = set(run.planned[0].decision.fingerprints)
    assert secret.encode() in fingerprints
    assert tag.encode() in fingerprints
    assert shared.encode() in fingerprints
    assert b"city" not in fingerprints
    assert set(run.statuses().values()) == {"purged"}
    assert not run.unverified()


def make_dotted_tables(url: str, shared: str) -> None:
    """Create public."a.b", a.b and other."a.b", each with rows 1 to 4.

    Rows 1 and 3 of public."a.b" share a value, so verification reads the
    surviving rows of every table.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA a")
        conn.execute("CREATE SCHEMA other")
        for table in ('public."a.b"', "a.b", 'other."a.b"'):
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
            for number in range(1, 5):
                note = shared if table.startswith("public") and number % 2 else canary()
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (number, note))


def dotted_ids(url: str) -> dict[str, list[int]]:
    """Return the ids left in each table that make_dotted_tables created."""
    ids = {}
    with psycopg.connect(url) as conn:
        for table in ('public."a.b"', "a.b", 'other."a.b"'):
            rows = conn.execute(f"SELECT id FROM {table} ORDER BY id")
            ids[table] = [row[0] for row in rows]
    return ids


def dotted_options(table: str) -> dict:
    """Return target options that select rows 1 and 2 of ``table``."""
    return {"table": table, "where": "id <= %s", "params": [2]}


@pytest.mark.parametrize(
    ("option", "purged"),
    [
        ("public.a.b", 'public."a.b"'),
        ('public."a.b"', 'public."a.b"'),
        ('"a.b"', 'public."a.b"'),
        ('a."b"', "a.b"),
        ('"a"."b"', "a.b"),
    ],
)
def test_table_name_with_dot(pg_database, option, purged):
    make_dotted_tables(pg_database, canary("shared"))
    expected = {table: [1, 2, 3, 4] for table in ('public."a.b"', "a.b", 'other."a.b"')}
    expected[purged] = [3, 4]

    run = run_plugin(PostgreSQLPlugin, pg_database, dotted_options(option))

    assert run.statuses() == {f"{purged}:[1]": "purged", f"{purged}:[2]": "purged"}
    assert not run.unverified()
    assert dotted_ids(pg_database) == expected


def test_table_name_with_dot_ambiguous(pg_database):
    make_dotted_tables(pg_database, canary("shared"))

    with pytest.raises(InvalidTarget) as raised:
        run_plugin(PostgreSQLPlugin, pg_database, dotted_options("a.b"))

    message = str(raised.value)
    assert "'a.b' is ambiguous" in message
    assert '"public"."a.b"' in message
    assert '"a"."b"' in message
    assert dotted_ids(pg_database)["a.b"] == [1, 2, 3, 4]
    assert dotted_ids(pg_database)['public."a.b"'] == [1, 2, 3, 4]


def test_table_name_with_dot_not_found(pg_database):
    with pytest.raises(TargetNotFound, match="'x.y' does not exist"):
        run_plugin(PostgreSQLPlugin, pg_database, dotted_options("x.y"))


def test_table_name_unclosed_quote(pg_database):
    with pytest.raises(InvalidTarget, match="double quote is not closed"):
        run_plugin(PostgreSQLPlugin, pg_database, dotted_options('public."a.b'))


def test_other_session_temp_table_not_read(pg_database):
    # A shared value survives in row 2, so verification reads the rows of
    # every user table. Another session's temporary table cannot be read.
    shared = canary("shared")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO notes VALUES (1, %s), (2, %s)", (shared, shared))
    with psycopg.connect(pg_database, autocommit=True) as other:
        other.execute("CREATE TEMPORARY TABLE scratch (id int PRIMARY KEY, note text)")
        other.execute("INSERT INTO scratch VALUES (1, %s)", (shared,))

        run = run_plugin(PostgreSQLPlugin, target(pg_database, "notes", "id = %s"), {"params": [1]})

    assert run.statuses() == {"public.notes:[1]": "purged"}
    assert not run.unverified()
    with psycopg.connect(pg_database) as conn:
        assert conn.execute("SELECT id FROM notes").fetchall() == [(2,)]


def test_unreadable_table_not_read(pg_database):
    # The purging role owns notes but may not read secrets, which shares a
    # value with a surviving row, so verification reads the other tables.
    shared = canary("shared")
    role = f"lethe_reader_{secrets.token_hex(4)}"
    parts = urllib.parse.urlsplit(pg_database)
    as_role = urllib.parse.urlunsplit(
        parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}")
    )
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
            # The byte scan needs SHOW data_directory, which this role allows.
            conn.execute(f"GRANT pg_read_all_settings TO {role}")
            conn.execute("CREATE TABLE secrets (id int PRIMARY KEY, note text)")
            conn.execute("INSERT INTO secrets VALUES (1, %s)", (shared,))
            with psycopg.connect(as_role, autocommit=True) as owner:
                owner.execute("CREATE TABLE notes (id int PRIMARY KEY, note text)")
                owner.execute(
                    "INSERT INTO notes VALUES (1, %s), (2, %s)", (shared, shared)
                )

            run = run_plugin(
                PostgreSQLPlugin, target(as_role, "notes", "id = %s"), {"params": [1]}
            )

            assert run.statuses() == {"public.notes:[1]": "purged"}
            assert not run.unverified()
            assert conn.execute("SELECT id FROM notes").fetchall() == [(2,)]
        finally:
            conn.execute("DROP TABLE IF EXISTS notes, secrets")
            conn.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            conn.execute(f"REVOKE pg_read_all_settings FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_table_in_dotted_schema_not_found(pg_database):
    # Unquoted, s.x.orders names schema s, so the error explains the quoting.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "s.x"')
        conn.execute('CREATE TABLE "s.x".orders (id int PRIMARY KEY)')

    with pytest.raises(TargetNotFound) as raised:
        run_plugin(PostgreSQLPlugin, pg_database, dotted_options("s.x.orders"))

    message = str(raised.value)
    assert "'s.x.orders' does not exist" in message
    assert "double-quote" in message


def test_compressed_value_scan_not_run(pg_database):
    # PostgreSQL compresses a row's long values once the row passes about
    # 2 kB, and a byte scan cannot recognize a compressed value.
    long_secret = canary("long") + "a" * 8000
    short_secret = canary("short")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs VALUES (1, %s), (2, %s), (3, 'kept')",
            (long_secret, short_secret),
        )
        [(method,)] = conn.execute(
            "SELECT pg_column_compression(body) FROM docs WHERE id = 1"
        ).fetchall()
    assert method is not None

    run = run_plugin(
        PostgreSQLPlugin, target(pg_database, "docs", "id <= %s"), {"params": [2]}
    )

    checks = {
        evidence.key: {check.name: check.detail for check in evidence.checks}
        for evidence in run.evidence
    }
    assert checks["public.docs:[1]"]["byte-scan"].startswith("not run:")
    assert "compressed" in checks["public.docs:[1]"]["byte-scan"]
    assert not checks["public.docs:[2]"]["byte-scan"].startswith("not run:")
    assert not run.unverified()
    assert run.statuses() == {"public.docs:[1]": "purged", "public.docs:[2]": "purged"}


def test_compressed_value_in_group_scan_not_run(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs VALUES (1, %s), (2, %s), (3, %s), (4, 'kept')",
            (canary("first"), canary("long") + "a" * 8000, canary("third")),
        )

    run = run_plugin(
        PostgreSQLPlugin,
        target(pg_database, "docs", "id <= %s"),
        {"params": [3], "rows_per_item": 2},
    )

    checks = {
        evidence.key: {check.name: check.detail for check in evidence.checks}
        for evidence in run.evidence
    }
    assert sorted(checks) == ["public.docs:[1]..[2]", "public.docs:[3]..[3]"]
    assert checks["public.docs:[1]..[2]"]["byte-scan"].startswith("not run:")
    assert not checks["public.docs:[3]..[3]"]["byte-scan"].startswith("not run:")
    assert not run.unverified()


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_bytea_key_rows_purged(tmp_path, pg_database, rows_per_item):
    # The purge reads each key back from the job journal, which stores JSON.
    first, second = canary("first"), canary("second")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE tokens (id bytea PRIMARY KEY, note text, selected bool)"
        )
        conn.execute(
            "INSERT INTO tokens VALUES (%s, %s, true), (%s, %s, true), (%s, %s, false)",
            (b"k1", first, b"\x00\xff", second, b"k2", canary()),
        )
    url = f"{target(pg_database, 'tokens', 'selected')}&rows_per_item={rows_per_item}"

    result = run_cli(tmp_path / "state", "purge", "--yes", url)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert clean_summary(2 // rows_per_item) in result.stdout
    with psycopg.connect(pg_database, autocommit=True) as conn:
        left = conn.execute("SELECT id, note FROM tokens").fetchall()
    assert [bytes(key) for key, _note in left] == [b"k2"]
    assert first not in {note for _key, note in left}
    assert second not in {note for _key, note in left}
