"""Irreversible masking of personal fields in records that must be kept.

Two methods per field:

- ``hmac``: the HMAC-SHA256 of the value under a secret key, as hex. Equal
  values stay equal, so joins and counts still work, but without the key
  the original cannot be recovered. Short values such as phone numbers can
  be found again by anyone holding the key who tries every possible value,
  so the key must stay as protected as the data was.
- ``keep``: a fixed mask that keeps only ``keep_first`` and ``keep_last``
  characters and replaces the rest with ``char`` (``6222********1234``).
  ``keep_first: 0, keep_last: 0`` with ``value`` set replaces the whole
  field with that constant.

Database masking updates the rows with bind parameters, then compacts the
file like a purge, so the old values leave the pages, the free list and the
WAL. The functions here mask SQLite; other database plugins call
:meth:`Masker.mask_value` and run their own compaction.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sqlite3
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.scan import FingerprintScanner, Hit, token_fingerprints

HMAC = "hmac"
KEEP = "keep"
METHODS = (HMAC, KEEP)
MIN_KEY_BYTES = 32


class MaskingError(Exception):
    """Masking could not run; the message names the file, table or key."""


@dataclass(frozen=True)
class FieldMask:
    """The masking method of one field, with its options."""

    method: str
    keep_first: int = 0
    keep_last: int = 0
    char: str = "*"
    value: str | None = None
    length: int | None = None  # hex digits kept of the HMAC, all 64 by default


@dataclass
class MaskStats:
    """Counts of one masking run, and the fingerprints of the old values.

    ``fingerprints`` hold original values long enough to search for; they
    live in memory for verification only and are never written out.
    """

    records: int = 0
    fields: int = 0
    fingerprints: list[bytes] = field(default_factory=list)


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a masking key file of at least 32 bytes, readable by its owner only."""
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            key = handle.read()
    except OSError as error:
        raise MaskingError(
            f"cannot read masking key {os.fspath(path)!r}: {error.strerror}"
        ) from error
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MaskingError(
            f"masking key {os.fspath(path)!r} is readable by group or others; "
            "run 'chmod 600' on it"
        )
    if len(key) < MIN_KEY_BYTES:
        raise MaskingError(
            f"masking key {os.fspath(path)!r} has {len(key)} bytes; "
            f"at least {MIN_KEY_BYTES} random bytes are needed"
        )
    return key


class Masker:
    """Masks values field by field with the methods of one mask spec."""

    def __init__(
        self, fields: Mapping[str, FieldMask], key: bytes | None = None
    ) -> None:
        if key is None and any(spec.method == HMAC for spec in fields.values()):
            raise MaskingError(
                "the hmac mask method needs a key (key_file in the mask spec)"
            )
        self.fields = dict(fields)
        self._key = key

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Masker:
        """Build a masker from the mapping a policy puts in ``Assessment.mask``."""
        fields = {
            name: FieldMask(**options)
            for name, options in spec.get("fields", {}).items()
        }
        key_file = spec.get("key_file")
        key = load_key(key_file) if key_file else None
        return cls(fields, key)

    def mask_value(self, field_name: str, value: Any) -> Any:
        """Return the masked form of one value; None and empty values stay as they are."""
        if value is None or value == "":
            return value
        spec = self.fields[field_name]
        text = (
            value.decode("utf-8", "surrogateescape")
            if isinstance(value, bytes)
            else str(value)
        )
        if spec.method == HMAC:
            assert self._key is not None
            digest = hmac.new(
                self._key, text.encode("utf-8", "surrogateescape"), hashlib.sha256
            )
            return digest.hexdigest()[: spec.length or None]
        return mask_keep(text, spec)

    def mask_record(self, record: dict[str, Any], stats: MaskStats) -> None:
        """Mask the configured fields of one record in place."""
        changed = False
        for name in self.fields:
            if name in record and record[name] not in (None, ""):
                stats.fingerprints.extend(token_fingerprints(_as_text(record[name])))
                record[name] = self.mask_value(name, record[name])
                stats.fields += 1
                changed = True
        if changed:
            stats.records += 1


def _as_text(value: Any) -> str | bytes:
    return value if isinstance(value, str | bytes) else str(value)


