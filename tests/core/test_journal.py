"""The SQLite journal: states, streaming pages and crash-safe settings."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.journal import Checkpoints, ItemRow, Journal


def make_journal(state_dir: Path, count: int = 3) -> Journal:
    journal = Journal.open(state_dir)
    journal.create_job(
        "job-1", dry_run=False, settings={"passes": 1}, config_digest=None
    )
    rows = (
        ItemRow(target=0, key=f"/data/file-{index:05d}", kind="file", size=index)
        for index in range(count)
    )
    journal.add_items("job-1", rows, page=7)
    return journal


def test_wal_mode(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    assert journal.query("PRAGMA journal_mode")[0][0] == "wal"


def test_state_change_is_committed(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    journal.set_state("job-1", 0, "/data/file-00001", "purging")
    other = Journal.open(state_dir)
    assert other.get_item("job-1", 0, "/data/file-00001").state == "purging"


def test_invalid_state_rejected(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    with pytest.raises(ValueError, match="invalid item state"):
        journal.set_state("job-1", 0, "/data/file-00001", "gone")


def test_pages_survive_updates(state_dir: Path) -> None:
    journal = make_journal(state_dir, count=1234)
    seen = 0
    for row in journal.items("job-1", states=("planned",)):
        journal.set_state("job-1", row.target, row.key, "purged")
        seen += 1
    assert seen == 1234
    assert journal.count_states("job-1") == {"purged": 1234}


def test_items_by_key_are_ordered(state_dir: Path) -> None:
    journal = Journal.open(state_dir)
    journal.create_job("job-1", dry_run=True, settings={}, config_digest=None)
    journal.add_items("job-1", [ItemRow(0, key, "file", 1) for key in ("c", "a", "b")])
    assert [row.key for row in journal.items("job-1", by_key=True)] == ["a", "b", "c"]


def _steps_to_read_by_key(state_dir: Path, count: int) -> int:
    """Count SQLite VM steps, in hundreds, that reading a job's items by key takes."""
    state_dir.mkdir()
    journal = make_journal(state_dir, count=count)
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    journal._db.set_progress_handler(tick, 100)
    assert sum(1 for _ in journal.items("job-1", by_key=True)) == count
    journal.close()
    return steps


def test_items_by_key_read_in_linear_steps(tmp_path: Path) -> None:
    # Each page must seek to where the last one ended. With pages of 500
    # items, 8 times the items took 8.3 times the steps with the seek and
    # 20 times when each page stepped over the earlier rows (SQLite 3.40.1).
    small = _steps_to_read_by_key(tmp_path / "small", 1000)
    large = _steps_to_read_by_key(tmp_path / "large", 8000)
    assert large < 12 * small


def test_several_states_read_once_in_order(state_dir: Path) -> None:
    journal = make_journal(state_dir, count=1200)
    for index in range(0, 1200, 2):
        journal.set_state("job-1", 0, f"/data/file-{index:05d}", "verified")
    for index in range(1, 1200, 2):
        journal.set_state("job-1", 0, f"/data/file-{index:05d}", "purged")
    keys = []
    for row in journal.items("job-1", states=("verified", "purged")):
        keys.append(row.key)
        # A purged row turned verified must not come back from the other state.
        if row.state == "purged":
            journal.set_state("job-1", row.target, row.key, "verified")
    assert keys == [f"/data/file-{index:05d}" for index in range(1200)]


def test_requeue_marks_resumed(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    journal.set_state("job-1", 0, "/data/file-00000", "purging")
    journal.requeue("job-1", 0, "/data/file-00000", "in flight")
    row = journal.get_item("job-1", 0, "/data/file-00000")
    assert row.state == "planned"
    assert row.params["resumed"] is True


def test_unknown_job_names_state_dir(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    with pytest.raises(Exception, match="job 'nope' is not in the journal"):
        journal.job("nope")


def test_undecodable_key_round_trips(state_dir: Path) -> None:
    key = os.fsdecode(b"/data/caf\xe9\nname.csv")
    journal = Journal.open(state_dir)
    journal.create_job("job-1", dry_run=True, settings={}, config_digest=None)
    journal.add_items(
        "job-1", [ItemRow(0, key, "file", 1, label=key, attributes={"path": key})]
    )
    journal.set_state("job-1", 0, key, "purging")
    row = journal.get_item("job-1", 0, key)
    assert row.key == key
    assert row.label == "/data/caf\\udce9\nname.csv"
    assert row.attributes["path"] == key
    assert [item.key for item in journal.items("job-1", by_key=True)] == [key]


def test_journal_file_is_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.close()
    assert (tmp_path / "journal.sqlite").stat().st_mode & 0o777 == 0o600


def test_checkpoint_saved_from_thread_is_committed(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    table = Checkpoints(journal.path)
    store = table.for_target("job-1", 0)
    worker = threading.Thread(
        target=store.save, args=("/dev/loop9", {"pass": 0, "written": [[0, 8]]})
    )
    worker.start()
    worker.join()

    reopened = Checkpoints(journal.path)
    assert reopened.load("job-1", 0, "/dev/loop9") == {"pass": 0, "written": [[0, 8]]}
    assert reopened.load("job-1", 1, "/dev/loop9") is None


def test_checkpoints_cleared_per_job(state_dir: Path) -> None:
    journal = make_journal(state_dir)
    journal.create_job("job-2", dry_run=False, settings={}, config_digest=None)
    table = Checkpoints(journal.path)
    table.save("job-1", 0, "a", {"pass": 1})
    table.save("job-2", 0, "a", {"pass": 2})
    table.save("job-1", 0, "b", {"pass": 3})
    table.save("job-1", 0, "b", None)
    assert table.load("job-1", 0, "b") is None

    table.clear("job-1")

    assert table.load("job-1", 0, "a") is None
    assert table.load("job-2", 0, "a") == {"pass": 2}
