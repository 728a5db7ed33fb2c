"""The engine in process, driving the test plugin over a real directory."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent import hooks
from agent.config import Config
from agent.engine import Engine, run_job
from agent.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, UsageError
from agent.policy import Assessment, Policy
from agent.registry import Registry
from plugins.base import SIDE_THREAD_NICE, Item, Refusal, Target
from tests.core.dirplugin import DirPlugin


def make_engine(state_dir: Path, policy: Policy | None = None) -> Engine:
    registry = Registry()
    registry.add(DirPlugin)
    return Engine(Config(), state_dir, registry=registry, policy=policy)


def target(tree: Path, **options: Any) -> Target:
    return Target(f"testdir://{tree}", options)


def plan_and_purge(engine: Engine, targets: list[Target]):
    job_id = engine.plan(targets, {"passes": 1}, dry_run=False)
    return engine.purge(job_id)


def test_purge_verifies_and_certifies(state_dir: Path, tree: Path) -> None:
    outcome = plan_and_purge(make_engine(state_dir), [target(tree)])
    assert outcome.counts == {"verified": 4, "refused": 2}
    assert outcome.exit_code == EXIT_REFUSED
    assert outcome.certificate is not None and outcome.certificate.exists()
    assert not (tree / "sub" / "export-0.csv").exists()
    assert (tree / "keep-contract.txt").exists()
    assert (tree.parent / "outside.txt").read_text() == "not part of the target\n"


def test_all_verified_exits_zero(state_dir: Path, tree: Path) -> None:
    outcome = plan_and_purge(make_engine(state_dir), [target(tree / "sub")])
    assert outcome.exit_code == EXIT_OK


def test_verification_failure_gives_no_certificate(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    outcome = plan_and_purge(
        engine, [target(tree / "sub", fail_verify=["export-1.csv"])]
    )
    assert outcome.exit_code == EXIT_FAILED
    assert outcome.certificate is None
    assert outcome.counts == {"verified": 3, "failed": 1}
    failed = engine.journal.get_item(
        outcome.job_id, 0, str(tree / "sub" / "export-1.csv")
    )
    assert failed.state == "failed"
    assert "injected read-back mismatch" in failed.detail


def test_purge_failure_exits_two(state_dir: Path, tree: Path) -> None:
    outcome = plan_and_purge(
        make_engine(state_dir), [target(tree / "sub", fail_purge=["export-2.csv"])]
    )
    assert outcome.exit_code == EXIT_FAILED
    assert outcome.counts.get("failed") == 1


def test_journal_keeps_digests_not_fingerprints(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    outcome = plan_and_purge(engine, [target(tree / "sub")])
    row = engine.journal.get_item(outcome.job_id, 0, str(tree / "sub" / "export-0.csv"))
    assert len(row.fingerprints) == 1
    assert len(row.fingerprints[0]) == 64
    assert b"Ada Lovelace" not in engine.journal.path.read_bytes()


def test_digests_recorded_by_purge_not_plan(state_dir: Path, tree: Path) -> None:
    # Hashing the fingerprints waits for the purge, off the planning path.
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {"passes": 1}, dry_run=False)
    planned = engine.journal.fingerprint_count(job_id, "planned")

    outcome = engine.purge(job_id)

    assert planned == 0
    assert engine.journal.fingerprint_count(outcome.job_id, "verified") == 4


def test_digests_hashed_at_lower_priority(
    state_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The digests are hashed while a database server compacts, which should
    # get the processor first.
    from agent import engine as engine_module

    niceness: list[int] = []
    hash_digests = engine_module.fingerprint_digests

    def recording(fingerprints: Any) -> list[str]:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return hash_digests(fingerprints)

    monkeypatch.setattr(engine_module, "fingerprint_digests", recording)
    engine = make_engine(state_dir)
    usual = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    plan_and_purge(engine, [target(tree / "sub")])

    assert niceness
    assert set(niceness) == {min(usual + SIDE_THREAD_NICE, 19)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == usual


class HoldContracts(Policy):
    def assess(self, target: Target, item: Item) -> Assessment:
        if item.key.endswith("accounts.csv"):
            return Assessment("personal", Refusal("hold", "litigation hold"))
        return Assessment("personal")


def test_policy_hold_wins(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir, HoldContracts())
    outcome = plan_and_purge(engine, [target(tree / "sub")])
    assert (tree / "sub" / "deeper" / "accounts.csv").exists()
    row = engine.journal.get_item(
        outcome.job_id, 0, str(tree / "sub" / "deeper" / "accounts.csv")
    )
    assert row.state == "refused"
    assert row.refusal["reason"] == "hold"
    assert row.classification == "personal"


def test_after_job_hook_runs(
    state_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Mapping[str, Any]] = []
    monkeypatch.setattr(hooks, "AFTER_JOB", [seen.append])
    outcome = plan_and_purge(make_engine(state_dir), [target(tree / "sub")])
    assert seen[0]["job_id"] == outcome.job_id
    assert seen[0]["state"] == "done"


def test_stop_leaves_resumable_job(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {}, dry_run=False)
    engine.request_stop()
    outcome = engine.purge(job_id)
    assert outcome.state == "interrupted"
    assert outcome.exit_code == EXIT_FAILED
    assert (tree / "sub" / "export-0.csv").exists()
    engine.close()
    resumed = make_engine(state_dir).resume(job_id)
    # The fingerprints ended with the planning process, so the raw scan
    # could not run for any item and the job is not fully verified.
    assert resumed.exit_code == EXIT_REFUSED
    assert resumed.state == "done"
    assert resumed.counts == {"verified": 4}


def test_stopped_job_keeps_digests(state_dir: Path, tree: Path) -> None:
    # The resumed process has no fingerprints, so the stopped one records
    # their digests for the certificate.
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {}, dry_run=False)
    engine.request_stop()
    engine.purge(job_id)
    engine.close()

    resumed = make_engine(state_dir)
    outcome = resumed.resume(job_id)

    assert outcome.state == "done"
    assert resumed.journal.fingerprint_count(job_id, "verified") == 4


def test_interrupted_completion_keeps_digests(
    state_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(self: DirPlugin) -> Iterator[Any]:
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(DirPlugin, "complete", interrupt)
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {}, dry_run=False)

    with pytest.raises(KeyboardInterrupt):
        engine.purge(job_id)

    assert engine.journal.job(job_id).state == "interrupted"
    assert engine.journal.fingerprint_count(job_id, "purged") == 4


def test_resume_rescans_in_flight_items(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {}, dry_run=False)
    gone = str(tree / "sub" / "export-0.csv")
    present = str(tree / "sub" / "export-1.csv")
    # A crash after the first unlink and before the second purge began.
    engine.journal.update_job(job_id, state="purging")
    engine.journal.set_states(job_id, 0, [gone, present], "purging")
    Path(gone).unlink()
    engine.close()
    resumed = make_engine(state_dir)
    outcome = resumed.resume(job_id)
    assert outcome.counts == {"verified": 4}
    row = resumed.journal.get_item(job_id, 0, gone)
    assert row.evidence["checks"][1]["detail"] == "not run: no fingerprints"
    assert not Path(present).exists()


def test_finished_job_not_resumable(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    outcome = plan_and_purge(engine, [target(tree / "sub")])
    with pytest.raises(Exception, match="already finished"):
        engine.resume(outcome.job_id)


def test_reverify_detects_returned_file(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    outcome = plan_and_purge(engine, [target(tree / "sub")])
    (tree / "sub" / "export-0.csv").write_text("restored from a backup\n")
    again = make_engine(state_dir).reverify(outcome.job_id)
    assert again.exit_code == EXIT_FAILED


def test_unknown_scheme_is_usage_error(state_dir: Path) -> None:
    with pytest.raises(
        Exception, match="no installed plugin handles target 'nope://x'"
    ):
        make_engine(state_dir).plan([Target("nope://x")], {}, dry_run=True)


def test_audit_records_job(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    outcome = plan_and_purge(engine, [target(tree / "sub")])
    kinds = [entry["kind"] for entry, _ in engine.audit.entries()]
    assert kinds == ["job-started", "plan", "job-finished", "certificate"]
    finished = [
        entry for entry, _ in engine.audit.entries() if entry["kind"] == "job-finished"
    ]
    assert finished[0]["counts"] == {"verified": 4}
    assert finished[0]["plan_hash"] == outcome.plan_hash


def test_audit_records_config_change(state_dir: Path, tree: Path) -> None:
    registry = Registry()
    registry.add(DirPlugin)
    for digest in ("a" * 64, "a" * 64, "b" * 64):
        engine = Engine(
            Config(path="lethe.yaml", digest=digest), state_dir, registry=registry
        )
        job_id = engine.plan([target(tree / "sub")], {}, dry_run=False)
        engine.purge(job_id)
        engine.close()
    configs = [
        entry for entry, _ in engine.audit.entries() if entry["kind"] == "config"
    ]
    assert [entry["digest"][0] for entry in configs] == ["a", "b"]


def test_run_job_honours_stop_condition(
    state_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_EXTRA_PLUGINS", "testdir=tests.core.dirplugin:DirPlugin")
    outcome = run_job(
        Config(), state_dir, [target(tree / "sub")], should_stop=lambda: True
    )
    assert outcome.state == "interrupted"
    assert (tree / "sub" / "export-0.csv").exists()


def test_run_job_purges(
    state_dir: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LETHE_EXTRA_PLUGINS", "testdir=tests.core.dirplugin:DirPlugin")
    outcome = run_job(Config(), state_dir, [target(tree / "sub")])
    assert outcome.exit_code == EXIT_OK


def test_dry_run_job_not_verifiable(state_dir: Path, tree: Path) -> None:
    engine = make_engine(state_dir)
    job_id = engine.plan([target(tree / "sub")], {}, dry_run=True)
    with pytest.raises(UsageError, match="destroyed nothing"):
        engine.reverify(job_id)


def test_failed_target_step_gives_no_certificate(state_dir: Path, tree: Path) -> None:
    outcome = plan_and_purge(
        make_engine(state_dir), [target(tree / "sub", fail_complete=True)]
    )
    assert outcome.exit_code == EXIT_FAILED
    assert outcome.certificate is None
    assert "target step compact failed" in outcome.messages[0]
