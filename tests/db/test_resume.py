"""Database jobs killed after their deletes commit, then resumed.

The engine kills ``lethe purge`` with SIGKILL after the first item's result
(``LETHE_CRASH_AFTER_ITEMS=1``). The database plugins report results only
after the batch's delete has committed, so every selected row is gone while
the journal still records the items as ``purging``. The resumed job verifies
those items without purging them again, and must still compact the table.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import yaml

from tests.db.conftest import canary, files_contain, pg_relation_files
from tests.helpers.cli import run_cli


def run_lethe(
    tmp_path: Path, *arguments: str, crash_after: int = 0
) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path / "state", *arguments, crash_after=crash_after)


def crash_then_resume(
    tmp_path: Path, url: str, options: dict
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run a purge that dies after its first item, then resume it.

    Returns the resumed run and the job's target steps by name and status.
    """
    config = tmp_path / "lethe.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"url": url, "options": options}]}))
    crashed = run_lethe(tmp_path, "purge", "-c", str(config), "--yes", crash_after=1)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    journal = tmp_path / "state" / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs").fetchall()

    resumed = run_lethe(tmp_path, "purge", "--resume", job_id, "--yes")

    with sqlite3.connect(journal) as db:
        steps = dict(db.execute("SELECT name, status FROM steps").fetchall())
    return resumed, steps


def test_resume_postgresql_compacts_table(tmp_path, pg_database):
    marker = canary()
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, email text)")
        conn.execute("ALTER TABLE accounts SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO accounts VALUES (1, %s), (2, %s), (3, %s)",
            (marker, canary(), canary()),
        )

    resumed, steps = crash_then_resume(
        tmp_path, pg_database, {"table": "accounts", "where": "id <= %s", "params": [2]}
    )

    assert resumed.returncode == 1, resumed.stderr[-2000:]
    assert steps.get("vacuum-full:public.accounts") == "purged"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        files = pg_relation_files(conn, "accounts")
        assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 1
    assert not files_contain(files, marker.encode())


def test_resume_sqlite_runs_vacuum(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(1, canary()), (2, canary()), (3, canary())]
    )
    conn.commit()
    conn.close()

    resumed, steps = crash_then_resume(
        tmp_path, f"sqlite://{path}", {"table": "accounts", "where": "id <= ?", "params": [2]}
    )

    assert resumed.returncode == 1, resumed.stderr[-2000:]
    assert steps.get("vacuum") == "purged"
