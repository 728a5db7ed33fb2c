"""Spooled files the daemon must reject, move aside and never half-run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.daemon.rig import (
    DaemonRig,
    file_hashes,
    make_tree,
    mount_tmpfs,
    unmount,
)


def _rejected_reason(rig: DaemonRig, name: str) -> str:
    return (rig.state / "spool" / "rejected" / f"{name}.reason").read_text()


def _run_until_rejected(rig: DaemonRig, name: str) -> dict:
    rig.start()
    rig.wait_ready()
    event = rig.wait_for_event("spooled plan rejected", spool_file=name)
    assert rig.stop() == 0
    return event


def test_file_that_is_not_a_plan(rig: DaemonRig) -> None:
    name = "20000101T000000000000Z-00000001.json"
    rig.spool_write(name, b"this is not JSON\n")
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("not a valid plan")
    assert [p.name for p in rig.spool_files("rejected")] == [name]
    assert rig.spool_files("claimed") == []
    assert "not a valid plan" in _rejected_reason(rig, name)


def test_json_of_another_format(rig: DaemonRig) -> None:
    name = "20000101T000000000000Z-00000002.json"
    rig.spool_write(name, json.dumps({"format": "other/1", "items": []}).encode())
    event = _run_until_rejected(rig, name)
    assert "expected format 'lethe-plan/1'" in event["reason"]


def test_plan_with_edited_item(rig: DaemonRig) -> None:
    tree = make_tree(rig.target, 10)
    plan = json.loads(rig.plan(rig.target).read_text())
    # Drop one file from the plan but keep the recorded hash: the plan now
    # differs from what was shown, so it must not run.
    plan["items"] = [
        item for item in plan["items"] if not item["key"].endswith("00003.csv")
    ]
    name = "20000101T000000000000Z-00000003.json"
    rig.spool_write(name, json.dumps(plan).encode())
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("plan hash mismatch")
    assert file_hashes(list(tree)) == tree


def test_plan_with_edited_settings(rig: DaemonRig) -> None:
    tree = make_tree(rig.target, 5)
    plan = json.loads(rig.plan(rig.target).read_text())
    plan["settings"]["passes"] = 7
    name = "20000101T000000000000Z-00000004.json"
    rig.spool_write(name, json.dumps(plan).encode())
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("plan hash mismatch")
    assert file_hashes(list(tree)) == tree


def test_target_not_allowed(rig: DaemonRig) -> None:
    kept = make_tree(rig.keep, 10)
    plan = rig.plan(rig.keep)
    name = "20000101T000000000000Z-00000005.json"
    rig.spool_write(name, plan.read_bytes())
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("target not allowed by daemon.allowed_targets")
    assert str(rig.keep) in event["reason"]
    assert file_hashes(list(kept)) == kept


def test_target_beside_allowed_prefix(rig: DaemonRig) -> None:
    sibling = rig.filesystem / (rig.target.name + "-2")
    kept = make_tree(sibling, 4)
    plan = rig.plan(sibling)
    name = "20000101T000000000000Z-00000006.json"
    rig.spool_write(name, plan.read_bytes())
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("target not allowed")
    assert file_hashes(list(kept)) == kept


def test_submit_rejects_target_not_allowed(rig: DaemonRig) -> None:
    make_tree(rig.keep, 3)
    plan = rig.plan(rig.keep)
    result = rig.submit(plan)
    assert result.returncode == 3
    assert "target not allowed" in result.stderr
    assert rig.spool_files("incoming") == []


def test_submit_rejects_edited_plan(rig: DaemonRig) -> None:
    make_tree(rig.target, 3)
    path = rig.plan(rig.target)
    plan = json.loads(path.read_text())
    plan["plan_hash"] = "0" * 64
    path.write_text(json.dumps(plan))
    result = rig.submit(path)
    assert result.returncode == 3
    assert "plan hash mismatch" in result.stderr


def test_world_changed_since_plan(rig: DaemonRig) -> None:
    tree = make_tree(rig.target, 8)
    plan = rig.plan(rig.target)
    extra = rig.target / "d00" / "added-later.csv"
    extra.write_text("new customer\n")
    rig.submit(plan)
    name = rig.spool_files("incoming")[0].name
    event = _run_until_rejected(rig, name)
    assert event["reason"].startswith("the world no longer matches the plan")
    statuses = [m.get("STATUS", "") for m in rig.notify.drain()]
    assert any(status.endswith("0 failed, 1 rejected") for status in statuses)
    assert file_hashes([*tree, extra]) == {**tree, extra: file_hashes([extra])[extra]}


def test_full_disk_for_journal(rig: DaemonRig, tmp_path: Path) -> None:
    """A state directory that fills up: the plan is rejected, nothing destroyed."""
    tree = make_tree(rig.target, 10)
    state = tmp_path / "small-state"
    mount_tmpfs(state, "2m")
    try:
        rig.state = state
        rig.write_config(spool_dir=str(tmp_path / "spool"))
        plan = rig.plan(rig.target)
        rig.start()
        rig.wait_ready()
        for block in ("64k", "4k", "512"):
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={state}/filler-{block}", f"bs={block}"],
                capture_output=True,
                check=False,
            )
        assert rig.submit(plan).returncode == 0
        event = rig.wait_for_event("spooled plan rejected")
        assert rig.stop() == 0
        assert "could not be planned" in event["reason"]
        assert "full" in event["reason"]
        rejected = sorted((tmp_path / "spool" / "rejected").glob("*.json"))
        assert [path.name for path in rejected] == [event["spool_file"]]
        assert file_hashes(list(tree)) == tree
    finally:
        if rig.process is not None and rig.process.poll() is None:
            rig.kill()
        unmount(state)


def test_journal_unreadable_at_start(rig: DaemonRig, tmp_path: Path) -> None:
    (rig.state).mkdir()
    (rig.state / "journal.sqlite").write_bytes(b"not a database" * 100)
    rig.start()
    assert rig.process.wait(30) == 2
    assert "cannot open the journal" in rig.log_path.read_text()
