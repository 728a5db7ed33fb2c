"""Fixtures of the database plugin tests: SQLite files, server databases."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest

CHINOOK = Path("/work/shared/data/chinook")


def canary(label: str = "canary") -> str:
    """Return a random, incompressible marker string to plant in a row."""
    return f"{label}-{secrets.token_hex(16)}"


def files_contain(paths: list[str], needle: bytes) -> bool:
    """Tell whether any of the files (that exist) holds the byte string."""
    for path in paths:
        if os.path.exists(path) and needle in Path(path).read_bytes():
            return True
    return False


def sqlite_files(path: Path) -> list[str]:
    return [str(path), f"{path}-wal", f"{path}-journal"]


@pytest.fixture
def chinook_sqlite(tmp_path: Path) -> Path:
    """Return a private copy of the Chinook SQLite database."""
    copy = tmp_path / "chinook.db"
    shutil.copyfile(CHINOOK / "Chinook_Sqlite.sqlite", copy)
    return copy


@pytest.fixture
def sqlite_db(tmp_path: Path):
    """Return a factory of SQLite files built with secure_delete off."""

    def build(name: str = "app.db", journal_mode: str = "delete") -> tuple[Path, sqlite3.Connection]:
        path = tmp_path / name
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA secure_delete = OFF")
        conn.execute(f"PRAGMA journal_mode = {journal_mode}")
        return path, conn

    return build


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True)


@pytest.fixture
def pg_database():
    """Create a private PostgreSQL database and return its URL; drop it after."""
    name = f"lethe_db_{secrets.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_relation_files(conn, relation: str) -> list[str]:
    """Return the data files of a relation, its indexes and its TOAST table."""
    directory = conn.execute("SHOW data_directory").fetchone()[0]
    oids = conn.execute(
        "SELECT %s::regclass::oid UNION ALL "
        "SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass "
        "UNION ALL SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass "
        "AND reltoastrelid <> 0",
        (relation, relation, relation),
    ).fetchall()
    files = []
    for (oid,) in oids:
        relative = conn.execute("SELECT pg_relation_filepath(%s)", (oid,)).fetchone()[0]
        files.append(os.path.join(directory, relative))
    return files


def load_chinook_postgresql(url: str) -> None:
    """Load the Chinook PostgreSQL script into the database at ``url``."""
    import subprocess

    from tests.conftest import require_tool

    psql = require_tool("psql")
    script = (CHINOOK / "Chinook_PostgreSql.sql").read_text(encoding="utf-8")
    kept = [
        line
        for line in script.splitlines()
        if not line.startswith(("CREATE DATABASE", "DROP DATABASE", "\\c "))
    ]
    subprocess.run(
        [psql, "-q", "-v", "ON_ERROR_STOP=1", url],
        input="\n".join(kept),
        text=True,
        check=True,
        capture_output=True,
    )


def mysql_admin(database: str | None = None, port: int = 3306):
    import pymysql

    return pymysql.connect(
        host="127.0.0.1", port=port, user="root", password="", database=database, autocommit=True
    )


@pytest.fixture
def mysql_database():
    """Create a private MariaDB database and return its URL; drop it after."""
    name = f"lethe_db_{secrets.token_hex(4)}"
    with mysql_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with mysql_admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


def load_chinook_mysql(database: str) -> None:
    """Load the Chinook MySQL script into ``database``."""
    import subprocess

    from tests.conftest import require_tool

    client = require_tool("mysql")
    script = (CHINOOK / "Chinook_MySql.sql").read_text(encoding="utf-8")
    kept = [
        line
        for line in script.splitlines()
        if not line.startswith(("CREATE DATABASE", "DROP DATABASE", "USE "))
    ]
    subprocess.run(
        [client, "-h", "127.0.0.1", "-u", "root", database],
        input="\n".join(kept),
        text=True,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def mariadb_binlog(tmp_path_factory):
    """Start a private MariaDB with the binary log on; yield its port.

    The shared server runs with the binary log off, so this one gets its own
    data directory under a temporary directory and a free 127.0.0.1 port,
    and it stops at the end of the session.
    """
    import getpass
    import socket
    import subprocess
    import time

    from tests.conftest import require_tool

    server = require_tool("mariadbd")
    install = require_tool("mariadb-install-db")
    root = tmp_path_factory.mktemp("mariadb-binlog")
    data = root / "data"
    user = getpass.getuser()
    subprocess.run(
        [install, "--no-defaults", f"--datadir={data}", f"--user={user}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True,
        capture_output=True,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--user={user}",
         f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root}/mysqld.sock",
         f"--pid-file={root}/mysqld.pid", f"--log-bin={data}/binlog", "--server-id=1",
         "--binlog-format=ROW", "--skip-name-resolve", "--innodb-buffer-pool-size=32M"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(120):
            if process.poll() is not None:
                pytest.fail(f"private MariaDB exited; see {root / 'server.log'}")
            try:
                mysql_admin(port=port).close()
                break
            except Exception:  # noqa: BLE001 - not accepting connections yet
                time.sleep(0.5)
        else:
            pytest.fail(f"private MariaDB did not start on port {port}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
