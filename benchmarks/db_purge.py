"""Time a Lethe row purge against the same purge typed by hand, in one run.

PostgreSQL: a table of ROWS rows; Lethe purges PURGE of them (plan, delete,
VACUUM FULL, statistics rewrite, CHECKPOINT, WAL switch, verification with a
byte scan of the table's files) against DELETE + VACUUM FULL + CHECKPOINT
on an identical table. SQLite: the same against DELETE + VACUUM.
MariaDB/MySQL (InnoDB): the same against DELETE + ALTER TABLE ... FORCE,
the rebuild that the plugin runs.

A third table gets the "floor": the hand-typed purge plus the statements
that a purge with these guarantees cannot skip, typed by hand. They read
the selected rows (their values are the fingerprints), refresh and rewrite
the statistics (PostgreSQL), flush and switch the WAL or checkpoint it
(SQLite, with secure_delete on), wait for InnoDB's purge of the deleted
records and write the rebuilt table's pages out (MariaDB), check that the
selection is empty and read the data files once. Its ratio to the
hand-typed purge bounds what any tool doing that work can reach.

Needs the PostgreSQL server on 127.0.0.1:5432 (trust auth, user postgres)
and root to read its data directory. ``--engine mariadb`` (or ``all``)
needs the MariaDB server on 127.0.0.1:3306 (user root, empty password)
with the Sequence engine, and the pymysql package. Creates and drops its
own databases.

    python benchmarks/db_purge.py --rows 1000000 --purge 100000
    python benchmarks/db_purge.py --engine mariadb --repeat 3

By default Lethe's side drives the plugin through its contract, as the
plugin tests do. With --through-agent it runs the agent's engine as
``lethe purge`` does, which adds the journal, the audit log and the
signed certificate.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

# At the top, so the timed agent runs leave out importing (and compiling) its modules.
from agent.config import Config
from agent.engine import Engine
from agent.registry import Registry
from plugins.base import JobContext, PlannedItem, Plugin, Target, plugin_batches
from plugins.mysql import MySQLPlugin
from plugins.postgresql import PostgreSQLPlugin
from plugins.sqlite import SQLitePlugin

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Connection arguments of the MariaDB/MySQL server, for pymysql.
MARIADB_SERVER = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
#: Bytes per read when the floor run reads the data files.
FLOOR_READ_CHUNK = 4 << 20


def run_lethe(plugin_class: type[Plugin], url: str, options: dict) -> dict[str, object]:
    """Plan, purge, compact and verify one target; return counts and phase times.

    Each phase has its wall time and this process's CPU time (all threads).
    The CPU time leaves out the database server's work, and it varies less
    than the wall time when other processes load the machine.
    """
    plugin = plugin_class(Target(url, options), JobContext(job_id="bench", dry_run=False))
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    clock = time.perf_counter()
    cpu_clock = time.process_time()

    def lap(name: str) -> None:
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), time.process_time()
        phases[name] = round(now - clock, 2)
        cpu[name] = round(cpu_now - cpu_clock, 2)
        clock, cpu_clock = now, cpu_now

    try:
        plugin.describe()
        planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
        lap("plan")
        purged = []
        for batch in plugin_batches(planned, plugin):
            purged += [r for r in plugin.purge(batch) if r.status == "purged"]
        lap("delete")
        steps = list(plugin.complete())
        lap("compact")
        verified = 0
        for batch in plugin_batches(planned, plugin):
            verified += sum(evidence.verified for evidence in plugin.verify(batch))
        lap("verify")
    finally:
        plugin.close()
    failed = [step.key for step in steps if step.status != "purged"]
    return {
        "planned": len(planned),
        "purged": len(purged),
        "verified": verified,
        "failed_steps": failed,
        "seconds": phases,
        "cpu_seconds": cpu,
    }


def run_agent(plugin_class: type[Plugin], url: str, options: dict) -> dict[str, object]:
    """Plan and purge one target as ``lethe purge`` does, with journal and certificate.

    ``plugin_class`` is unused, because the agent picks the plugin from the URL.
    """
    phases: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lethe-bench-state-") as state_dir:
        config = Config()
        engine = Engine(config, Path(state_dir))
        try:
            clock, cpu_clock = time.perf_counter(), time.process_time()
            job_id = engine.plan(
                [Target(url, options)], config.settings.as_plugin_settings(), dry_run=False
            )
            phases["plan"] = round(time.perf_counter() - clock, 2)
            cpu["plan"] = round(time.process_time() - cpu_clock, 2)
            clock, cpu_clock = time.perf_counter(), time.process_time()
            outcome = engine.purge(job_id)
            phases["purge, compact, verify, certify"] = round(time.perf_counter() - clock, 2)
            cpu["purge, compact, verify, certify"] = round(time.process_time() - cpu_clock, 2)
        finally:
            engine.close()
    return {
        "state": outcome.state,
        "counts": dict(outcome.counts),
        "seconds": phases,
        "cpu_seconds": cpu,
    }


def read_files(paths: list[str]) -> None:
    """Read files once, as the verification's byte scan must."""
    for path in paths:
        with open(path, "rb") as stream:
            while stream.read(FLOOR_READ_CHUNK):
                pass


