"""Holds, classes and the policy report through the real ``lethe`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")
TEST_PLUGIN = "testdir=tests.core.dirplugin:DirPlugin"

CONFIG = """
policy:
  rules:
    - name: readme
      class: public
      match: {paths: ["readme.txt"]}
  holds:
    - name: invoices
      until: 2099-01-01
      reason: invoices are kept ten years
      match: {paths: ["**/invoices/*.csv"]}
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def lethe(state: Path) -> Callable[..., subprocess.CompletedProcess[str]]:

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        environment = dict(os.environ)
        environment.update(
            PYTHONPATH=str(REPO),
            LETHE_EXTRA_PLUGINS=TEST_PLUGIN,
            LETHE_STATE_DIR=str(state),
        )
        return subprocess.run(
            [str(LETHE), *args],
            input="",
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            cwd=REPO,
            check=False,
        )

    return run


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "invoices").mkdir(parents=True)
    (root / "customers.csv").write_text(
        "name,phone,id\nLi,13812345678,11010519491231002X\n"
    )
    (root / "readme.txt").write_text("public notes\n")
    (root / "invoices" / "2025.csv").write_text("invoice,amount\n1,100\n")
    return root


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "lethe.yaml"
    path.write_text(CONFIG.lstrip())
    return path


def test_plan_refuses_held_file(lethe, tree: Path, config: Path) -> None:
    result = lethe("plan", f"testdir://{tree}", "-c", str(config), "--json")
    summary = json.loads(result.stdout)
    refused = summary["targets"][0]["refused"]
    assert result.returncode == 1
    assert [row["reason"] for row in refused] == ["hold"]
    assert (
        "retention hold 'invoices' keeps this item until 2099-01-01"
        in refused[0]["examples"][0]["detail"]
    )
    assert summary["classifications"] == {"personal": 1, "public": 1, "unclassified": 1}


def test_purge_keeps_held_file(lethe, tree: Path, config: Path) -> None:
    result = lethe("purge", f"testdir://{tree}", "-c", str(config), "--yes")
    assert result.returncode == 1, result.stderr
    assert (tree / "invoices" / "2025.csv").exists()
    assert not (tree / "customers.csv").exists()


def test_plan_policy_report_html(
    lethe, tree: Path, config: Path, tmp_path: Path
) -> None:
    report = tmp_path / "policy.html"
    result = lethe(
        "plan", f"testdir://{tree}", "-c", str(config), "--policy-report", str(report)
    )
    html = report.read_text()
    assert result.returncode == 1
    assert "110***********002X" in html
    assert "11010519491231002X" not in html
    assert "invoices" in html


def test_plan_policy_report_json(
    lethe, tree: Path, config: Path, tmp_path: Path
) -> None:
    report = tmp_path / "policy.json"
    lethe(
        "plan", f"testdir://{tree}", "-c", str(config), "--policy-report", str(report)
    )
    data = json.loads(report.read_text())
    classes = {row["class"]: row for row in data["classes"]}
    assert classes["personal"]["found"] == {"cn-mobile": 1, "cn-ric": 1}
    assert data["holds"][0]["name"] == "invoices"
    assert data["methods"][0]["method"] == "clear-overwrite"


def test_bad_policy_exits_three_with_line(lethe, tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "policy:\n  discovery:\n    patterns:\n      - name: x\n        regex: '(unclosed'\n"
    )
    result = lethe("plan", f"testdir://{tree}", "-c", str(config))
    assert result.returncode == 3
    assert (
        f"{config}:5: policy.discovery.patterns[0].regex: invalid regular expression"
        in result.stderr
    )


def test_bad_policy_class_exits_three_with_line(
    lethe, tree: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "policy:\n  rules:\n    - name: a\n      class: topsecret\n      match: {prefixes: [a/]}\n"
    )
    result = lethe("plan", f"testdir://{tree}", "-c", str(config))
    assert result.returncode == 3
    assert (
        f"{config}:4: policy.rules[0].class: unknown class 'topsecret'" in result.stderr
    )


