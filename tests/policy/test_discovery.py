"""Discovery on a generated corpus with a known count of planted values."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from agent.policy.detectors import Findings, Scanner
from agent.policy.discovery import discover_file, discover_rows

from .reference import (
    make_card,
    random_digits,
    random_mobile,
    random_ric,
    random_uscc,
)

CHECKSUMMED = ("cn-ric", "cn-uscc", "bank-card")


def _plant(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["cn-ric", "cn-uscc", "bank-card", "email"])
    if kind == "cn-ric":
        value = random_ric(rng)
        if rng.random() < 0.3 and value.endswith("X"):
            value = value[:-1] + "x"
        return kind, value
    if kind == "cn-uscc":
        return kind, random_uscc(rng)
    if kind == "bank-card":
        prefix = rng.choice(["4", "51", "62", "37", "6011"])
        length = (
            15 if prefix == "37" else rng.choice([16, 19]) if prefix == "62" else 16
        )
        return kind, make_card(prefix, length, rng)
    return (
        kind,
        f"user{rng.randrange(10**6)}.{rng.choice('abcxyz')}@mail{rng.randrange(50)}.example.cn",
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter[str]]:
    """Write CSV, JSON and text files; return the folder and the planted counts."""
    rng = random.Random(20261204)
    root = tmp_path_factory.mktemp("corpus")
    planted: Counter[str] = Counter()

    rows = ["id,name,phone,document,note,amount"]
    for index in range(3000):
        kind, value = _plant(rng)
        planted[kind] += 1
        planted["cn-mobile"] += 1
        decoy = random_digits(rng, rng.choice([13, 14, 15, 16, 17, 18, 19]))
        rows.append(
            f"{index},Name {index},{random_mobile(rng)},{value},ref {decoy},{rng.randrange(10**6) / 100}"
        )
    (root / "customers.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    records = []
    for index in range(1500):
        kind, value = _plant(rng)
        planted[kind] += 1
        records.append({"id": index, "value": value, "order": random_digits(rng, 16)})
    (root / "export.json").write_text(
        json.dumps(records, ensure_ascii=False), encoding="utf-8"
    )

    lines = []
    for index in range(1500):
        kind, value = _plant(rng)
        planted[kind] += 1
        planted["cn-mobile"] += 1
        lines.append(
            f"第{index}条 客户资料 {value}; 手机 {random_mobile(rng)}; 订单 {random_digits(rng, 18)}"
        )
    (root / "notes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, planted


def _scan(root: Path, scanner: Scanner) -> Findings:
    total = Findings()
    for path in sorted(root.iterdir()):
        total.merge(discover_file(path, scanner))
    return total


def test_discovery_recall_on_planted_values(corpus: tuple[Path, Counter[str]]) -> None:
    root, planted = corpus
    found = _scan(root, Scanner())
    for kind in (*CHECKSUMMED, "email", "cn-mobile"):
        assert found.counts.get(kind, 0) == planted[kind], kind


def test_discovery_reports_no_other_kinds(corpus: tuple[Path, Counter[str]]) -> None:
    root, planted = corpus
    found = _scan(root, Scanner())
    assert set(found.counts) == set(planted)


def test_discovery_examples_are_masked(corpus: tuple[Path, Counter[str]]) -> None:
    root, _ = corpus
    found = _scan(root, Scanner())
    for kind, examples in found.examples.items():
        assert examples, kind
        for example in examples:
            assert "***" in example, (kind, example)


def test_random_digit_strings_give_no_findings(tmp_path: Path) -> None:
    rng = random.Random(99)
    lines = ["id,reference"]
    for index in range(20000):
        lines.append(f"{index},{random_digits(rng, rng.randrange(11, 20))}")
    path = tmp_path / "references.csv"
    path.write_text("\n".join(lines) + "\n")
    found = discover_file(path, Scanner())
    assert found.counts == {}
    assert found.scanned_bytes == path.stat().st_size


def test_random_digit_strings_generator_covers_lengths() -> None:
    rng = random.Random(1)
    lengths = {len(random_digits(rng, length)) for length in range(11, 20)}
    assert lengths == set(range(11, 20))


def test_discovery_max_bytes_truncates(corpus: tuple[Path, Counter[str]]) -> None:
    root, _ = corpus
    found = discover_file(root / "customers.csv", Scanner(), max_bytes=1000)
    assert found.truncated
    assert found.scanned_bytes == 1000


def test_discovery_skips_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "blob.dat"
    path.write_bytes(b"\x00\x01" * 100 + b"11010519491231002X")
    found = discover_file(path, Scanner())
    assert found.counts == {}
    assert found.note == "binary file, not scanned"


def test_discovery_skips_binary_suffix(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(b"11010519491231002X\n")
    found = discover_file(path, Scanner())
    assert found.counts == {}
    assert found.scanned_bytes == 0
    assert found.note == "binary format, not scanned"


def test_discovery_reads_xlsx(tmp_path: Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["name", "id"])
    sheet.append(["Li", "11010519491231002X"])
    path = tmp_path / "people.xlsx"
    workbook.save(path)
    assert discover_file(path, Scanner()).counts == {"cn-ric": 1}


def test_discovery_reads_docx(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("联系人手机 13812345678, 邮箱 li@example.com")
    path = tmp_path / "letter.docx"
    document.save(str(path))
    assert discover_file(path, Scanner()).counts == {"cn-mobile": 1, "email": 1}


def test_discover_rows_counts_per_column() -> None:
    rows = [
        {
            "id": 1,
            "phone": "13812345678",
            "email": "a@example.com",
            "notes": "13812345678",
        },
        {
            "id": 2,
            "phone": "13912345678",
            "email": None,
            "notes": "id 11010519491231002X",
        },
    ]
    found = discover_rows(rows, Scanner())
    assert found.columns == {
        "phone": {"cn-mobile": 2},
        "email": {"email": 1},
        "notes": {"cn-ric": 1},
    }
    assert found.scanned_rows == 2


def test_discover_rows_sample_limit() -> None:
    rows = ({"email": f"u{i}@example.com"} for i in range(100))
    found = discover_rows(rows, Scanner(), sample=10)
    assert found.counts == {"email": 10}
    assert found.truncated


def test_discover_rows_chinook_customers(tmp_path: Path) -> None:
    import shutil
    import sqlite3

    source = (
        Path(__file__).parents[3]
        / "shared"
        / "data"
        / "chinook"
        / "Chinook_Sqlite.sqlite"
    )
    if not source.exists():
        source = Path("/work/shared/data/chinook/Chinook_Sqlite.sqlite")
    copy = tmp_path / "chinook.sqlite"
    shutil.copyfile(source, copy)
    connection = sqlite3.connect(copy)
    connection.row_factory = sqlite3.Row
    try:
        rows = (dict(row) for row in connection.execute("SELECT * FROM Customer"))
        found = discover_rows(rows, Scanner())
    finally:
        connection.close()
    assert found.columns["Email"] == {"email": 59}
    assert found.scanned_rows == 59


def test_discovery_does_not_block_on_fifo(tmp_path: Path) -> None:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    found = discover_file(path, Scanner())
    assert found.note == "not a regular file, not scanned"


def test_discovery_does_not_follow_symlink(tmp_path: Path) -> None:
    target = tmp_path / "outside.csv"
    target.write_text("11010519491231002X\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with pytest.raises(OSError):
        discover_file(link, Scanner())


def test_discovery_loads_compiled_loop_after_small_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.policy import discovery

    monkeypatch.setattr(discovery, "COMPILED_MIN_BYTES", 10_000)
    rng = random.Random(5)
    paths = []
    for index in range(3):
        rows = [f"{row},{random_ric(rng)}" for row in range(300)]
        path = tmp_path / f"part{index}.csv"
        path.write_text("\n".join(rows) + "\n")
        paths.append(path)
    assert 5_000 < paths[0].stat().st_size < 10_000
    scanner = Scanner()
    first = discover_file(paths[0], scanner)
    assert scanner.compiled is None
    second = discover_file(paths[1], scanner)
    assert scanner.compiled is not None
    third = discover_file(paths[2], scanner)
    assert first.counts == {"cn-ric": 300}
    assert second.counts == {"cn-ric": 300}
    assert third.counts == {"cn-ric": 300}