def postgresql_files(conn: object, table: str) -> list[str]:
    """Return the data files of a table, its TOAST table and its indexes."""
    directory = conn.execute("SHOW data_directory").fetchone()[0]
    relations = conn.execute(
        "SELECT c.oid FROM pg_class c WHERE c.oid = %s::regclass "
        "OR c.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass) "
        "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)",
        (table, table, table),
    ).fetchall()
    files = []
    for (oid,) in relations:
        relative = conn.execute("SELECT pg_relation_filepath(%s)", (oid,)).fetchone()[0]
        base = os.path.join(directory, relative)
        files += [base] + sorted(
            str(path) for path in Path(base).parent.glob(Path(base).name + ".*")
        )
    return [path for path in files if os.path.exists(path)]


def side_databases() -> dict[str, str]:
    """Return a new database name for each side of one run."""
    return {
        side: f"lethe_db_bench_{side}_{secrets.token_hex(4)}"
        for side in ("hand", "floor", "lethe")
    }


def timed(call: Callable[[], object]) -> tuple[float, object]:
    # Dirty pages of the setup or of the previous purge are written out
    # first, so their writeback does not land in this purge's time.
    os.sync()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def postgresql(
    rows: int, purge: int, lethe: Callable = run_lethe
) -> tuple[float, float, float, dict]:
    import psycopg

    # One database per side, so each has its own pg_statistic.
    names = side_databases()
    urls = {side: f"postgresql://postgres@127.0.0.1:5432/{name}" for side, name in names.items()}
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        for name in names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    try:
        for url in urls.values():
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE people (id bigint PRIMARY KEY, email text, "
                    "name text, note text)"
                )
                conn.execute(
                    "INSERT INTO people SELECT i, 'user' || i || '.' || md5(i::text) "
                    "|| '@example.org', 'name ' || md5((i * 7)::text), "
                    "repeat(md5((i * 13)::text), 4) FROM generate_series(1, %s) i",
                    (rows,),
                )
                conn.execute("CREATE INDEX people_email ON people(email)")
                conn.execute("ANALYZE people")
                conn.execute("CHECKPOINT")

        def by_hand() -> None:
            with psycopg.connect(urls["hand"], autocommit=True) as conn:
                conn.execute("DELETE FROM people WHERE id <= %s", (purge,))
                conn.execute("VACUUM FULL people")
                conn.execute("CHECKPOINT")

        def floor() -> None:
            with psycopg.connect(urls["floor"], autocommit=True) as conn:
                conn.execute("SELECT * FROM people WHERE id <= %s", (purge,)).fetchall()
                conn.execute("DELETE FROM people WHERE id <= %s", (purge,))
                conn.execute("VACUUM FULL people")
                conn.execute("ANALYZE people")
                conn.execute("VACUUM FULL pg_catalog.pg_statistic")
                conn.execute("CHECKPOINT")
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("SELECT count(*) FROM people WHERE id <= %s", (purge,))
                read_files(postgresql_files(conn, "people"))

        hand_seconds, _ = timed(by_hand)
        floor_seconds, _ = timed(floor)
        lethe_seconds, counts = timed(
            lambda: lethe(
                PostgreSQLPlugin,
                f"{urls['lethe']}?table=people&where=id <= %s",
                {"params": [purge]},
            )
        )
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return hand_seconds, floor_seconds, lethe_seconds, counts


