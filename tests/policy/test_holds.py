"""Holds refusing items shaped like files, objects and rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

import pytest

from agent.policy import Policy
from agent.policy.holds import add_years, parse_date
from plugins.base import Item, Target

TODAY = date(2026, 12, 4)

CONFIG = """
policy:
  discovery:
    enabled: false
  rules:
    - name: contracts
      class: secret
      match:
        paths: ["/srv/contracts/**"]
  holds:
    - name: tax-records
      kind: retention
      years: 5
      after: mtime
      reason: commercial law keeps invoices five years
      match:
        paths: ["/srv/export/invoices/*.csv"]
    - name: contracts-fixed
      until: 2030-06-30
      match:
        classes: [secret]
    - name: litigation
      kind: legal
      match:
        prefixes: ["customers/acme/"]
    - name: closed-accounts
      years: 3
      after: column:closed_at
      match:
        tables: [accounts]
    - name: s3-retention
      years: 2
      after: last_modified
      match:
        tags: {retention: finance}
"""


@pytest.fixture
def policy(load_policy: Callable[..., Policy]) -> Policy:
    return load_policy(CONFIG, today=TODAY)


def _file(path: str, mtime: float) -> Item:
    return Item(
        key=path, kind="file", size=10, attributes={"path": path, "mtime": mtime}
    )


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()


def test_hold_refuses_recent_file(policy: Policy) -> None:
    item = _file("/srv/export/invoices/2024.csv", _epoch(date(2024, 3, 1)))
    refusal = policy.assess(Target("/srv/export"), item).refusal
    assert refusal is not None
    assert refusal.reason == "hold"
    assert refusal.blocked_until == datetime(2029, 3, 1, tzinfo=UTC)
    assert "tax-records" in refusal.detail
    assert "2029-03-01" in refusal.detail


def test_hold_releases_old_file(policy: Policy) -> None:
    item = _file("/srv/export/invoices/2019.csv", _epoch(date(2019, 3, 1)))
    assert policy.assess(Target("/srv/export"), item).refusal is None


def test_hold_ignores_other_paths(policy: Policy) -> None:
    item = _file("/srv/export/customers/2024.csv", _epoch(date(2024, 3, 1)))
    assert policy.assess(Target("/srv/export"), item).refusal is None


def test_hold_file_key_used_as_path(policy: Policy) -> None:
    item = Item(
        key="/srv/export/invoices/a.csv",
        kind="file",
        attributes={"mtime": _epoch(TODAY)},
    )
    assessment = policy.assess(Target("/srv/export"), item)
    assert assessment.hold == "tax-records"


def test_hold_by_class(policy: Policy) -> None:
    item = _file("/srv/contracts/acme.pdf", _epoch(date(2010, 1, 1)))
    assessment = policy.assess(Target("/srv"), item)
    assert assessment.classification == "secret"
    assert assessment.hold == "contracts-fixed"
    assert assessment.refusal is not None
    assert assessment.refusal.blocked_until == datetime(2030, 6, 30, tzinfo=UTC)


def test_legal_hold_on_s3_object_has_no_end(policy: Policy) -> None:
    item = Item(
        key="customers/acme/orders.json@v3",
        kind="object-version",
        size=100,
        attributes={"key": "customers/acme/orders.json", "version_id": "v3"},
    )
    refusal = policy.assess(Target("s3://bucket/customers/"), item).refusal
    assert refusal is not None
    assert refusal.reason == "hold"
    assert refusal.blocked_until is None
    assert "legal hold 'litigation'" in refusal.detail


def test_s3_hold_by_tag_and_last_modified(policy: Policy) -> None:
    item = Item(
        key="ledger/2026.csv",
        kind="object-version",
        attributes={
            "tags": [{"Key": "retention", "Value": "finance"}],
            "last_modified": "2026-01-15T08:00:00Z",
        },
    )
    refusal = policy.assess(Target("s3://bucket/ledger/"), item).refusal
    assert refusal is not None
    assert refusal.blocked_until == datetime(2028, 1, 15, tzinfo=UTC)


def test_s3_object_outside_prefix_not_held(policy: Policy) -> None:
    item = Item(key="customers/other/orders.json", kind="object-version")
    assert policy.assess(Target("s3://bucket/customers/"), item).refusal is None


def test_row_hold_counts_from_column(policy: Policy) -> None:
    item = Item(
        key="accounts:42",
        kind="row",
        attributes={
            "table": "accounts",
            "columns": ["id", "closed_at"],
            "dates": {"closed_at": "2025-05-31"},
        },
    )
    refusal = policy.assess(
        Target("sqlite:///var/db/app.db?table=accounts"), item
    ).refusal
    assert refusal is not None
    assert refusal.blocked_until == datetime(2028, 5, 31, tzinfo=UTC)


def test_row_table_from_target_url(policy: Policy) -> None:
    item = Item(key="7", kind="row", attributes={"dates": {"closed_at": "2026-01-01"}})
    assessment = policy.assess(Target("sqlite:///var/db/app.db?table=accounts"), item)
    assert assessment.hold == "closed-accounts"


def test_row_missing_date_is_kept(policy: Policy) -> None:
    item = Item(key="accounts:43", kind="row", attributes={"table": "accounts"})
    refusal = policy.assess(Target("sqlite:///db?table=accounts"), item).refusal
    assert refusal is not None
    assert refusal.blocked_until is None
    assert "missing or unreadable" in refusal.detail


def test_row_expired_retention_released(policy: Policy) -> None:
    item = Item(
        key="accounts:44",
        kind="row",
        attributes={"table": "accounts", "dates": {"closed_at": "2020-01-01"}},
    )
    assert policy.assess(Target("sqlite:///db?table=accounts"), item).refusal is None


def test_longest_hold_wins(load_policy: Callable[..., Policy]) -> None:
    policy = load_policy(
        """
        policy:
          holds:
            - name: short
              until: 2027-01-01
              match: {prefixes: [a/]}
            - name: long
              until: 2031-01-01
              match: {prefixes: [a/]}
            - name: medium
              until: 2029-01-01
              match: {prefixes: [a/]}
        """,
        today=TODAY,
    )
    assessment = policy.assess(Target("s3://b/a/"), Item(key="a/x", kind="object"))
    assert assessment.hold == "long"


def test_hold_until_today_has_ended(load_policy: Callable[..., Policy]) -> None:
    policy = load_policy(
        """
        policy:
          holds:
            - name: ends-today
              until: 2026-12-04
              match: {prefixes: [a/]}
        """,
        today=TODAY,
    )
    assert (
        policy.assess(Target("s3://b/a/"), Item(key="a/x", kind="object")).refusal
        is None
    )


def test_hold_with_mask_asks_for_masking(load_policy: Callable[..., Policy]) -> None:
    policy = load_policy(
        """
        policy:
          holds:
            - name: keep-masked
              until: 2031-01-01
              match: {tables: [customers]}
              mask:
                fields:
                  Phone: {method: keep, keep_last: 4}
        """,
        today=TODAY,
    )
    assessment = policy.assess(
        Target("sqlite:///db?table=customers"), Item(key="1", kind="row")
    )
    assert assessment.refusal is None
    assert assessment.hold == "keep-masked"
    assert assessment.mask == {
        "fields": {"Phone": {"method": "keep", "keep_last": 4}},
        "key_file": None,
    }


@pytest.mark.parametrize(
    ("start", "years", "end"),
    [
        (date(2024, 2, 29), 1, date(2025, 2, 28)),
        (date(2024, 2, 29), 4, date(2028, 2, 29)),
        (date(2023, 12, 31), 5, date(2028, 12, 31)),
    ],
)
def test_add_years(start: date, years: int, end: date) -> None:
    assert add_years(start, years) == end


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01", date(2026, 3, 1)),
        ("2026-03-01T23:30:00+00:00", date(2026, 3, 1)),
        ("2026-03-01T23:30:00Z", date(2026, 3, 1)),
        (0, date(1970, 1, 1)),
        (datetime(2026, 3, 1, 23, 30, tzinfo=UTC), date(2026, 3, 1)),
        ("not a date", None),
        ("2026-02-30", None),
        (True, None),
    ],
)
def test_parse_date(value: object, expected: date | None) -> None:
    assert parse_date(value) == expected


def test_hold_reads_mtime_from_identity(policy: Policy) -> None:
    mtime_ns = int(_epoch(date(2024, 3, 1)) * 1e9)
    item = Item(
        key="/srv/export/invoices/2024.csv",
        kind="file",
        identity={"ino": 12, "mtime_ns": mtime_ns},
        attributes={"path": "/srv/export/invoices/2024.csv"},
    )
    refusal = policy.assess(Target("/srv/export"), item).refusal
    assert refusal is not None
    assert refusal.blocked_until == datetime(2029, 3, 1, tzinfo=UTC)


def test_folder_of_held_file_is_kept(policy: Policy) -> None:
    held = _file("/srv/export/invoices/2024.csv", _epoch(date(2024, 3, 1)))
    folder = Item(
        key="/srv/export/invoices",
        kind="directory",
        attributes={"path": "/srv/export/invoices"},
    )
    other = Item(
        key="/srv/export/customers",
        kind="directory",
        attributes={"path": "/srv/export/customers"},
    )
    target = Target("/srv/export")
    policy.assess(target, held)
    kept = policy.assess(target, folder)
    assert kept.refusal is not None
    assert kept.refusal.reason == "hold"
    assert "tax-records" in kept.refusal.detail
    assert policy.assess(target, other).refusal is None
