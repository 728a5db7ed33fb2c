"""The hash-chained audit log detects edits, removals and truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.audit import FILE_NAME, KEY_FILE, AuditChainBroken, AuditLog


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
        AuditChainBroken, match=r"audit.log:2: the entry's HMAC does not match"
    ):
        log.verify()


def test_unkeyed_edit_breaks_chain(state_dir: Path) -> None:
    log = AuditLog(state_dir / FILE_NAME)
    for index in range(4):
        log.append("job-started", job_id=f"job-{index}")
    log.path.write_text(log.path.read_text().replace('"job-1"', '"job-9"'))
    with pytest.raises(
        AuditChainBroken, match=r"audit.log:3: the previous entry's hash does not match"
    ):
        log.verify()


def test_edited_last_entry_detected(state_dir: Path) -> None:
    log = filled_log(state_dir)
    log.path.write_text(log.path.read_text().replace('"job-3"', '"job-9"'))
    with pytest.raises(AuditChainBroken, match=r"audit.log:4: the entry's HMAC"):
        log.verify()


def test_rehashed_log_without_key_detected(state_dir: Path) -> None:
    """A log rewritten with every hash recomputed but no key fails on the MACs."""
    log = filled_log(state_dir)
    entries = [entry for entry, _ in log.entries()]
    log.path.unlink()
    forged = AuditLog(log.path)
    for entry in entries:
        fields = {
            name: value
            for name, value in entry.items()
            if name not in ("seq", "time", "kind", "prev", "mac")
        }
        forged.append(entry["kind"], **{**fields, "job_id": "forged"})
    assert forged.verify().seq == 3
    with pytest.raises(AuditChainBroken, match="no entry carries an HMAC"):
        log.verify()


def test_unkeyed_entries_before_key_verify(state_dir: Path) -> None:
    """Lines written before the audit key existed stay readable."""
    AuditLog(state_dir / FILE_NAME).append("job-started", job_id="old")
    log = AuditLog.open(state_dir)
    log.append("job-started", job_id="new")
    assert log.verify().seq == 1
    assert (state_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_unkeyed_entry_after_keyed_detected(state_dir: Path) -> None:
    log = filled_log(state_dir)
    AuditLog(log.path).append("job-started", job_id="no key")
    with pytest.raises(AuditChainBroken, match="audit.log:5: the entry has no HMAC"):
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
    with pytest.raises(AuditChainBroken, match="ends at entry 1, before entry 3"):
        log.verify(up_to=3)


def test_log_file_mode(state_dir: Path) -> None:
    log = filled_log(state_dir)
    assert log.path.stat().st_mode & 0o777 == 0o600