def sqlite(rows: int, purge: int, lethe: Callable = run_lethe) -> tuple[float, float, float, dict]:
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as directory:
        paths = {
            name: os.path.join(directory, f"{name}.db")
            for name in ("by_hand", "floor", "by_lethe")
        }
        for path in paths.values():
            conn = sqlite3.connect(path)
            conn.execute(
                "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, name TEXT, note TEXT)"
            )
            conn.executemany(
                "INSERT INTO people VALUES (?, ?, ?, ?)",
                (
                    (i, f"user{i}.{secrets.token_hex(8)}@example.org",
                     f"name {secrets.token_hex(8)}", secrets.token_hex(64))
                    for i in range(1, rows + 1)
                ),
            )
            conn.execute("CREATE INDEX people_email ON people(email)")
            conn.commit()
            conn.close()

        def by_hand() -> None:
            conn = sqlite3.connect(paths["by_hand"], isolation_level=None)
            conn.execute("DELETE FROM people WHERE id <= ?", (purge,))
            conn.execute("VACUUM")
            conn.close()

        def floor() -> None:
            conn = sqlite3.connect(paths["floor"], isolation_level=None)
            conn.execute("SELECT * FROM people WHERE id <= ?", (purge,)).fetchall()
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("DELETE FROM people WHERE id <= ?", (purge,))
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("SELECT count(*) FROM people WHERE id <= ?", (purge,)).fetchall()
            conn.close()
            read_files([paths["floor"]])

        hand_seconds, _ = timed(by_hand)
        floor_seconds, _ = timed(floor)
        lethe_seconds, counts = timed(
            lambda: lethe(
                SQLitePlugin,
                f"sqlite://{paths['by_lethe']}?table=people&where=id <= ?",
                {"params": [purge]},
            )
        )
    return hand_seconds, floor_seconds, lethe_seconds, counts


def settle_mariadb(cursor: object, names: list[str]) -> None:
    """Wait until InnoDB has purged all history and write the tables' pages out.

    Run before each timed purge, so that the background purge and page
    writes of the setup or of the previous purge do not land in its time.
    """
    cursor.execute("SET GLOBAL innodb_max_purge_lag_wait = 0")
    cursor.execute(
        "FLUSH TABLES " + ", ".join(f"`{name}`.people" for name in names) + " FOR EXPORT"
    )
    cursor.execute("UNLOCK TABLES")


