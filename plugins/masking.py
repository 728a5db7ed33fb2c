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

A mask spec is the mapping that the policy puts in a hold's ``mask`` and
that the agent passes to plugins in ``Decision.params["mask"]``. Its
``fields`` map a field (CSV column, JSON key, table column) to a method
with options, and its ``key_file`` names the HMAC key. Plugins import this module, so it depends
on nothing in ``agent``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from plugins.scan import token_fingerprints

HMAC = "hmac"
KEEP = "keep"
METHODS = (HMAC, KEEP)
MIN_KEY_BYTES = 32
CSV = "csv"
JSON = "json"
#: File formats that can be masked, by lower-case suffix.
FILE_FORMATS = {
    ".csv": CSV,
    ".tsv": CSV,
    ".json": JSON,
    ".jsonl": JSON,
    ".ndjson": JSON,
}


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


class RecordVisitor(Protocol):
    """The record handler that the CSV and JSON walkers call for each record."""

    fields: Mapping[str, Any]

    def mask_record(self, record: dict[str, Any], stats: MaskStats) -> None: ...


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


def field_masks(spec: Mapping[str, Any]) -> dict[str, FieldMask]:
    """Return the field masks of a mask spec, by field name."""
    return {
        name: FieldMask(**options) for name, options in spec.get("fields", {}).items()
    }


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
        """Build a masker from a mask spec, reading its key file when it names one."""
        key_file = spec.get("key_file")
        key = load_key(key_file) if key_file else None
        return cls(field_masks(spec), key)

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


class ValueCollector:
    """Collects the values a masker would replace, and changes nothing.

    Planning uses it to take fingerprints of the values before masking
    runs, without needing the HMAC key.
    """

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = dict(fields)

    def mask_record(self, record: dict[str, Any], stats: MaskStats) -> None:
        found = False
        for name in self.fields:
            if name in record and record[name] not in (None, ""):
                for token in token_fingerprints(_as_text(record[name])):
                    if token not in stats.fingerprints:
                        stats.fingerprints.append(token)
                stats.fields += 1
                found = True
        if found:
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


def file_format(name: str) -> str | None:
    """Return ``csv`` or ``json`` for a file name that can be masked, else None."""
    return FILE_FORMATS.get(os.path.splitext(name)[1].lower())


def mask_csv(
    source: TextIO, out: TextIO | None, visitor: RecordVisitor, name: str = "file"
) -> MaskStats:
    """Copy a CSV stream to ``out`` with the visitor's columns masked.

    The first row is the header; columns are named by it. ``source`` and
    ``out`` are text streams opened with ``newline=""``. With ``out`` None
    the rows are only visited, as :class:`ValueCollector` needs.
    """
    stats = MaskStats()
    dialect, newline = _sniff(source)
    reader = csv.DictReader(source, dialect=dialect)
    missing = [name for name in visitor.fields if name not in (reader.fieldnames or ())]
    if len(missing) == len(visitor.fields):
        raise MaskingError(f"{name} has none of the columns {missing}")
    writer = None
    if out is not None:
        writer = csv.DictWriter(
            out,
            fieldnames=reader.fieldnames or [],
            dialect=dialect,
            lineterminator=newline,
        )
        writer.writeheader()
    for row in reader:
        visitor.mask_record(row, stats)
        if writer is not None:
            writer.writerow(row)
    return stats


def _sniff(handle: TextIO) -> tuple[type[csv.Dialect] | csv.Dialect, str]:
    """Return the CSV dialect and the line ending of a seekable text stream."""
    sample = handle.read(64 * 1024)
    handle.seek(0)
    newline = "\r\n" if "\r\n" in sample else "\n"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|"), newline
    except csv.Error:
        return csv.excel, newline


def mask_json(
    source: TextIO, out: TextIO | None, visitor: RecordVisitor, name: str = "file"
) -> MaskStats:
    """Copy a JSON or JSON Lines stream to ``out`` with the visitor's keys masked.

    Keys are matched at any depth of objects and arrays. A stream that is not
    one whole JSON document is read as JSON Lines, one document per line.
    With ``out`` None the documents are only visited.
    """
    # NOTE: the whole document is held in memory, JSON Lines included.
    stats = MaskStats()
    try:
        content = source.read()
    except UnicodeDecodeError as error:
        raise MaskingError(f"{name} is not UTF-8 text: {error.reason}") from error
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
                f"{name} is neither JSON nor JSON Lines: {error}"
            ) from error
        lines = True
    for document in documents:
        _visit_tree(document, visitor, stats)
    if out is None:
        return stats
    if lines:
        for document in documents:
            out.write(json.dumps(document, ensure_ascii=False) + "\n")
    else:
        json.dump(documents[0], out, ensure_ascii=False, indent=2)
    return stats


def _visit_tree(node: Any, visitor: RecordVisitor, stats: MaskStats) -> None:
    if isinstance(node, dict):
        visitor.mask_record(node, stats)
        for value in node.values():
            if isinstance(value, dict | list):
                _visit_tree(value, visitor, stats)
    elif isinstance(node, list):
        for value in node:
            _visit_tree(value, visitor, stats)


def mask_stream(
    file_kind: str,
    source: TextIO,
    out: TextIO | None,
    visitor: RecordVisitor,
    name: str = "file",
) -> MaskStats:
    """Mask a CSV or JSON stream; ``file_kind`` is a value of :data:`FILE_FORMATS`."""
    if file_kind == CSV:
        return mask_csv(source, out, visitor, name)
    return mask_json(source, out, visitor, name)


def open_text(descriptor: int, mode: str, file_kind: str) -> TextIO:
    """Wrap a file descriptor in a text stream suitable for :func:`mask_stream`.

    CSV is read with undecodable bytes kept as surrogates, so a file that
    is not valid UTF-8 is masked without losing its other bytes. JSON must
    be UTF-8. The stream owns the descriptor.
    """
    errors = "surrogateescape" if file_kind == CSV else "strict"
    return open(descriptor, mode, newline="", encoding="utf-8", errors=errors)
