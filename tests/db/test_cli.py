"""The database plugins through the real ``lethe`` command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import yaml

from tests.db.conftest import canary, files_contain, mysql_admin, sqlite_files
from tests.helpers.cli import run_cli

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")


def lethe(tmp_path: Path, url: str, options: dict) -> subprocess.CompletedProcess[str]:
    """Run ``lethe purge --yes`` on one target given in a config file."""
    config = tmp_path / "lethe.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"url": url, "options": options}]}))
    environment = dict(os.environ, LETHE_STATE_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))
    return subprocess.run(
        [str(LETHE), "purge", "-c", str(config), "--yes"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def certificates(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "state").rglob("*.json")) + list((tmp_path / "state").rglob("*.html"))


def test_cli_sqlite_purge(tmp_path):
    path = tmp_path / "app.db"
    marker = canary()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany("INSERT INTO accounts VALUES (?, ?)", [(1, marker), (2, canary())])
    conn.commit()
    conn.close()

    result = lethe(tmp_path, f"sqlite://{path}", {"table": "accounts", "where": "id = ?", "params": [1]})

    assert result.returncode == 0, result.stderr[-2000:]
    assert not files_contain(sqlite_files(path), marker.encode())
    assert certificates(tmp_path)


def test_cli_postgresql_purge(tmp_path, pg_database):
    marker = canary()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO accounts VALUES (1, %s), (2, %s)", (marker, canary()))

    result = lethe(tmp_path, pg_database, {"table": "accounts", "where": "id = %s", "params": [1]})

    assert result.returncode == 0, result.stderr[-2000:]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 1
    assert certificates(tmp_path)


def test_cli_mysql_purge(tmp_path, mysql_database):
    marker = canary()
    with mysql_admin(mysql_database.rsplit("/", 1)[1]) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE accounts (id INT PRIMARY KEY, email TEXT) ENGINE=InnoDB")
        cursor.execute("INSERT INTO accounts VALUES (1, %s), (2, %s)", (marker, canary()))

    result = lethe(tmp_path, mysql_database, {"table": "accounts", "where": "id = %s", "params": [1]})

    assert result.returncode == 0, result.stderr[-2000:]
    with mysql_admin(mysql_database.rsplit("/", 1)[1]) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM accounts")
        assert cursor.fetchone()[0] == 1
    assert certificates(tmp_path)


def test_cli_verify_names_failed_items(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(1, canary()), (2, canary()), (3, canary())]
    )
    conn.execute(
        "CREATE TRIGGER keep_two BEFORE DELETE ON accounts WHEN old.id = 2 "
        "BEGIN SELECT RAISE(IGNORE); END"
    )
    conn.commit()
    conn.close()
    purged = lethe(tmp_path, f"sqlite://{path}", {"table": "accounts", "where": "id <= ?", "params": [2]})
    assert purged.returncode == 2, purged.stderr[-2000:]
    job = next(line for line in purged.stdout.splitlines() if line.startswith("job: "))[5:]

    verified = run_cli(tmp_path / "state", "verify", job)

    # The exit code is 2 although the one destroyed row is still gone, and
    # the output gives the reason.
    assert verified.returncode == 2
    assert "1 still gone, 0 came back" in verified.stdout
    assert "1 item failed during the purge" in verified.stdout


def test_certificate_gives_not_run_reason(tmp_path):
    # Rows of numbers only give no fingerprints, so the byte scan has nothing
    # to look for. The certificate gives that reason instead of a bare "not run".
    import json

    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE lines (id INTEGER PRIMARY KEY, quantity INTEGER, price REAL)")
    conn.executemany("INSERT INTO lines VALUES (?, ?, ?)", [(n, n, 0.99) for n in range(1, 6)])
    conn.commit()
    conn.close()

    result = lethe(tmp_path, f"sqlite://{path}", {"table": "lines", "where": "id <= ?", "params": [3]})

    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(next((tmp_path / "state").rglob("certificates/*.json")).read_text())
    method = document["verification"]["method"]
    assert "not run: byte-scan for 3 of 3 items" in method
    assert "(no fingerprints were taken for this row: 3 items)" in method
