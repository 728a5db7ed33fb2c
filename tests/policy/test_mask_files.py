"""Masking of CSV and JSON files through the real ``lethe`` command on ext4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plugins._files.mask import copy_name
from tests.files.conftest import raw_image
from tests.helpers.loopfs import LoopFilesystem

ROWS = 200
HEADER = "id,name,phone,email,id_number\n"


def phone(index: int) -> str:
    return f"139{index:08d}"


def email(index: int) -> str:
    return f"customer.{index:04d}@example.org"


def id_number(index: int) -> str:
    return f"3301061985{index % 12 + 1:02d}{index % 28 + 1:02d}{index:04d}"


def customers_csv() -> str:
    lines = [
        f"{index},Person {index},{phone(index)},{email(index)},{id_number(index)}\n"
        for index in range(ROWS)
    ]
    return HEADER + "".join(lines)


def orders_jsonl() -> str:
    lines = [
        json.dumps({"order": index, "customer": {"phone": phone(index + ROWS)}}) + "\n"
        for index in range(50)
    ]
    return "".join(lines)


@pytest.fixture
def lethe(tmp_path: Path):
    """Run the installed ``lethe`` command with a state directory of its own."""
    command = shutil.which("lethe") or str(Path(sys.executable).parent / "lethe")

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LETHE_STATE_DIR": str(tmp_path / "state")}
        return subprocess.run(
            [command, *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=300,
            check=False,
        )

    return run


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = tmp_path / "mask.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    path = tmp_path / "lethe.yaml"
    path.write_text(
        "policy:\n"
        "  holds:\n"
        "    - name: customer-records\n"
        "      until: 2099-01-01\n"
        '      match: {paths: ["**/customers.csv", "**/orders.jsonl", "**/notes.txt"]}\n'
        "      mask:\n"
        f"        key_file: {key}\n"
        "        fields:\n"
        "          phone: {method: keep, keep_last: 4}\n"
        "          email: {method: hmac, length: 16}\n"
        "          id_number: {method: keep, keep_first: 6}\n"
    )
    return path


def make_exports(filesystem: LoopFilesystem) -> Path:
    target = filesystem.mountpoint / "exports"
    target.mkdir()
    (target / "customers.csv").write_text(customers_csv())
    (target / "orders.jsonl").write_text(orders_jsonl())
    (target / "old-report.txt").write_text("quarterly report, destroyed\n" * 20)
    os.sync()
    return target


def test_cli_masks_csv_and_json(lethe, ext4, config: Path) -> None:
    target = make_exports(ext4)
    result = lethe("purge", "--yes", "-c", str(config), str(target))
    raw = raw_image(ext4)
    masked = (target / "customers.csv").read_text().splitlines()
    orders = [
        json.loads(line) for line in (target / "orders.jsonl").read_text().splitlines()
    ]
    assert result.returncode == 1, result.stdout + result.stderr  # folder kept
    assert "destroyed and verified 3" in result.stdout
    assert not (target / "old-report.txt").exists()
    assert masked[0] == HEADER.strip()
    assert masked[1].startswith("0,Person 0,*******0000,")
    assert masked[1].endswith(",330106************")
    assert orders[0]["customer"]["phone"] == "*******0200"
    assert sorted(os.listdir(target)) == ["customers.csv", "orders.jsonl"]
    assert [index for index in range(ROWS) if phone(index).encode() in raw] == []
    assert [index for index in range(ROWS) if email(index).encode() in raw] == []
    assert [index for index in range(ROWS) if id_number(index).encode() in raw] == []
    assert [i for i in range(50) if phone(i + ROWS).encode() in raw] == []
    assert b"Person 7," in raw


def test_cli_mask_keeps_mode(lethe, ext4, config: Path) -> None:
    target = make_exports(ext4)
    (target / "customers.csv").chmod(0o640)
    lethe("purge", "--yes", "-c", str(config), str(target))
    assert (target / "customers.csv").stat().st_mode & 0o777 == 0o640


def test_plan_refuses_text_file_mask(lethe, ext4, config: Path) -> None:
    target = make_exports(ext4)
    (target / "notes.txt").write_text(f"call {phone(1)}\n")
    result = lethe("plan", "--json", "-c", str(config), str(target))
    refused = json.loads(result.stdout)["targets"][0]["refused"]
    details = [row["detail"] for entry in refused for row in entry["examples"]]
    assert result.returncode == 1
    assert any("notes.txt: only CSV" in detail for detail in details)


def test_leftover_copy_stops_masking(lethe, ext4, config: Path) -> None:
    """A copy left by an interrupted run is kept, and the original is not touched."""
    target = make_exports(ext4)
    leftover = target / copy_name("customers.csv")
    leftover.write_text("masked rows of an interrupted run\n")
    result = lethe("purge", "--yes", "-c", str(config), str(target))
    assert result.returncode == 2, result.stdout + result.stderr
    assert leftover.exists()
    assert (target / "customers.csv").read_text() == customers_csv()
    assert "interrupted masking run" in result.stdout + result.stderr
