"""The real ``lethe`` command: exit codes, logs, interruption and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from agent.journal import key_text
from tests.core.conftest import LETHE, REPO, TEST_PLUGIN, log_events


def config_with(tmp_path: Path, url: str, **options) -> Path:
    path = tmp_path / "lethe.yaml"
    lines = [
        "operator:",
        "  name: Test Operator",
        "targets:",
        f"  - url: {url}",
        "    options:",
    ]
    lines += [
        f"      {name}: {json.dumps(value)}" for name, value in options.items()
    ] or ["      {}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plan_exits_one_with_refusals(lethe, tree: Path) -> None:
    result = lethe("plan", f"testdir://{tree}")
    assert result.returncode == 1
    assert "would purge 4 items" in result.stdout


def test_plan_json_and_outputs(lethe, tree: Path, tmp_path: Path) -> None:
    result = lethe(
        "plan",
        f"testdir://{tree / 'sub'}",
        "--json",
        "-o",
        str(tmp_path / "p.json"),
        "--html",
        str(tmp_path / "p.html"),
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["totals"]["permitted"] == 4
    assert json.loads((tmp_path / "p.json").read_text())["format"] == "lethe-plan/1"
    page = (tmp_path / "p.html").read_text()
    assert "Purge plan" in page
    assert "built-in method" not in page


def test_plan_logs_refusal_warnings(lethe, tree: Path) -> None:
    events = log_events(lethe("plan", f"testdir://{tree}").stderr)
    refused = [event for event in events if event["event"] == "item refused"]
    assert {event["reason"] for event in refused} == {"hold", "symlink"}
    assert all(
        event["level"] == "warning" and event["plugin"] == "testdir"
        for event in refused
    )


def test_purge_without_yes_on_pipe_exits_three(lethe, tree: Path) -> None:
    result = lethe("purge", f"testdir://{tree}")
    assert result.returncode == 3
    assert "pass --yes" in result.stderr
    assert (tree / "sub" / "export-0.csv").exists()


def test_purge_all_verified_exits_zero(lethe, tree: Path, state_dir: Path) -> None:
    result = lethe("purge", "--yes", f"testdir://{tree / 'sub'}")
    assert result.returncode == 0, result.stderr
    certificate = next((state_dir / "certificates").glob("*.json"))
    assert lethe("certificate", "verify", str(certificate)).returncode == 0


def test_purge_with_refusals_exits_one(lethe, tree: Path) -> None:
    assert lethe("purge", "--yes", f"testdir://{tree}").returncode == 1


def test_verification_failure_exits_two(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    config = config_with(
        tmp_path, f"testdir://{tree / 'sub'}", fail_verify=["export-0.csv"]
    )
    result = lethe("purge", "--yes", "-c", str(config))
    assert result.returncode == 2
    assert "no certificate was issued" in result.stdout
    assert not (state_dir / "certificates").exists()
    failed = [
        event for event in log_events(result.stderr) if event["event"] == "item failed"
    ]
    assert failed[0]["level"] == "error"


def test_tampered_certificate_exits_two(
    lethe, tree: Path, state_dir: Path, tmp_path: Path
) -> None:
    lethe("purge", "--yes", f"testdir://{tree / 'sub'}")
    certificate = next((state_dir / "certificates").glob("*.json"))
    edited = tmp_path / "edited.json"
    edited.write_text(certificate.read_text().replace("Clear", "Purge"))
    result = lethe("certificate", "verify", str(edited))
    assert result.returncode == 2
    assert "FAILED: signature" in result.stdout


def test_changed_world_blocks_saved_plan(lethe, tree: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    lethe("plan", f"testdir://{tree / 'sub'}", "-o", str(plan_file))
    (tree / "sub" / "late.csv").write_text("late export\n")
    result = lethe("purge", "--yes", "--plan", str(plan_file))
    assert result.returncode == 2
    assert "new: " in result.stdout
    assert (tree / "sub" / "export-0.csv").exists()


def test_saved_plan_runs_when_unchanged(lethe, tree: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    lethe("plan", f"testdir://{tree / 'sub'}", "-o", str(plan_file))
    assert lethe("purge", "--yes", "--plan", str(plan_file)).returncode == 0
    assert not (tree / "sub" / "export-0.csv").exists()


def test_dry_run_destroys_nothing(lethe, tree: Path) -> None:
    result = lethe("purge", "--dry-run", f"testdir://{tree / 'sub'}")
    assert result.returncode == 0
    assert "would purge" in result.stdout
    assert (tree / "sub" / "export-0.csv").exists()


def test_config_error_exits_three(lethe, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("settings:\n  passes: -1\n")
    result = lethe("plan", "-c", str(config), "/nowhere")
    assert result.returncode == 3
    assert f"{config}:2: settings.passes" in result.stderr


def test_unknown_scheme_exits_three(lethe) -> None:
    result = lethe("plan", "nope://bucket")
    assert result.returncode == 3
    assert "scheme 'nope'" in result.stderr


def test_missing_target_exits_three(lethe, tmp_path: Path) -> None:
    result = lethe("plan", f"testdir://{tmp_path / 'absent'}")
    assert result.returncode == 3
    assert "does not exist" in result.stderr


def test_bad_arguments_exit_three(lethe) -> None:
    assert lethe("purge", "--resume").returncode == 3


def test_plugins_lists_test_plugin(lethe) -> None:
    listed = {
        entry["name"]: entry for entry in json.loads(lethe("plugins", "--json").stdout)
    }
    assert listed["testdir"]["schemes"] == ["testdir"]
    assert listed["testdir"]["status"] == "ok"


def test_verify_command(lethe, tree: Path, state_dir: Path) -> None:
    lethe("purge", "--yes", f"testdir://{tree / 'sub'}")
    job_id = latest_job(state_dir)
    assert lethe("verify", job_id).returncode == 0
    (tree / "sub" / "export-1.csv").write_text("came back\n")
    assert lethe("verify", job_id).returncode == 2


def test_verify_summary_counts_returned_items(
    lethe, tree: Path, state_dir: Path
) -> None:
    lethe("purge", "--yes", f"testdir://{tree / 'sub'}")
    job_id = latest_job(state_dir)
    (tree / "sub" / "export-1.csv").write_text("came back\n")
    result = lethe("verify", job_id)
    assert result.returncode == 2
    assert "4 destroyed items: 3 still gone, 1 came back" in result.stdout
    assert "destroyed and verified" not in result.stdout
    assert "1 item failed the repeated rescan" in result.stdout


def latest_job(state_dir: Path) -> str:
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        return db.execute(
            "SELECT id FROM jobs ORDER BY created DESC, rowid DESC LIMIT 1"
        ).fetchone()[0]


def item_states(state_dir: Path, job_id: str) -> dict[str, str]:
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        rows = db.execute(
            "SELECT key, state FROM items WHERE job_id = ?", (job_id,)
        ).fetchall()
    return {key_text(key): state for key, state in rows}


def test_sigterm_stops_then_resume_finishes(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    marker = tmp_path / "stop-once"
    marker.touch()
    config = config_with(tmp_path, f"testdir://{tree / 'sub'}", stop_marker=str(marker))
    result = lethe("purge", "--yes", "-c", str(config))
    assert result.returncode == 2
    assert "lethe purge --resume" in result.stdout
    job_id = latest_job(state_dir)
    states = item_states(state_dir, job_id)
    assert "verified" not in states.values()
    assert sorted(states.values()) == ["planned", "planned", "planned", "purged"]
    resumed = lethe("purge", "--resume", job_id, "-c", str(config))
    # The fingerprints ended with the stopped process.
    assert resumed.returncode == 1, resumed.stderr
    assert set(item_states(state_dir, job_id).values()) == {"verified"}


def test_resume_without_checks_exits_one(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    marker = tmp_path / "stop-once"
    marker.touch()
    config = config_with(tmp_path, f"testdir://{tree / 'sub'}", stop_marker=str(marker))
    assert lethe("purge", "--yes", "-c", str(config)).returncode == 2
    job_id = latest_job(state_dir)
    resumed = lethe("purge", "--resume", job_id, "-c", str(config), "--json")
    assert resumed.returncode == 1, resumed.stderr
    outcome = json.loads(resumed.stdout)
    assert outcome["state"] == "done"
    assert outcome["exit_code"] == 1
    messages = " ".join(outcome["messages"])
    # Fingerprints live only in the planning process's memory, so no item
    # got its raw scan after the resume.
    assert "4 items passed verification after a resume" in messages
    assert "without these checks: raw scan" in messages
    certificate = json.loads(Path(outcome["certificate"]).read_text())
    checks = {c["check"]: c for c in certificate["verification"]["checks"]}
    assert checks["raw scan"]["not_run"] == 4


def test_sigkill_mid_purge_then_resume(
    tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    files = [tree / "sub" / f"bulk-{index}.csv" for index in range(6)]
    for path in files:
        path.write_text(f"row for {path.name}\n")
    config = config_with(tmp_path, f"testdir://{tree / 'sub'}", sleep=0.4)
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LETHE_EXTRA_PLUGINS=TEST_PLUGIN,
        LETHE_STATE_DIR=str(state_dir),
    )
    process = subprocess.Popen(
        [str(LETHE), "purge", "--yes", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if (state_dir / "journal.sqlite").exists() and _count(
                state_dir, "purged"
            ) >= 2:
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    job_id = latest_job(state_dir)
    states = item_states(state_dir, job_id)
    assert "verified" not in states.values()
    for key, state in states.items():
        if state == "purged":
            assert not Path(key).exists()
        if state == "planned":
            assert Path(key).exists()
    resumed = subprocess.run(
        [str(LETHE), "purge", "--resume", job_id, "-c", str(config)],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    # The fingerprints ended with the killed process.
    assert resumed.returncode == 1, resumed.stderr
    assert set(item_states(state_dir, job_id).values()) == {"verified"}
    assert not any(path.exists() for path in files)


def _count(state_dir: Path, state: str) -> int:
    try:
        with sqlite3.connect(state_dir / "journal.sqlite", timeout=5) as db:
            return db.execute(
                "SELECT COUNT(*) FROM items WHERE state = ?", (state,)
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
