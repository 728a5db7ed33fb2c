"""PostgreSQL targets whose tables copy, hide or spread rows beyond one table."""

from __future__ import annotations

import secrets

import psycopg

from plugins.base import JobContext, Target
from plugins.postgresql import PostgreSQLPlugin
from tests.db.conftest import canary, files_contain, pg_admin, pg_relation_files
from tests.helpers.driver import run_plugin


def fill_inherited(url: str) -> dict[str, str]:
    """Create ``people`` with ten rows and ``archived``, which inherits from it."""
    markers = {"parent": canary("parent"), "child": canary("child"), "note": canary("note")}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text, selected bool)")
        conn.execute("CREATE TABLE archived (note text) INHERITS (people)")
        conn.execute(
            "INSERT INTO people SELECT i, 'person' || i, false FROM generate_series(2, 10) i"
        )
        conn.execute("INSERT INTO people VALUES (1, %s, true)", (markers["parent"],))
        conn.execute(
            "INSERT INTO archived VALUES (100, %s, true, %s), (5, 'person5', false, 'n')",
            (markers["child"], markers["note"]),
        )
        conn.execute("CHECKPOINT")
    return markers


def test_inheriting_table_rows_not_selected(pg_database):
    # DELETE on a parent also removes rows of inheriting tables, but VACUUM
    # FULL of the parent leaves their files as they are.
    markers = fill_inherited(pg_database)

    run = run_plugin(PostgreSQLPlugin, f"{pg_database}?table=people&where=selected")

    assert run.statuses() == {"public.people:[1]": "purged"}
    assert not run.unverified()
    notes = " ".join(run.info.notes)
    assert "public.archived inherit from public.people" in notes
    with psycopg.connect(pg_database, autocommit=True) as conn:
        child = conn.execute("SELECT id FROM archived ORDER BY id").fetchall()
        parent_files = pg_relation_files(conn, "people")
        child_files = pg_relation_files(conn, "archived")
    assert child == [(5,), (100,)]
    assert not files_contain(parent_files, markers["parent"].encode())
    assert files_contain(child_files, markers["child"].encode())


def test_inheriting_table_row_outside_where_kept(pg_database):
    # archived contains a row with the key and values of a selected row of
    # people, which the WHERE clause excludes through tableoid.
    markers = fill_inherited(pg_database)

    run = run_plugin(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&where=tableoid = %s::regclass AND id <= %s",
        {"params": ["people", 5]},
    )

    assert len(run.statuses()) == 5
    assert set(run.statuses().values()) == {"purged"}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        child = conn.execute("SELECT id, email FROM archived ORDER BY id").fetchall()
        parent = conn.execute("SELECT id FROM ONLY people ORDER BY id").fetchall()
    assert child == [(5, "person5"), (100, markers["child"])]
    assert parent == [(number,) for number in range(6, 11)]


def test_partition_files_scanned(pg_database):
    secret = canary("event")
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE events (id int, region int, body text, PRIMARY KEY (id, region)) "
            "PARTITION BY LIST (region)"
        )
        conn.execute(
            "CREATE TABLE events_low PARTITION OF events FOR VALUES IN (1, 2) "
            "PARTITION BY LIST (region)"
        )
        conn.execute("CREATE TABLE events_1 PARTITION OF events_low FOR VALUES IN (1)")
        conn.execute("CREATE TABLE events_2 PARTITION OF events_low FOR VALUES IN (2)")
        conn.execute("CREATE TABLE events_3 PARTITION OF events FOR VALUES IN (3)")
        conn.execute(
            "INSERT INTO events SELECT i, 1 + i % 3, 'body' || i FROM generate_series(1, 9) i"
        )
        conn.execute("INSERT INTO events VALUES (100, 1, %s)", (secret,))
    plugin = PostgreSQLPlugin(
        Target(f"{pg_database}?table=events&where=id = %s", {"params": [100]}), JobContext()
    )
    try:
        plugin.describe()
        files, note = plugin.data_files()
    finally:
        plugin.close()

    with psycopg.connect(pg_database, autocommit=True) as conn:
        partitions = [
            path
            for name in ("events_1", "events_2", "events_3")
            for path in pg_relation_files(conn, name)
        ]
    assert note is None
    assert set(partitions) <= set(files)


def test_copies_named_in_plan(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("CREATE TABLE audit (id int, email text)")
        conn.execute("INSERT INTO people SELECT i, 'person' || i FROM generate_series(1, 6) i")
        conn.execute(
            "CREATE RULE keep_deleted AS ON DELETE TO people "
            "DO ALSO INSERT INTO audit VALUES (old.id, old.email)"
        )
        conn.execute(
            "CREATE FUNCTION copy_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit VALUES (old.id, old.email); RETURN old; END $$"
        )
        conn.execute(
            "CREATE TRIGGER copy_deleted AFTER DELETE ON people "
            "FOR EACH ROW EXECUTE FUNCTION copy_row()"
        )
        conn.execute(
            "CREATE TRIGGER stamp BEFORE INSERT ON people "
            "FOR EACH ROW EXECUTE FUNCTION copy_row()"
        )
        conn.execute("CREATE MATERIALIZED VIEW people_copy AS SELECT * FROM people")

    run = run_plugin(
        PostgreSQLPlugin,
        f"{pg_database}?table=people&where=id = %s",
        {"params": [2]},
        purge=False,
    )

    residual = " ".join(run.info.residual)
    assert "rule keep_deleted on public.people" in residual
    assert "trigger copy_deleted on public.people" in residual
    assert "trigger stamp" not in residual
    assert "materialized view public.people_copy" in residual
    assert "row-level security" not in residual


def test_row_security_named_in_plan(pg_database):
    role = f"lethe_pghostile_{secrets.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
            conn.execute(
                "INSERT INTO people SELECT i, 'person' || i FROM generate_series(1, 8) i"
            )
            conn.execute(f'GRANT SELECT, DELETE ON people TO "{role}"')
            conn.execute("ALTER TABLE people ENABLE ROW LEVEL SECURITY")
            conn.execute("ALTER TABLE people FORCE ROW LEVEL SECURITY")
            conn.execute(
                f'CREATE POLICY visible ON people FOR SELECT TO "{role}" USING (id <> 6)'
            )
            conn.execute(
                f'CREATE POLICY kept ON people FOR DELETE TO "{role}" USING (id <> 5)'
            )
        url = pg_database.replace("postgres@", f"{role}@", 1)

        run = run_plugin(PostgreSQLPlugin, f"{url}?table=people&where=id >= %s", {"params": [5]})

        residual = " ".join(run.info.residual)
        assert "row-level security on public.people applies to this user" in residual
        assert run.statuses()["public.people:[5]"] == "failed"
        [failed] = [result for result in run.results if result.status == "failed"]
        assert "row-level security policy for DELETE" in failed.detail
        assert "BYPASSRLS" in failed.detail
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with pg_admin() as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_delete_rule_fails_with_fix(pg_database):
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people SELECT i, 'person' || i FROM generate_series(1, 6) i")
        conn.execute("CREATE RULE keep_all AS ON DELETE TO people DO INSTEAD NOTHING")

    run = run_plugin(PostgreSQLPlugin, f"{pg_database}?table=people&where=id = %s", {"params": [2]})

    [result] = run.results
    assert result.status == "failed"
    assert "a rule for DELETE on the table rewrites the purge's delete" in result.detail
    assert "DISABLE RULE" in result.detail
    assert "rule keep_all on public.people" in " ".join(run.info.residual)
