"""The dry-run policy report as text, JSON and HTML, rendered by Chromium."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.policy import Assessment
from agent.policy.detectors import Findings, Match
from agent.policy.report import (
    ReportEntry,
    build_report,
    render_html,
    render_json,
    render_text,
)
from plugins.base import Item, Refusal
from tests.conftest import require_tool


def _findings(*matches: tuple[str, str]) -> Findings:
    findings = Findings()
    for kind, value in matches:
        findings.add(Match(kind, value, 0))
    return findings


@pytest.fixture
def report() -> dict:
    held = Refusal(
        "hold",
        "retention hold 'tax-records' keeps this item until 2029-03-01",
        datetime(2029, 3, 1, tzinfo=UTC),
    )
    entries = [
        ReportEntry(
            "/srv/export",
            Item("/srv/export/customers.csv", "file", 4096),
            Assessment(
                "personal",
                findings=_findings(
                    ("cn-ric", "11010519491231002X"), ("email", "li.na@example.com")
                ),
            ),
            method="clear-overwrite",
        ),
        ReportEntry(
            "/srv/export",
            Item("/srv/export/<script>alert(1)</script>.txt", "file", 10),
            Assessment("public"),
            method="clear-overwrite",
            residual=("ext4 journal may keep copies of file names",),
        ),
        ReportEntry(
            "/srv/export",
            Item("/srv/export/invoices/2024.csv", "file", 2048),
            Assessment(
                "personal",
                refusal=held,
                hold="tax-records",
                hold_detail=held.detail,
                hold_until=held.blocked_until,
                findings=_findings(("bank-card", "4111111111111111")),
            ),
            refusal=held,
        ),
        ReportEntry(
            "s3://bucket/",
            Item("link", "file", 0),
            Assessment(),
            refusal=Refusal("symlink", "symbolic link"),
        ),
    ]
    return build_report(
        entries,
        {"s3://bucket/": ["bucket versioning was suspended"]},
        plan_hash="abc123",
    )


def test_report_groups_by_class(report: dict) -> None:
    rows = {row["class"]: row for row in report["classes"]}
    assert rows["personal"]["items"] == 2
    assert rows["personal"]["bytes"] == 6144
    assert rows["personal"]["found"] == {"bank-card": 1, "cn-ric": 1, "email": 1}
    assert [row["class"] for row in report["classes"]] == [
        "personal",
        "public",
        "unclassified",
    ]


def test_report_groups_by_hold(report: dict) -> None:
    assert report["holds"] == [
        {
            "name": "tax-records",
            "items": 1,
            "bytes": 2048,
            "until": "2029-03-01",
            "detail": "retention hold 'tax-records' keeps this item until 2029-03-01",
            "masked": False,
            "labels": ["/srv/export/invoices/2024.csv"],
        }
    ]


def test_report_groups_by_method_with_residual(report: dict) -> None:
    assert report["methods"] == [
        {
            "method": "clear-overwrite",
            "items": 2,
            "bytes": 4106,
            "residual": ["ext4 journal may keep copies of file names"],
        }
    ]
    assert report["refused"][0]["reason"] == "symlink"


def test_report_never_holds_full_values(report: dict) -> None:
    text = render_json(report) + render_text(report) + render_html(report)
    for value in ("11010519491231002X", "li.na@example.com", "4111111111111111"):
        assert value not in text


def test_report_json_roundtrip(report: dict) -> None:
    assert json.loads(render_json(report))["totals"] == {"items": 4, "bytes": 6154}


def test_report_text_sections(report: dict) -> None:
    text = render_text(report)
    assert "By class:" in text
    assert "tax-records" in text
    assert "residual risk: ext4 journal may keep copies of file names" in text
    assert "110***********002X" in text


def test_report_html_escapes_labels(report: dict) -> None:
    html = render_html(report)
    assert "<script>alert(1)</script>" not in html


def test_report_html_renders_in_chromium(report: dict, tmp_path: Path) -> None:
    chromium = require_tool("chromium")
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    screenshot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1200,1000",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert screenshot.exists()
    assert screenshot.stat().st_size > 10_000
    keep = os.environ.get("LETHE_KEEP_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(screenshot.read_bytes())
