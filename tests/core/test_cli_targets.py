"""Targets through the real CLI: repeated and nested targets, locks, stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.core.conftest import LETHE, REPO, TEST_PLUGIN
from tests.core.test_cli import config_with, item_states, latest_job
from tests.core.test_cli_input import job_state, purging_job


def test_repeated_target_planned_once(lethe, tree: Path) -> None:
    url = f"testdir://{tree / 'sub'}"
    result = lethe("plan", url, url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["totals"]["permitted"] == 4
    assert len(summary["targets"]) == 1
    assert f"{url} was given more than once" in " ".join(summary["targets"][0]["notes"])


def test_nested_targets_purged_once(lethe, tree: Path, state_dir: Path) -> None:
    inner = f"testdir://{tree / 'sub' / 'deeper'}"
    outer = f"testdir://{tree / 'sub'}"
    result = lethe("purge", "--yes", inner, outer, inner, "--json")
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["counts"] == {"verified": 4}
    states = item_states(state_dir, outcome["job_id"])
    assert len(states) == 4
    assert not (tree / "sub" / "deeper" / "accounts.csv").exists()
    certificate = json.loads(Path(outcome["certificate"]).read_text())
    assert [medium["target"] for medium in certificate["media"]] == [outer]


def test_nested_targets_plan_notes_overlap(lethe, tree: Path) -> None:
    inner = f"testdir://{tree / 'sub' / 'deeper'}"
    outer = f"testdir://{tree / 'sub'}"
    result = lethe("plan", inner, outer)
    assert result.returncode == 0, result.stderr
    assert f"{inner} was also given as a target; it lies within this target" in (
        result.stdout
    )


def test_overlap_with_other_options_rejected(lethe, tree: Path, tmp_path: Path) -> None:
    inner = f"testdir://{tree / 'sub' / 'deeper'}"
    config = config_with(tmp_path, inner, sleep=0)
    result = lethe("plan", "-c", str(config), inner, f"testdir://{tree / 'sub'}")
    assert result.returncode == 3
    assert "overlap but have different options" in result.stderr


def start_slow_purge(tree: Path, tmp_path: Path, state_dir: Path) -> subprocess.Popen:
    """Start a purge of tree/sub that takes 5 seconds per item."""
    config = config_with(tmp_path, f"testdir://{tree / 'sub'}", sleep=5)
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LETHE_EXTRA_PLUGINS=TEST_PLUGIN,
        LETHE_STATE_DIR=str(state_dir),
    )
    return subprocess.Popen(
        [str(LETHE), "purge", "--yes", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        cwd=REPO,
    )


def test_overlapping_job_rejected(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    apart_tree = tmp_path / "apart"
    apart_tree.mkdir()
    (apart_tree / "export.csv").write_text("another export\n")
    process = start_slow_purge(tree, tmp_path, state_dir)
    try:
        deadline = time.monotonic() + 60
        while (job_id := purging_job(state_dir)) is None:
            assert time.monotonic() < deadline, "the purge never started"
            time.sleep(0.1)
        inner = f"testdir://{tree / 'sub' / 'deeper'}"
        second = lethe("purge", "--yes", inner)
        apart = lethe("purge", "--yes", f"testdir://{apart_tree}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert second.returncode == 3
    assert f"overlaps target testdir://{tree / 'sub'} of job {job_id}" in second.stderr
    assert f"(pid {process.pid})" in second.stderr
    # A target outside the running job's is not locked by it.
    assert apart.returncode == 0, apart.stderr
    # The killed job's lock is stale now and no longer blocks its targets.
    late = tree / "sub" / "deeper" / "late.csv"
    late.write_text("written after the kill\n")
    third = lethe("purge", "--yes", inner)
    assert third.returncode == 0, third.stderr
    assert not late.exists()


def test_sigterm_while_planning_cancels(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    config = config_with(
        tmp_path, f"testdir://{tree / 'sub'}", stop_while_planning=True
    )
    result = lethe("purge", "--yes", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert "stopped while planning job" in result.stderr
    assert "nothing was destroyed" in result.stderr
    job_id = latest_job(state_dir)
    assert job_state(state_dir, job_id) == "cancelled"
    assert (tree / "sub" / "export-0.csv").exists()
    status = json.loads(lethe("status", "--json").stdout)
    assert status["counts"]["interrupted"] == 0
    assert status["counts"]["cancelled"] == 1
    resumed = lethe("purge", "--resume", job_id)
    assert resumed.returncode == 3
    assert "was never started" in resumed.stderr


def test_sigterm_while_dry_run_planning(lethe, tree: Path, tmp_path: Path) -> None:
    config = config_with(
        tmp_path, f"testdir://{tree / 'sub'}", stop_while_planning=True
    )
    result = lethe("plan", "-c", str(config))
    assert result.returncode == 2, result.stderr
    assert "stopped while planning job" in result.stderr


def journal_job_left(state_dir: Path, job_id: str, state: str) -> None:
    """Write a purge job in ``state`` whose process is gone, as a crash leaves it."""
    code = (
        "from agent.journal import Journal; from pathlib import Path; "
        f"journal = Journal.open(Path({str(state_dir)!r})); "
        f"journal.create_job({job_id!r}, False, {{}}, None, None); "
        f"journal.update_job({job_id!r}, state={state!r}); "
        "journal.close()"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_killed_planning_job_shows_cancelled(lethe, state_dir: Path) -> None:
    journal_job_left(state_dir, "20260101T000000Z-dead00", "planning")
    status = json.loads(lethe("status", "--json").stdout)
    assert status["counts"]["interrupted"] == 0
    assert status["counts"]["cancelled"] == 1
    assert "before anything was destroyed" in lethe("status").stdout


def test_unconfirmed_job_not_resumable(lethe, state_dir: Path) -> None:
    # A purge killed at its confirmation prompt leaves the job "planned".
    journal_job_left(state_dir, "20260101T000000Z-dead01", "planned")
    resumed = lethe("purge", "--resume", "20260101T000000Z-dead01")
    assert resumed.returncode == 3
    assert "was never started (planned)" in resumed.stderr
    assert not (state_dir / "certificates").exists()
