"""Policy on files whose names are not printable: newlines and invalid UTF-8.

The files plugin keys such files by an escaped, printable path; the policy
must read and match the real path.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from agent.policy import Policy
from agent.policy.rules import PERSONAL
from plugins._files.walk import make_item
from plugins.base import Item, Target

from .reference import random_ric

TODAY = date(2026, 12, 4)

NAMES = {
    "newline": b"resident\nlist.txt",
    "invalid-utf8": b"resident\xff.txt",
}


def _write(folder: Path, name: bytes, text: str) -> str:
    path = os.fsdecode(os.path.join(os.fsencode(folder), name))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _item(path: str) -> Item:
    return make_item(path, "file", os.lstat(path))


@pytest.mark.parametrize("case", sorted(NAMES))
def test_odd_name_content_scanned(
    case: str, tmp_path: Path, load_policy: Callable[..., Policy]
) -> None:
    policy = load_policy("policy:\n  discovery:\n    enabled: true\n", today=TODAY)
    ric = random_ric(random.Random(7))
    path = _write(tmp_path, NAMES[case], f"name,id\nZhang San,{ric}\n")
    item = _item(path)
    assert item.key != path

    assessment = policy.assess(Target(str(tmp_path)), item)

    assert assessment.findings is not None
    assert assessment.findings.note == ""
    assert assessment.findings.total == 1
    assert assessment.classification == PERSONAL


@pytest.mark.parametrize(
    ("case", "glob"),
    [
        ("newline", "resident?list.txt"),
        ("invalid-utf8", "resident?.txt"),
    ],
)
def test_odd_name_hold_glob(
    case: str, glob: str, tmp_path: Path, load_policy: Callable[..., Policy]
) -> None:
    config = f"""
    policy:
      discovery:
        enabled: false
      holds:
        - name: litigation
          kind: legal
          match:
            paths: ["{glob}"]
    """
    policy = load_policy(config, today=TODAY)
    path = _write(tmp_path, NAMES[case], "kept\n")

    assessment = policy.assess(Target(str(tmp_path)), _item(path))

    assert assessment.hold == "litigation"
    assert assessment.refusal is not None
    assert assessment.refusal.reason == "hold"


def test_newline_folder_hold_glob(
    tmp_path: Path, load_policy: Callable[..., Policy]
) -> None:
    config = """
    policy:
      discovery:
        enabled: false
      holds:
        - name: litigation
          kind: legal
          match:
            paths: ["**/held/*.txt"]
    """
    policy = load_policy(config, today=TODAY)
    folder = tmp_path / "case\n2026" / "held"
    folder.mkdir(parents=True)
    path = _write(folder, b"notes.txt", "kept\n")

    assessment = policy.assess(Target(str(tmp_path)), _item(path))

    assert assessment.hold == "litigation"
    assert assessment.refusal is not None


@pytest.mark.parametrize(
    ("url", "item"),
    [
        (
            "s3://bucket/",
            Item(
                key="version:v1:case\n2026/notes.txt",
                kind="version",
                attributes={"key": "case\n2026/notes.txt"},
            ),
        ),
        (
            "gs://bucket/",
            Item(
                key="case\n2026/notes.txt#17",
                kind="generation",
                attributes={"name": "case\n2026/notes.txt"},
            ),
        ),
        (
            "az://account/container/",
            Item(
                key="case\n2026/notes.txt?versionid=v1",
                kind="version",
                attributes={"name": "case\n2026/notes.txt"},
            ),
        ),
    ],
)
def test_object_key_prefix_hold(
    url: str, item: Item, load_policy: Callable[..., Policy]
) -> None:
    config = """
    policy:
      holds:
        - name: litigation
          kind: legal
          match:
            prefixes: ["case\\n2026/notes.txt"]
    """
    policy = load_policy(config, today=TODAY)

    assessment = policy.assess(Target(url), item)

    assert assessment.hold == "litigation"
    assert assessment.refusal is not None
