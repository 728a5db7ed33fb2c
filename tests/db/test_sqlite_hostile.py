"""SQLite files whose schema or setup hides copies of the selected rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from plugins.sqlite import SQLitePlugin
from tests.db.conftest import canary, files_contain, sqlite_files
from tests.helpers.driver import run_plugin


def test_symlinked_file_scans_real_wal(sqlite_db, tmp_path):
    # SQLite resolves a symlinked database path and keeps the -wal file
    # beside the real file, not beside the link.
    real = tmp_path / "real"
    real.mkdir()
    path, conn = sqlite_db("real/app.db", journal_mode="wal")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, note TEXT)")
    secret = canary("wal")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(1, secret), (2, canary()), (3, canary())]
    )
    link = tmp_path / "link.db"
    link.symlink_to(path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM accounts").fetchone()  # blocks the checkpoint

    run = run_plugin(SQLitePlugin, f"sqlite://{link}?table=accounts&where=id = ?", {"params": [1]})
    # The last connection to close checkpoints the log, so look first.
    left_in_wal = files_contain([f"{path}-wal"], secret.encode())
    reader.execute("COMMIT")
    reader.close()
    conn.close()

    assert left_in_wal
    assert run.statuses() == {"accounts:[1]": "purged"}
    [evidence] = run.evidence
    assert not evidence.verified
    assert "remain in the data files" in evidence.checks[1].detail
