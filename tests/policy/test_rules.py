"""Classification from config rules and from content discovery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.policy import Policy
from agent.policy.rules import glob_to_regex
from plugins.base import Item, Target

CONFIG = """
policy:
  discovery:
    patterns:
      - name: project-code
        regex: 'PRJ-[A-Z]{3}-[0-9]{4}'
        class: secret
  rules:
    - name: press
      class: public
      match: {paths: ["/srv/www/**"]}
    - name: hr
      class: personal
      match: {prefixes: [hr/], tags: {department: "h*"}}
    - name: contracts
      class: secret
      match: {metadata: {classification: secret}}
    - name: customer-table
      class: personal
      match: {columns: [customers.Email]}
"""


@pytest.fixture
def policy(load_policy: Callable[..., Policy]) -> Policy:
    return load_policy(CONFIG)


def test_unmatched_item_unclassified(policy: Policy) -> None:
    assessment = policy.assess(Target("s3://b/"), Item(key="misc/a", kind="object"))
    assert assessment.classification == "unclassified"


def test_path_rule(policy: Policy, tmp_path: Path) -> None:
    assessment = policy.assess(
        Target("/srv/www"), Item(key="/srv/www/a/index.html", kind="file")
    )
    assert assessment.classification == "public"
    assert assessment.rule == "press"


def test_prefix_and_tag_rule_needs_both(policy: Policy) -> None:
    tagged = Item(
        key="hr/a.pdf", kind="object", attributes={"tags": {"department": "hr"}}
    )
    untagged = Item(key="hr/b.pdf", kind="object")
    assert policy.assess(Target("s3://b/hr/"), tagged).classification == "personal"
    assert (
        policy.assess(Target("s3://b/hr/"), untagged).classification == "unclassified"
    )


def test_metadata_rule(policy: Policy) -> None:
    item = Item(
        key="x", kind="object", attributes={"metadata": {"classification": "secret"}}
    )
    assert policy.assess(Target("gs://b/"), item).classification == "secret"


def test_column_rule(policy: Policy) -> None:
    item = Item(
        key="1",
        kind="row",
        attributes={"table": "customers", "columns": ["Email", "Id"]},
    )
    assert policy.assess(Target("sqlite:///db"), item).classification == "personal"


def test_content_discovery_marks_personal(policy: Policy, tmp_path: Path) -> None:
    path = tmp_path / "www" / "list.csv"
    path.parent.mkdir()
    path.write_text("name,id\nLi,11010519491231002X\n")
    item = Item(key=str(path), kind="file", size=path.stat().st_size)
    assessment = policy.assess(Target(str(tmp_path)), item)
    assert assessment.classification == "personal"
    assert assessment.rule == "content discovery"
    assert assessment.findings is not None
    assert assessment.findings.counts == {"cn-ric": 1}


def test_content_discovery_keeps_stricter_rule_class(policy: Policy) -> None:
    item = Item(
        key="c", kind="object", attributes={"metadata": {"classification": "secret"}}
    )
    assert policy.assess(Target("s3://b/"), item).classification == "secret"


def test_custom_pattern_class(policy: Policy, tmp_path: Path) -> None:
    path = tmp_path / "plan.txt"
    path.write_text("budget for PRJ-ABC-2026 and a@example.com\n")
    item = Item(key=str(path), kind="file", size=path.stat().st_size)
    assessment = policy.assess(Target(str(tmp_path)), item)
    assert assessment.classification == "secret"
    assert assessment.findings is not None
    assert assessment.findings.counts == {"project-code": 1, "email": 1}


def test_unreadable_file_noted(policy: Policy, tmp_path: Path) -> None:
    item = Item(key=str(tmp_path / "gone.csv"), kind="file", size=10)
    assessment = policy.assess(Target(str(tmp_path)), item)
    assert assessment.findings is not None
    assert assessment.findings.note.startswith("not scanned")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/srv/**", "/srv/a/b/c.csv", True),
        ("/srv/*.csv", "/srv/a.csv", True),
        ("/srv/*.csv", "/srv/a/b.csv", False),
        ("*.csv", "/srv/a/b.csv", True),
        ("/srv/**/x.csv", "/srv/x.csv", True),
        ("/srv/[ab].csv", "/srv/b.csv", True),
        ("/srv/[!ab].csv", "/srv/b.csv", False),
        ("/srv/?.csv", "/srv/ab.csv", False),
    ],
)
def test_glob(pattern: str, path: str, matches: bool) -> None:
    assert (glob_to_regex(pattern).match(path) is not None) is matches


def test_fifo_in_path_target_is_not_read(policy: Policy, tmp_path: Path) -> None:
    import os

    path = tmp_path / "pipe"
    os.mkfifo(path)
    item = Item(key=str(path), kind="fifo", size=1)
    assessment = policy.assess(Target(str(tmp_path)), item)
    assert assessment.findings is not None
    assert assessment.findings.note == "not a regular file, not scanned"


RULED = """
policy:
  rules:
    - name: exports
      class: personal
      match: {paths: ["**/exports/*.csv"]}
    - name: press
      class: public
      match: {paths: ["**/press/*.csv"]}
"""


def _csv_item(tmp_path: Path, folder: str) -> Item:
    path = tmp_path / folder / "list.csv"
    path.parent.mkdir()
    path.write_text("name,id\nLi,11010519491231002X\n")
    return Item(key=str(path), kind="file", size=path.stat().st_size)


def test_rule_class_skips_discovery(
    load_policy: Callable[..., Policy], tmp_path: Path
) -> None:
    """Discovery cannot make a personal item stricter without secret patterns."""
    assessment = load_policy(RULED).assess(
        Target(str(tmp_path)), _csv_item(tmp_path, "exports")
    )
    assert assessment.classification == "personal"
    assert assessment.rule == "exports"
    assert assessment.findings is None


def test_public_rule_still_scanned(
    load_policy: Callable[..., Policy], tmp_path: Path
) -> None:
    assessment = load_policy(RULED).assess(
        Target(str(tmp_path)), _csv_item(tmp_path, "press")
    )
    assert assessment.classification == "personal"
    assert assessment.rule == "content discovery"
