"""The hash-chained audit log detects edits, removals and truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.audit import AuditChainBroken, AuditLog


def filled_log(state_dir: Path) -> AuditLog:
    log = AuditLog.open(state_dir)
    for index in range(4):
        log.append("job-started", job_id=f"job-{index}")
    return log


def test_chain_verifies(state_dir: Path) -> None:
    assert filled_log(state_dir).verify().seq == 3


def test_positions_are_sequential(state_dir: Path) -> None:
    log = filled_log(state_dir)
    assert log.append("plan", plan_hash="x").seq == 4


def test_edited_entry_detected(state_dir: Path) -> None:
    log = filled_log(state_dir)
    text = log.path.read_text().replace('"job-1"', '"job-9"')
    log.path.write_text(text)
    with pytest.raises(
        AuditChainBroken, match=r"audit.log:3: the previous entry's hash does not match"
    ):
        log.verify()


def test_removed_entry_detected(state_dir: Path) -> None:
    log = filled_log(state_dir)
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:1] + lines[2:]))
    with pytest.raises(AuditChainBroken, match="expected seq 1, found 2"):
        log.verify()


def test_truncation_detected_for_position(state_dir: Path) -> None:
    log = filled_log(state_dir)
    lines = log.path.read_text().splitlines(keepends=True)
    log.path.write_text("".join(lines[:2]))
    with pytest.raises(AuditChainBroken, match="entry 3 is missing"):
        log.verify(up_to=3)


def test_log_file_mode(state_dir: Path) -> None:
    log = filled_log(state_dir)
    assert log.path.stat().st_mode & 0o777 == 0o600
