"""Overlap of target URLs, as the target locks and the daemon compare them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.joblock import TargetLock
from agent.targets import targets_overlap


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("/srv/data", "/srv/data/sub", True),
        ("/srv/data", "/srv/database", False),
        ("s3://bucket/cust", "s3://bucket/cust2/", True),
        ("s3://bucket/cust/", "s3://bucket/cust2/", False),
        ("s3://bucket", "s3://bucket/any/key", True),
        ("s3://bucket/a", "s3://bucket2/a", False),
        ("s3://bucket2", "s3://bucket", False),
        ("gs://bucket/", "gs://bucket/x", True),
        ("gs://bucket/log", "gs://bucket/logs-2026/", True),
        ("az://account/container/p", "az://account/container/pq", True),
        ("az://account/container", "az://account/container2", False),
        ("az://account/container/p", "az://other/container/p", False),
        ("s3://bucket/srv", "/srv", False),
    ],
)
def test_overlap_table(first: str, second: str, expected: bool) -> None:
    assert targets_overlap(first, second) is expected
    assert targets_overlap(second, first) is expected


def test_lock_rejects_string_prefix_overlap(tmp_path: Path) -> None:
    held = TargetLock.acquire(tmp_path, "job-one", ["s3://bucket/cust"])
    try:
        with pytest.raises(UsageError, match="overlaps target s3://bucket/cust of job job-one"):
            TargetLock.acquire(tmp_path, "job-two", ["s3://bucket/cust2/"])
        apart = TargetLock.acquire(tmp_path, "job-three", ["s3://bucket/other/"])
        apart.release()
    finally:
        held.release()