def mask_keep(text: str, spec: FieldMask) -> str:
    """Keep the first and last characters the spec names, masking the rest."""
    if spec.value is not None and not spec.keep_first and not spec.keep_last:
        return spec.value
    if spec.keep_first + spec.keep_last >= len(text):
        return spec.char * len(text)
    tail = text[len(text) - spec.keep_last :] if spec.keep_last else ""
    hidden = len(text) - spec.keep_first - spec.keep_last
    return text[: spec.keep_first] + spec.char * hidden + tail


def mask_csv_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    masker: Masker,
    encoding: str = "utf-8",
) -> MaskStats:
    """Write a copy of a CSV file with the configured columns masked.

    The first row is the header; columns are named by it. The source is not
    changed: the caller purges it once the copy is in place.
    """
    stats = MaskStats()
    with (
        open(
            source, newline="", encoding=encoding, errors="surrogateescape"
        ) as reader_file,
        open(
            destination, "x", newline="", encoding=encoding, errors="surrogateescape"
        ) as out,
    ):
        dialect, newline = _sniff(reader_file)
        reader = csv.DictReader(reader_file, dialect=dialect)
        missing = [
            name for name in masker.fields if name not in (reader.fieldnames or ())
        ]
        if len(missing) == len(masker.fields):
            raise MaskingError(
                f"{os.fspath(source)!r} has none of the columns {missing}"
            )
        writer = csv.DictWriter(
            out,
            fieldnames=reader.fieldnames or [],
            dialect=dialect,
            lineterminator=newline,
        )
        writer.writeheader()
        for row in reader:
            masker.mask_record(row, stats)
            writer.writerow(row)
        out.flush()
        os.fsync(out.fileno())
    return stats


def _sniff(handle: Any) -> tuple[type[csv.Dialect] | csv.Dialect, str]:
    """Return the CSV dialect and the line ending of a file open in text mode."""
    sample = handle.read(64 * 1024)
    handle.seek(0)
    newline = "\r\n" if "\r\n" in sample else "\n"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|"), newline
    except csv.Error:
        return csv.excel, newline


def mask_json_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    masker: Masker,
) -> MaskStats:
    """Write a copy of a JSON or JSON Lines file with the configured keys masked.

    Keys are matched at any depth of objects and arrays. A file whose first
    non-blank character is not ``[`` or ``{`` followed by a whole document
    is read as JSON Lines, one document per line.
    """
    # NOTE: a JSON document is loaded whole; JSON Lines files stream line by line.
    stats = MaskStats()
    text_source = Path(source)
    with open(text_source, encoding="utf-8") as handle:
        content = handle.read()
    try:
        documents: list[Any] = [json.loads(content)]
        lines = False
    except json.JSONDecodeError:
        try:
            documents = [
                json.loads(line) for line in content.splitlines() if line.strip()
            ]
        except json.JSONDecodeError as error:
            raise MaskingError(
                f"{os.fspath(source)!r} is neither JSON nor JSON Lines: {error}"
            ) from error
        lines = True
    for document in documents:
        _mask_tree(document, masker, stats)
    with open(destination, "x", encoding="utf-8") as out:
        if lines:
            for document in documents:
                out.write(json.dumps(document, ensure_ascii=False) + "\n")
        else:
            json.dump(documents[0], out, ensure_ascii=False, indent=2)
        out.flush()
        os.fsync(out.fileno())
    return stats


def _mask_tree(node: Any, masker: Masker, stats: MaskStats) -> None:
    if isinstance(node, dict):
        masker.mask_record(node, stats)
        for value in node.values():
            if isinstance(value, dict | list):
                _mask_tree(value, masker, stats)
    elif isinstance(node, list):
        for value in node:
            _mask_tree(value, masker, stats)


def mask_file(source: str | os.PathLike[str], masker: Masker) -> tuple[Path, MaskStats]:
    """Write a masked copy of a CSV, JSON or JSON Lines file beside it.

    Returns the copy's path (a hidden name in the same folder, so a rename
    stays on the same filesystem) and the stats with the fingerprints of
    the old values. The caller purges the original, renames the copy to the
    original name and scans for the fingerprints. Raises MaskingError for
    other formats.
    """
    source = Path(source)
    suffix = source.suffix.lower()
    destination = source.with_name(f".{source.name}.{secrets.token_hex(4)}.masked")
    if suffix in (".csv", ".tsv"):
        stats = mask_csv_file(source, destination, masker)
    elif suffix in (".json", ".jsonl", ".ndjson"):
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
