"""Ledger replay on a PostgreSQL database restored from a pg_dump backup."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(sql)


def _rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """Create a private database (name, URL) and drop it afterwards."""
    name = f"lethe_seal_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_replay_after_pg_restore(
    lethe, database: tuple[str, str], tmp_path: Path
) -> None:
    pg_dump, pg_restore = require_tool("pg_dump"), require_tool("pg_restore")
    import psycopg

    name, url = database

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE customers (id integer PRIMARY KEY, email text NOT NULL, status text NOT NULL)"
        )
        for customer_id in range(1, 9):
            status = "closed" if customer_id in (2, 4, 6) else "active"
            connection.execute(
                "INSERT INTO customers VALUES (%s, %s, %s)",
                (customer_id, f"c{customer_id}@example.com", status),
            )
    dump = tmp_path / "backup.dump"
    subprocess.run(
        [pg_dump, "-Fc", "-f", str(dump), url], check=True, capture_output=True
    )

    # Customer 6 reopens after the backup, so the purge leaves it alone and
    # the replay must too, although the restored row matches the selector.
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE customers SET status = 'active' WHERE id = 6")
    query = urllib.parse.urlencode(
        [("table", "customers"), ("where", "status = %s"), ("param", "closed")]
    )
    purged = lethe("purge", "--yes", f"{url}?{query}")
    assert purged.returncode in (0, 1), purged.stderr
    assert _rows(url, "SELECT id FROM customers ORDER BY id") == [
        (1,),
        (3,),
        (5,),
        (6,),
        (7,),
        (8,),
    ]

    _admin(f'DROP DATABASE "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    subprocess.run([pg_restore, "-d", url, str(dump)], check=True, capture_output=True)
    assert _rows(
        url, "SELECT id FROM customers WHERE status = 'closed' ORDER BY id"
    ) == [(2,), (4,), (6,)]

    result = lethe("ledger", "replay", "--yes", "--json", url)
    report = json.loads(result.stdout)
    assert result.returncode in (0, 1), result.stderr
    assert report["resurfaced"] == 2
    assert report["job"]["state"] == "done"
    assert _rows(url, "SELECT id FROM customers ORDER BY id") == [
        (1,),
        (3,),
        (5,),
        (6,),
        (7,),
        (8,),
    ]
