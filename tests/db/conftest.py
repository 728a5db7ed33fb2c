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