def test_impossible_date_exits_three_with_line(
    lethe, tree: Path, tmp_path: Path
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "policy:\n  holds:\n    - name: a\n      until: 2027-02-30\n      match: {prefixes: [a/]}\n"
    )
    result = lethe("plan", f"testdir://{tree}", "-c", str(config))
    assert result.returncode == 3
    assert (
        f"{config}:4: policy.holds[0].until: invalid date '2027-02-30'" in result.stderr
    )


def test_lifting_a_hold_is_audited(
    lethe, tree: Path, config: Path, state: Path
) -> None:
    first = lethe("purge", f"testdir://{tree}", "-c", str(config), "--yes")
    config.write_text(CONFIG.split("  holds:")[0])
    second = lethe("purge", f"testdir://{tree}", "-c", str(config), "--yes")
    entries = [
        json.loads(line) for line in (state / "audit.log").read_text().splitlines()
    ]
    digests = [
        entry.get("digest")
        for entry in entries
        if entry.get("kind", entry.get("event")) == "config"
    ]
    assert first.returncode == 1
    assert second.returncode == 0, second.stderr
    assert not (tree / "invoices" / "2025.csv").exists()
    assert len(set(digests)) == 2


def test_files_plugin_plan_holds_recent_invoice(
    lethe, tree: Path, tmp_path: Path
) -> None:
    """The real files plugin, planned only: a purge would touch the host filesystem."""
    old = tree / "invoices" / "2015.csv"
    old.write_text("invoice,amount\n0,1\n")
    os.utime(old, (1420070400, 1420070400))  # 2015-01-01
    config = tmp_path / "files.yaml"
    config.write_text(
        "policy:\n  holds:\n    - name: invoices\n      years: 5\n      after: mtime\n"
        '      match: {paths: ["**/invoices/*.csv"]}\n'
    )
    result = lethe("plan", str(tree), "-c", str(config), "--json")
    refused = json.loads(result.stdout)["targets"][0]["refused"]
    held = {
        row["item"]
        for entry in refused
        if entry["reason"] == "hold"
        for row in entry["examples"]
    }
    assert result.returncode == 1, result.stderr
    assert held == {
        str(tree / "invoices" / "2025.csv"),
        str(tree / "invoices"),
        str(tree),
    }
    assert (tree / "invoices" / "2025.csv").exists()


def test_mask_hold_kept_when_plugin_cannot_mask(
    lethe, tree: Path, tmp_path: Path
) -> None:
    config = tmp_path / "mask.yaml"
    config.write_text(
        "policy:\n  holds:\n    - name: keep-masked\n      until: 2099-01-01\n"
        '      match: {paths: ["*.csv"]}\n'
        "      mask:\n        fields:\n          phone: {method: keep, keep_last: 4}\n"
    )
    result = lethe("plan", f"testdir://{tree}", "-c", str(config), "--json")
    refused = json.loads(result.stdout)["targets"][0]["refused"]
    reasons = {entry["reason"]: entry["items"] for entry in refused}
    assert result.returncode == 1
    assert reasons == {"not-supported": 2}
    assert (tree / "customers.csv").exists()


def test_plan_rejects_rule_on_missing_column(
    lethe, tmp_path: Path, state: Path
) -> None:
    import sqlite3

    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, Phone)")
        connection.execute("INSERT INTO customers VALUES (1, '13812345678')")
    connection.close()
    config = tmp_path / "columns.yaml"
    config.write_text(
        "policy:\n"
        "  rules:\n"
        "    - name: contacts\n"
        "      class: personal\n"
        "      match: {columns: [customers.Phone, customers.Fax]}\n"
        "  holds:\n"
        "    - name: open-accounts\n"
        "      until: 2099-01-01\n"
        "      match: {tables: [customers]}\n"
        "      mask:\n"
        "        fields: {Email: {method: keep, keep_last: 2}}\n"
    )
    result = lethe(
        "plan", f"sqlite://{database}?table=customers&all_rows=true", "-c", str(config)
    )
    assert result.returncode == 3, result.stderr
    assert (
        f"{config}:3: rule 'contacts' names column 'Fax', which table "
        "'customers' does not have" in result.stderr
    )
    assert "hold 'open-accounts' names column 'Email'" in result.stderr
    assert "'Phone'" not in result.stderr
