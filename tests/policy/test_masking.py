"""Masking of values, CSV and JSON files, and SQLite with byte-level checks."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from agent.policy.masking import (
    FieldMask,
    Masker,
    MaskingError,
    ValueCollector,
    load_key,
    mask_csv_file,
    mask_file,
    mask_json_file,
    mask_sqlite,
    scan_for_values,
    sqlite_files,
)
from plugins.masking import mask_csv
from plugins.scan import token_fingerprints

CHINOOK = Path("/work/shared/data/chinook/Chinook_Sqlite.sqlite")
KEY = bytes(range(32))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "mask.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return path


@pytest.fixture
def chinook(tmp_path: Path) -> Path:
    copy = tmp_path / "chinook.sqlite"
    shutil.copyfile(CHINOOK, copy)
    return copy


def _masker() -> Masker:
    return Masker(
        {
            "Email": FieldMask("hmac"),
            "Phone": FieldMask("keep", keep_last=4),
            "Fax": FieldMask("keep", value="REMOVED"),
        },
        KEY,
    )


def test_keep_last_four() -> None:
    masker = Masker({"card": FieldMask("keep", keep_last=4)})
    assert masker.mask_value("card", "6222021234567890") == "************7890"


def test_keep_first_and_last() -> None:
    masker = Masker({"id": FieldMask("keep", keep_first=3, keep_last=4, char="#")})
    assert masker.mask_value("id", "11010519491231002X") == "110###########002X"


def test_keep_short_value_fully_masked() -> None:
    masker = Masker({"id": FieldMask("keep", keep_first=2, keep_last=2)})
    assert masker.mask_value("id", "abc") == "***"


def test_hmac_is_keyed_and_stable() -> None:
    first = Masker({"e": FieldMask("hmac")}, KEY).mask_value("e", "li@example.com")
    again = Masker({"e": FieldMask("hmac")}, KEY).mask_value("e", "li@example.com")
    other_key = Masker({"e": FieldMask("hmac")}, bytes(32)).mask_value(
        "e", "li@example.com"
    )
    assert first == again
    assert first != other_key
    assert len(first) == 64


def test_hmac_truncated_length() -> None:
    assert (
        len(Masker({"e": FieldMask("hmac", length=16)}, KEY).mask_value("e", "x")) == 16
    )


def test_hmac_needs_key() -> None:
    with pytest.raises(MaskingError):
        Masker({"e": FieldMask("hmac")})


def test_none_and_empty_unchanged() -> None:
    masker = Masker({"e": FieldMask("keep")})
    assert masker.mask_value("e", None) is None
    assert masker.mask_value("e", "") == ""


def test_load_key_rejects_open_mode(key_file: Path) -> None:
    key_file.chmod(0o644)
    with pytest.raises(MaskingError, match="chmod 600"):
        load_key(key_file)


def test_load_key_rejects_short_key(tmp_path: Path) -> None:
    path = tmp_path / "short.key"
    path.write_bytes(b"x" * 8)
    path.chmod(0o600)
    with pytest.raises(MaskingError, match="at least 32"):
        load_key(path)


def test_masker_from_spec(key_file: Path) -> None:
    masker = Masker.from_spec(
        {
            "fields": {
                "Email": {"method": "hmac"},
                "Phone": {"method": "keep", "keep_last": 4},
            },
            "key_file": str(key_file),
        }
    )
    assert masker.mask_value("Phone", "13812345678") == "*******5678"


def test_mask_csv_file(tmp_path: Path) -> None:
    source = tmp_path / "customers.csv"
    source.write_text(
        "id,name,phone,email\n1,Li Na,13812345678,li.na@example.com\n2,Wang,13987654321,\n",
        encoding="utf-8",
    )
    destination = tmp_path / "customers.masked.csv"
    masker = Masker(
        {"phone": FieldMask("keep", keep_last=4), "email": FieldMask("hmac")}, KEY
    )
    stats = mask_csv_file(source, destination, masker)
    with open(destination, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["phone"] for row in rows] == ["*******5678", "*******4321"]
    assert rows[0]["name"] == "Li Na"
    assert rows[1]["email"] == ""
    assert stats.records == 2
    assert stats.fields == 3
    assert scan_for_values([destination], stats.fingerprints) == []
    assert scan_for_values([source], stats.fingerprints) != []


def test_mask_csv_without_columns_rejected(tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("a,b\n1,2\n")
    with pytest.raises(MaskingError, match="none of the columns"):
        mask_csv_file(source, tmp_path / "b.csv", Masker({"phone": FieldMask("keep")}))


def test_mask_json_nested(tmp_path: Path) -> None:
    source = tmp_path / "orders.json"
    document = {
        "orders": [{"id": 1, "customer": {"phone": "13812345678", "name": "Li"}}]
    }
    source.write_text(json.dumps(document), encoding="utf-8")
    destination = tmp_path / "orders.masked.json"
    stats = mask_json_file(
        source, destination, Masker({"phone": FieldMask("keep", keep_last=4)})
    )
    masked = json.loads(destination.read_text(encoding="utf-8"))
    assert masked["orders"][0]["customer"] == {"phone": "*******5678", "name": "Li"}
    assert stats.fields == 1


def test_mask_json_lines(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text('{"email": "a@example.com"}\n{"email": "b@example.com"}\n')
    destination = tmp_path / "events.masked.jsonl"
    mask_json_file(
        source, destination, Masker({"email": FieldMask("keep", keep_first=1)})
    )
    lines = destination.read_text().splitlines()
    assert [json.loads(line)["email"] for line in lines] == [
        "a************",
        "b************",
    ]


def _customer_values(database: Path, country: str | None = None) -> list[bytes]:
    query = "SELECT Email, Phone, Fax FROM Customer"
    parameters: tuple[str, ...] = ()
    if country is not None:
        query += " WHERE Country = ?"
        parameters = (country,)
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(query, parameters).fetchall()
    finally:
        connection.close()
    values = [value for row in rows for value in row if value]
    return token_fingerprints(*values)


def test_sqlite_mask_leaves_no_original_bytes(chinook: Path) -> None:
    fingerprints = _customer_values(chinook)
    assert scan_for_values(sqlite_files(chinook), fingerprints), (
        "control: values present before"
    )
    connection = sqlite3.connect(chinook)
    try:
        stats = mask_sqlite(connection, "Customer", "CustomerId", _masker())
        emails = [
            row[0] for row in connection.execute("SELECT Email FROM Customer LIMIT 2")
        ]
    finally:
        connection.close()
    assert stats.records == 59
    assert all(len(email) == 64 for email in emails)
    assert scan_for_values(sqlite_files(chinook), fingerprints) == []


def test_sqlite_update_alone_leaves_bytes(chinook: Path) -> None:
    """Without secure_delete and VACUUM the old values stay in the file."""
    fingerprints = _customer_values(chinook)
    connection = sqlite3.connect(chinook)
    try:
        connection.execute("PRAGMA secure_delete = OFF")
        with connection:
            connection.execute(
                "UPDATE Customer SET Email = 'x', Phone = 'x', Fax = 'x'"
            )
    finally:
        connection.close()
    assert scan_for_values(sqlite_files(chinook), fingerprints) != []


def test_sqlite_mask_in_wal_mode(chinook: Path) -> None:
    setup = sqlite3.connect(chinook)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.close()
    brazil = _customer_values(chinook, "Brazil")
    others = _customer_values(chinook, "Canada")
    connection = sqlite3.connect(chinook)
    try:
        mask_sqlite(
            connection,
            "Customer",
            "CustomerId",
            _masker(),
            where="Country = ?",
            parameters=("Brazil",),
        )
        masked = connection.execute(
            "SELECT count(*) FROM Customer WHERE Fax = 'REMOVED'"
        ).fetchone()[0]
    finally:
        connection.close()
    assert masked == 5
    assert brazil
    assert scan_for_values(sqlite_files(chinook), brazil) == []
    assert scan_for_values(sqlite_files(chinook), others) != []


def test_sqlite_mask_unknown_column(chinook: Path) -> None:
    connection = sqlite3.connect(chinook)
    try:
        with pytest.raises(MaskingError, match="no column 'Mobile'"):
            mask_sqlite(
                connection,
                "Customer",
                "CustomerId",
                Masker({"Mobile": FieldMask("keep")}),
            )
    finally:
        connection.close()


def test_sqlite_mask_unknown_table(chinook: Path) -> None:
    connection = sqlite3.connect(chinook)
    try:
        with pytest.raises(MaskingError, match="does not exist"):
            mask_sqlite(
                connection, "Clients", "Id", Masker({"Phone": FieldMask("keep")})
            )
    finally:
        connection.close()


def test_mask_file_writes_hidden_copy(tmp_path: Path) -> None:
    source = tmp_path / "customers.csv"
    source.write_text("id,phone\n1,13812345678\n")
    source.chmod(0o640)
    copy, stats = mask_file(source, Masker({"phone": FieldMask("keep", keep_last=4)}))
    assert copy.parent == tmp_path
    assert copy.name.startswith(".customers.csv.")
    assert copy.read_bytes() == b"id,phone\n1,*******5678\n"
    assert copy.stat().st_mode & 0o777 == 0o640
    assert stats.fingerprints == [b"13812345678"]


def test_mask_file_rejects_other_formats(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("13812345678\n")
    with pytest.raises(MaskingError, match="only CSV and JSON"):
        mask_file(source, Masker({"phone": FieldMask("keep")}))


def test_value_collector_changes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "customers.csv"
    source.write_text("id,phone\n1,13812345678\n2,13812345678\n")
    with open(source, newline="") as handle:
        stats = mask_csv(handle, None, ValueCollector({"phone": {}}))
    assert stats.fingerprints == [b"13812345678"]
    assert stats.fields == 2
    assert source.read_text() == "id,phone\n1,13812345678\n2,13812345678\n"
