"""Masking of personal fields: files through a path, SQLite tables, checks.

The value masking (methods ``hmac`` and ``keep``, the CSV and JSON
walkers) lives in :mod:`plugins.masking`, so plugins can mask without
importing the agent. This module re-exports it. Database masking updates
the rows with bind parameters, then compacts the file like a purge, so
the old values leave the pages, the free list and the WAL. The functions
here mask SQLite; other database plugins call :meth:`Masker.mask_value`
and run their own compaction.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from plugins.masking import (
    HMAC,
    KEEP,
    METHODS,
    MIN_KEY_BYTES,
    FieldMask,
    Masker,
    MaskingError,
    MaskStats,
    ValueCollector,
    file_format,
    load_key,
    mask_csv,
    mask_json,
    mask_keep,
)
from plugins.scan import FingerprintScanner, Hit

__all__ = [
    "HMAC",
    "KEEP",
    "METHODS",
    "MIN_KEY_BYTES",
    "FieldMask",
    "MaskStats",
    "Masker",
    "MaskingError",
    "ValueCollector",
    "compact_sqlite",
    "load_key",
    "mask_csv_file",
    "mask_file",
    "mask_json_file",
    "mask_keep",
    "mask_sqlite",
    "scan_for_values",
    "sqlite_files",
]


def mask_csv_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    masker: Masker,
    encoding: str = "utf-8",
) -> MaskStats:
    """Write a copy of a CSV file with the configured columns masked.

    The source is not changed: the caller purges it once the copy is in place.
    """
    with (
        open(source, newline="", encoding=encoding, errors="surrogateescape") as reader,
        open(
            destination, "x", newline="", encoding=encoding, errors="surrogateescape"
        ) as out,
    ):
        stats = mask_csv(reader, out, masker, repr(os.fspath(source)))
        out.flush()
        os.fsync(out.fileno())
    return stats


def mask_json_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    masker: Masker,
) -> MaskStats:
    """Write a copy of a JSON or JSON Lines file with the configured keys masked."""
    with (
        open(source, encoding="utf-8", newline="") as reader,
        open(destination, "x", encoding="utf-8", newline="") as out,
    ):
        stats = mask_json(reader, out, masker, repr(os.fspath(source)))
        out.flush()
        os.fsync(out.fileno())
    return stats


def mask_file(source: str | os.PathLike[str], masker: Masker) -> tuple[Path, MaskStats]:
    """Write a masked copy of a CSV, JSON or JSON Lines file beside it.

    Returns the copy's path (a hidden name in the same folder, so a rename
    stays on the same filesystem) and the stats with the fingerprints of
    the old values. The caller purges the original, renames the copy to the
    original name and scans for the fingerprints. Raises MaskingError for
    other formats. The local-files plugin does all of this itself when a
    plan item's method is ``mask``.
    """
    source = Path(source)
    destination = source.with_name(f".{source.name}.{secrets.token_hex(4)}.masked")
    file_kind = file_format(source.name)
    if file_kind == "csv":
        stats = mask_csv_file(source, destination, masker)
    elif file_kind == "json":
        stats = mask_json_file(source, destination, masker)
    else:
        raise MaskingError(
            f"cannot mask {os.fspath(source)!r}: only CSV and JSON files are supported"
        )
    shutil.copymode(source, destination)
    return destination, stats


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def mask_sqlite(
    connection: sqlite3.Connection,
    table: str,
    key_column: str,
    masker: Masker,
    where: str | None = None,
    parameters: Sequence[Any] = (),
) -> MaskStats:
    """Mask columns of a SQLite table in place, then compact the database file.

    Rows are selected by ``where`` (SQL with ``?`` placeholders bound to
    ``parameters``) and updated one by one through ``key_column`` with bind
    parameters, so no value appears in SQL text. Afterwards
    ``secure_delete`` zeroes freed cells, a WAL checkpoint empties the log
    and ``VACUUM`` rewrites the file without the old pages. Raises
    MaskingError when a named column does not exist.
    """
    columns = [
        row[1] for row in connection.execute(f"PRAGMA table_info({_quote(table)})")
    ]
    if not columns:
        raise MaskingError(f"table {table!r} does not exist")
    unknown = [name for name in [key_column, *masker.fields] if name not in columns]
    if unknown:
        raise MaskingError(
            f"table {table!r} has no column {', '.join(map(repr, unknown))}"
        )

    names = list(masker.fields)
    selected = ", ".join(_quote(name) for name in [key_column, *names])
    query = f"SELECT {selected} FROM {_quote(table)}"
    if where:
        query += f" WHERE {where}"
    assignments = ", ".join(f"{_quote(name)} = ?" for name in names)
    update = f"UPDATE {_quote(table)} SET {assignments} WHERE {_quote(key_column)} = ?"

    stats = MaskStats()
    connection.execute("PRAGMA secure_delete = ON")
    rows = connection.execute(query, tuple(parameters)).fetchall()
    with connection:
        for key, *values in rows:
            record = dict(zip(names, values, strict=True))
            masker.mask_record(record, stats)
            connection.execute(update, (*[record[name] for name in names], key))
    compact_sqlite(connection)
    return stats


def compact_sqlite(connection: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL, then VACUUM with secure_delete on."""
    connection.execute("PRAGMA secure_delete = ON")
    journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if str(journal_mode).lower() == "wal":
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise MaskingError(
                "WAL checkpoint blocked by another connection; close it and retry"
            )
    connection.execute("VACUUM")
    if str(journal_mode).lower() == "wal":
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def scan_for_values(
    paths: Iterable[str | os.PathLike[str]], fingerprints: Iterable[bytes]
) -> list[Hit]:
    """Return every place the fingerprints of masked values still appear.

    Missing files (a WAL that was removed) are skipped. An empty result is
    the evidence that masking reached the file's bytes.
    """
    scanner = FingerprintScanner()
    scanner.add_all("masked", fingerprints)
    hits: list[Hit] = []
    for path in paths:
        if os.path.exists(path):
            hits.extend(scanner.scan_file(path))
    return hits


def sqlite_files(database: str | os.PathLike[str]) -> list[str]:
    """Return the database file and its WAL, shared-memory and rollback journal."""
    base = os.fspath(database)
    return [base, base + "-wal", base + "-shm", base + "-journal"]
