"""The daemon config section and the target containment rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.daemon import target_contains, targets_overlap
from agent.errors import ConfigError


def _load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "lethe.yaml"
    path.write_text(text, encoding="utf-8")
    return config.load(path)


def test_defaults_without_section(tmp_path: Path) -> None:
    daemon = _load(tmp_path, "settings: {}\n").sections["daemon"]
    assert daemon.max_jobs == 1
    assert daemon.allowed_targets == ()
    assert not daemon.allows("/srv/exports")


def test_schedule_parsed(tmp_path: Path) -> None:
    daemon = _load(
        tmp_path,
        "daemon:\n  schedules:\n    - name: nightly\n      cron: '0 3 * * *'\n"
        "      targets: [/srv/old]\n",
    ).sections["daemon"]
    assert daemon.schedules[0].name == "nightly"
    assert daemon.schedules[0].targets[0].url == "/srv/old"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "daemon:\n  max_jobs: 0\n",
            "lethe.yaml:2: daemon.max_jobs: expected an integer of at least 1",
        ),
        (
            "daemon:\n  schedules:\n    - name: a\n      cron: 'every night'\n      targets: [/x]\n",
            "lethe.yaml:4: daemon.schedules[0].cron: expected a cron expression",
        ),
        (
            "daemon:\n  schedules:\n    - name: a\n      cron: '* * * * *'\n",
            "daemon.schedules[0].targets: expected a non-empty list of targets",
        ),
        (
            "daemon:\n  metrics:\n    listen_port: 70000\n",
            "expected a TCP port between 1 and 65535",
        ),
        (
            "daemon:\n  spool_dir: spool\n",
            "daemon.spool_dir: expected an absolute path",
        ),
        ("daemon:\n  colour: blue\n", "daemon.colour: unknown key"),
    ],
)
def test_invalid_values_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, text)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("/srv/exports", "/srv/exports", True),
        ("/srv/exports", "/srv/exports/2019", True),
        ("/srv/exports/", "file:///srv/exports/2019", True),
        ("/srv/exports", "/srv/exports-old", False),
        ("/srv/exports", "/srv/exports/../etc", False),
        ("s3://bucket/a", "s3://bucket/a/x", True),
        ("s3://bucket/a", "s3://bucket/ab", False),
        ("s3://bucket/a", "/bucket/a/x", False),
    ],
)
def test_target_contains(outer: str, inner: str, expected: bool) -> None:
    assert target_contains(outer, inner) is expected


def test_overlap_is_symmetric() -> None:
    assert targets_overlap("/srv/a", "/srv/a/b")
    assert targets_overlap("/srv/a/b", "/srv/a")
    assert not targets_overlap("/srv/a", "/srv/b")