def mariadb(
    rows: int, purge: int, lethe: Callable = run_lethe
) -> tuple[float, float, float, dict]:
    import pymysql

    names = side_databases()
    admin = pymysql.connect(**MARIADB_SERVER, autocommit=True)
    admin_cursor = admin.cursor()

    def connect(side: str) -> object:
        return pymysql.connect(**MARIADB_SERVER, database=names[side], autocommit=True)

    try:
        for name in names.values():
            admin_cursor.execute(f"CREATE DATABASE `{name}`")
        for side in names:
            with connect(side) as conn, conn.cursor() as cursor:
                cursor.execute(
                    "CREATE TABLE people (id BIGINT PRIMARY KEY, email VARCHAR(255), "
                    "name VARCHAR(255), note TEXT) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )
                # seq_1_to_N is a table of the Sequence engine. The values
                # are those of the PostgreSQL table.
                cursor.execute(
                    "INSERT INTO people SELECT seq, CONCAT('user', seq, '.', MD5(seq), "
                    "'@example.org'), CONCAT('name ', MD5(seq * 7)), "
                    f"REPEAT(MD5(seq * 13), 4) FROM seq_1_to_{int(rows)}"
                )
                cursor.execute("CREATE INDEX people_email ON people(email)")
                cursor.execute("ANALYZE TABLE people")
                cursor.fetchall()
        admin_cursor.execute("SELECT @@datadir")
        datadir = admin_cursor.fetchone()[0]

        def by_hand() -> None:
            with connect("hand") as conn, conn.cursor() as cursor:
                cursor.execute("DELETE FROM people WHERE id <= %s", (purge,))
                cursor.execute("ALTER TABLE people FORCE")

        def floor() -> None:
            with connect("floor") as conn, conn.cursor() as cursor:
                cursor.execute("SELECT * FROM people WHERE id <= %s", (purge,))
                cursor.fetchall()
                cursor.execute("DELETE FROM people WHERE id <= %s", (purge,))
                # The compaction steps of plugins/mysql.py. Its PURGE BINARY LOGS
                # step runs only when a target sets purge_binary_logs.
                cursor.execute("SET GLOBAL innodb_max_purge_lag_wait = 0")
                cursor.execute("ALTER TABLE people FORCE")
                cursor.execute("FLUSH TABLES people FOR EXPORT")
                cursor.execute("UNLOCK TABLES")
                cursor.execute("SELECT count(*) FROM people WHERE id <= %s", (purge,))
                cursor.fetchall()
            if os.access(datadir, os.R_OK | os.X_OK):
                read_files([os.path.join(datadir, names["floor"], "people.ibd")])

        settle_mariadb(admin_cursor, list(names.values()))
        hand_seconds, _ = timed(by_hand)
        settle_mariadb(admin_cursor, list(names.values()))
        floor_seconds, _ = timed(floor)
        settle_mariadb(admin_cursor, list(names.values()))
        lethe_seconds, counts = timed(
            lambda: lethe(
                MySQLPlugin,
                f"mysql://root@127.0.0.1:3306/{names['lethe']}?table=people&where=id <= %s",
                {"params": [purge]},
            )
        )
    finally:
        try:
            for name in names.values():
                admin_cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()
    return hand_seconds, floor_seconds, lethe_seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per table")
    parser.add_argument("--purge", type=int, default=100_000, help="rows to purge")
    parser.add_argument(
        "--engine",
        choices=("postgresql", "sqlite", "mariadb", "both", "all"),
        default="both",
        help="engine to time: both means PostgreSQL and SQLite, all adds MariaDB",
    )
    parser.add_argument(
        "--through-agent",
        action="store_true",
        help="run Lethe's side through the agent's engine (journal, certificate) "
        "instead of driving the plugin alone",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each engine's three purges this many times and print medians",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    engines = {"postgresql": postgresql, "sqlite": sqlite, "mariadb": mariadb}
    selected = {
        "both": ("postgresql", "sqlite"),
        "all": tuple(engines),
    }.get(args.engine, (args.engine,))
    if args.through_agent:
        # The registry imports plugin modules on the way to the one that
        # claims a scheme. Importing them here leaves that out of the times.
        registry = Registry.from_entry_points()
        for scheme in ("sqlite", "postgresql", "mysql"):
            registry.plugin_for(Target(f"{scheme}://127.0.0.1/warm?table=people"))
    for name, bench in engines.items():
        if name not in selected:
            continue
        side = run_agent if args.through_agent else run_lethe
        runs = []
        for _ in range(args.repeat):
            hand, floor, lethe, counts = bench(args.rows, args.purge, side)
            runs.append((hand, floor, lethe))
            print(
                f"{name}: {args.rows} rows, purge {args.purge}: by hand {hand:.2f} s, "
                f"floor {floor:.2f} s ({floor / hand:.2f}x), lethe {lethe:.2f} s, "
                f"ratio {lethe / hand:.2f}x, {counts}",
                flush=True,
            )
        if args.repeat > 1:
            hand, floor, lethe = (statistics.median(side) for side in zip(*runs))
            ratios = statistics.median(run[2] / run[0] for run in runs)
            print(
                f"{name}: medians of {args.repeat}: by hand {hand:.2f} s, floor "
                f"{floor:.2f} s, lethe {lethe:.2f} s, median ratio {ratios:.2f}x"
            )


if __name__ == "__main__":
    main()
