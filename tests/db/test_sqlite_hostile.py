"""SQLite files whose schema or setup hides copies of the selected rows."""

from __future__ import annotations

import sqlite3

import pytest

from plugins.errors import InvalidTarget
from plugins.sqlite import SQLitePlugin
from tests.db.conftest import canary, files_contain, sqlite_files
from tests.helpers.cli import clean_summary, run_cli
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


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_audit_trigger_copy_not_verified(sqlite_db, rows_per_item):
    # The trigger copies each deleted row into another table, so its bytes
    # stay in the file in a row that the purge itself wrote.
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("CREATE TABLE audit (id INTEGER, email TEXT)")
    conn.execute(
        'CREATE TRIGGER "keep copy" AFTER DELETE ON people '
        "BEGIN INSERT INTO audit VALUES (old.id, old.email); END"
    )
    secret = canary("person")
    conn.executemany(
        "INSERT INTO people VALUES (?, ?)", [(1, secret), (2, canary()), (3, canary())]
    )
    conn.close()

    run = run_plugin(
        SQLitePlugin,
        f"sqlite://{path}?table=people&where=id = ?",
        {"params": [1], "rows_per_item": rows_per_item},
    )

    assert files_contain(sqlite_files(path), secret.encode())
    assert set(run.statuses().values()) == {"purged"}
    [evidence] = run.evidence
    assert not evidence.verified
    assert "remain in the data files" in evidence.checks[1].detail
    [risk] = [text for text in run.info.residual if "DELETE triggers" in text]
    assert "keep copy" in risk
    assert "audit" in risk


def test_trigger_through_view_not_verified(sqlite_db):
    # The DELETE trigger writes to a view whose INSTEAD OF trigger stores
    # the row in a table.
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("CREATE TABLE archive (id INTEGER, email TEXT)")
    conn.execute("CREATE VIEW archive_view AS SELECT id, email FROM archive")
    conn.execute(
        "CREATE TRIGGER archive_insert INSTEAD OF INSERT ON archive_view "
        "BEGIN INSERT OR REPLACE INTO [archive] (id, email) VALUES (new.id, new.email); END"
    )
    conn.execute(
        "CREATE TRIGGER archive_people BEFORE DELETE ON people "
        "BEGIN INSERT INTO archive_view VALUES (old.id, old.email); END"
    )
    secret = canary("person")
    conn.executemany(
        "INSERT INTO people VALUES (?, ?)", [(1, secret), (2, canary()), (3, canary())]
    )
    conn.close()

    run = run_plugin(SQLitePlugin, f"sqlite://{path}?table=people&where=id = ?", {"params": [1]})

    assert files_contain(sqlite_files(path), secret.encode())
    [evidence] = run.evidence
    assert not evidence.verified


@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_blob_key_rows_purged(tmp_path, rows_per_item):
    # The purge reads each key back from the job journal, which stores JSON.
    # The TEXT key "b'k1'" looks like the BLOB key b'k1' in Python's repr,
    # so both are selected and must stay two rows with two item keys.
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tokens (id BLOB PRIMARY KEY, note TEXT) WITHOUT ROWID")
    blob_secret = canary("blob")
    text_secret = canary("text")
    conn.executemany(
        "INSERT INTO tokens VALUES (?, ?)",
        [
            (b"k1", blob_secret),
            ("b'k1'", text_secret),
            (b"k2", canary()),
            (b"\x00\xff", canary()),
        ],
    )
    conn.commit()
    conn.close()
    target = (
        f"sqlite://{path}?table=tokens&where=note IN (?, ?)"
        f"&param={blob_secret}&param={text_secret}&rows_per_item={rows_per_item}"
    )

    result = run_cli(tmp_path / "state", "purge", "--yes", target)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert clean_summary(2 // rows_per_item) in result.stdout
    with sqlite3.connect(path) as check:
        left = check.execute("SELECT id FROM tokens ORDER BY id").fetchall()
    assert left == [(b"\x00\xff",), (b"k2",)]
    assert not files_contain(sqlite_files(path), blob_secret.encode())
    assert not files_contain(sqlite_files(path), text_secret.encode())


def test_view_named_as_table(sqlite_db):
    path, conn = sqlite_db()
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("CREATE VIEW active_people AS SELECT * FROM people")
    conn.executemany("INSERT INTO people VALUES (?, ?)", [(1, canary()), (2, canary())])
    conn.close()

    with pytest.raises(InvalidTarget, match="is a view") as raised:
        run_plugin(
            SQLitePlugin, f"sqlite://{path}?table=active_people&where=id = ?", {"params": [1]}
        )

    assert "name the table it reads" in str(raised.value)


def test_set_default_key_failure_advice(sqlite_db):
    # ON DELETE SET DEFAULT points the child at its default, 0, which has no
    # parent row, so the foreign key rejects the delete at COMMIT.
    path, conn = sqlite_db("app.db")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute(
        "CREATE TABLE pets (id INTEGER PRIMARY KEY, owner INTEGER DEFAULT 0 "
        "REFERENCES owners(id) ON DELETE SET DEFAULT)"
    )
    conn.execute("INSERT INTO owners VALUES (1, ?), (2, ?)", (canary("owner"), canary()))
    conn.execute("INSERT INTO pets VALUES (10, 1)")
    conn.close()

    run = run_plugin(
        SQLitePlugin, f"sqlite://{path}?table=owners&where=id = ?", {"params": [1]}
    )

    [result] = [result for result in run.results if result.key == "owners:[1]"]
    assert result.status == "failed"
    assert "SET DEFAULT" in result.detail
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT COUNT(*) FROM owners").fetchone()[0] == 2


def test_blob_key_row_masked_through_cli(tmp_path):
    # A held row is masked by key, and the key comes back from the journal.
    path = tmp_path / "app.db"
    marker = canary("phone")
    secret = marker + "0100"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tokens (id BLOB PRIMARY KEY, phone TEXT)")
    conn.executemany(
        "INSERT INTO tokens VALUES (?, ?)", [(b"k1", secret), (b"\x00\xff", "555-0199")]
    )
    conn.commit()
    conn.close()
    config = tmp_path / "hold.yaml"
    config.write_text(
        "policy:\n  holds:\n    - name: open-accounts\n      until: 2099-01-01\n"
        "      match: {tables: [tokens]}\n"
        "      mask:\n        fields: {phone: {method: keep, keep_last: 4}}\n"
    )
    target = f"sqlite://{path}?table=tokens&where=phone = ?&param={secret}"

    result = run_cli(tmp_path / "state", "purge", "--yes", target, "-c", str(config))

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with sqlite3.connect(path) as check:
        rows = dict(check.execute("SELECT id, phone FROM tokens").fetchall())
    assert len(rows) == 2
    assert rows[b"k1"] != secret
    assert rows[b"k1"].endswith("0100")
    assert rows[b"\x00\xff"] == "555-0199"
    assert not files_contain(sqlite_files(path), marker.encode())
