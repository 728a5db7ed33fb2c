"""Backup files that hold a purged customer: a SQL dump and a tar archive.

The customer files are exports of the Chinook sample database (customer
row and invoices). The dumps are a real ``pg_dump`` of Chinook loaded into
a scratch database on the local PostgreSQL server, and Chinook's own
PostgreSQL script (INSERT statements), plain and gzip-compressed.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from plugins.files import FilesPlugin
from tests.conftest import require_tool
from tests.files.conftest import make_filesystem, raw_image
from tests.helpers.driver import run_plugin

CHINOOK = Path("/work/shared/data/chinook")
EMAIL = b"luisg@embraer.com.br"


def customer_export(database: Path, customer_id: int) -> bytes:
    """Return one customer's row and invoices as CSV, as an export tool writes them."""
    connection = sqlite3.connect(database)
    try:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows(
            connection.execute(
                "SELECT * FROM Customer WHERE CustomerId = ?", (customer_id,)
            )
        )
        writer.writerows(
            connection.execute(
                "SELECT * FROM Invoice WHERE CustomerId = ?", (customer_id,)
            )
        )
        return out.getvalue().encode()
    finally:
        connection.close()


def pg_dump_of_chinook(output: Path) -> None:
    """Load Chinook into a scratch database, pg_dump it to ``output``, drop it."""
    require_tool("psql")
    require_tool("pg_dump")
    database = f"lethe_backups_{secrets.token_hex(4)}"
    server = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
    script = (CHINOOK / "Chinook_PostgreSql.sql").read_text(encoding="utf-8")
    # The script creates and connects to a database named chinook; the
    # scratch database takes its place.
    body = "\n".join(
        line
        for line in script.splitlines()
        if not line.startswith(("DROP DATABASE", "CREATE DATABASE", "\\c "))
    )
    subprocess.run(
        ["psql", *server, "-q", "-c", f"CREATE DATABASE {database}"], check=True
    )
    try:
        subprocess.run(
            ["psql", *server, "-q", "-v", "ON_ERROR_STOP=1", "-d", database],
            input=body.encode(),
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["pg_dump", *server, "--format=plain", "-f", str(output), database],
            check=True,
        )
    finally:
        subprocess.run(
            ["psql", *server, "-q", "-c", f"DROP DATABASE IF EXISTS {database}"],
            check=True,
        )


def tar_of(directory: Path, archive: Path, mode: str) -> None:
    with tarfile.open(archive, mode) as handle:
        handle.add(directory, arcname=directory.name)


@pytest.fixture
def ext4(tmp_path: Path):
    yield from make_filesystem(tmp_path, "ext4", 64)


@pytest.fixture(scope="module")
def chinook_dump(tmp_path_factory) -> Path:
    """A pg_dump of Chinook, made once for the module."""
    output = tmp_path_factory.mktemp("pgdump") / "chinook-pgdump.sql"
    pg_dump_of_chinook(output)
    return output


@pytest.fixture
def layout(ext4, tmp_path: Path, chinook_dump: Path) -> dict[str, Path]:
    """Exports of customer 1 as the target; dumps and archives as backups."""
    database = tmp_path / "chinook.sqlite"
    shutil.copyfile(CHINOOK / "Chinook_Sqlite.sqlite", database)
    root = ext4.mountpoint
    exports = root / "exports"
    exports.mkdir()
    (exports / "customer-0001.csv").write_bytes(customer_export(database, 1))
    backups = root / "backups"
    backups.mkdir()
    shutil.copyfile(chinook_dump, backups / "chinook-pgdump.sql")
    dump = backups / "chinook.sql"
    shutil.copyfile(CHINOOK / "Chinook_PostgreSql.sql", dump)
    with (
        open(dump, "rb") as source,
        gzip.open(backups / "chinook-old.sql.gz", "wb") as target,
    ):
        shutil.copyfileobj(source, target)
    tar_of(exports, backups / "exports.tar.gz", "w:gz")
    other = tmp_path / "exports-other"
    other.mkdir()
    (other / "customer-0002.csv").write_bytes(customer_export(database, 2))
    tar_of(other, backups / "other.tar", "w")
    (backups / "notes.txt").write_text("rotation log: nothing personal here\n")
    os.sync()
    return {"exports": exports, "backups": backups}


def backup_options(layout, purge: bool) -> dict:
    return {
        "backups": {
            "paths": [str(layout["backups"])],
            "patterns": ["*.sql", "*.sql.gz", "*.tar", "*.tar.gz"],
            "purge": purge,
        }
    }


def found_backups(run) -> dict[str, object]:
    return {
        os.path.basename(entry.item.key): entry
        for entry in run.planned
        if entry.item.attributes.get("copy") == "backup"
    }


def test_plan_finds_customer_in_dump_and_tar(layout):
    run = run_plugin(
        FilesPlugin,
        str(layout["exports"]),
        options=backup_options(layout, False),
        purge=False,
    )
    assert set(found_backups(run)) == {
        "chinook-pgdump.sql",
        "chinook.sql",
        "chinook-old.sql.gz",
        "exports.tar.gz",
    }


def test_plan_names_the_customer_file(layout):
    run = run_plugin(
        FilesPlugin,
        str(layout["exports"]),
        options=backup_options(layout, False),
        purge=False,
    )
    tar = found_backups(run)["exports.tar.gz"].item
    assert tar.attributes["members"] == ["exports/customer-0001.csv"]
    assert tar.attributes["holds"] == [str(layout["exports"] / "customer-0001.csv")]


def test_kept_backups_refused_and_intact(layout):
    before = (layout["backups"] / "chinook.sql").read_bytes()
    run = run_plugin(
        FilesPlugin, str(layout["exports"]), options=backup_options(layout, False)
    )
    reasons = {os.path.basename(k): v for k, v in run.refusal_reasons().items()}
    assert reasons == {
        "chinook-pgdump.sql": "copy-kept",
        "chinook.sql": "copy-kept",
        "chinook-old.sql.gz": "copy-kept",
        "exports.tar.gz": "copy-kept",
    }
    assert (layout["backups"] / "chinook.sql").read_bytes() == before
    assert not (layout["exports"] / "customer-0001.csv").exists()


def test_allowed_backups_purged(layout, ext4):
    assert raw_image(ext4).count(EMAIL) > 0  # control
    run = run_plugin(
        FilesPlugin,
        str(layout["exports"]),
        options=backup_options(layout, True),
        settings={"scan_device": True},
    )
    assert run.refused == []
    assert run.unverified() == []
    assert sorted(os.listdir(layout["backups"])) == ["notes.txt", "other.tar"]
    assert raw_image(ext4).count(EMAIL) == 0
