"""Bad input through the real ``lethe`` command: messages, exit codes, journal."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.core.conftest import LETHE, REPO, TEST_PLUGIN
from tests.core.test_cli import config_with, latest_job


@pytest.mark.parametrize("target", ["/", "/etc", "file:///usr/../usr"])
def test_plan_of_protected_path_exits_one(lethe, target: str) -> None:
    result = lethe("plan", target, "--json")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["totals"]["refused"] == 1
    assert summary["targets"][0]["refused"][0]["reason"] == "protected-path"


def test_purge_of_root_exits_one(lethe) -> None:
    result = lethe("purge", "--yes", "/", "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["counts"] == {"refused": 1}


def test_edited_plan_file_named(lethe, tree: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    lethe("plan", f"testdir://{tree / 'sub'}", "-o", str(plan_file))
    document = json.loads(plan_file.read_text())
    document["settings"]["passes"] = 3
    plan_file.write_text(json.dumps(document))
    result = lethe("purge", "--yes", "--plan", str(plan_file))
    assert result.returncode == 3
    assert f"plan file {plan_file} does not match its plan hash" in result.stderr
    assert "lethe plan -o FILE" in result.stderr
    assert "world no longer matches" not in result.stdout
    assert (tree / "sub" / "export-0.csv").exists()


def test_edited_plan_item_named(lethe, tree: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    lethe("plan", f"testdir://{tree / 'sub'}", "-o", str(plan_file))
    document = json.loads(plan_file.read_text())
    document["items"][0]["size"] += 1
    plan_file.write_text(json.dumps(document))
    result = lethe("purge", "--yes", "--plan", str(plan_file))
    assert result.returncode == 3
    assert "edited or damaged" in result.stderr


def test_saved_plan_stores_absolute_path(
    lethe, tree: Path, tmp_path: Path
) -> None:
    plan_file = tmp_path / "plan.json"
    planned = lethe("plan", "data/sub/../sub", "-o", str(plan_file), cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    document = json.loads(plan_file.read_text())
    assert document["targets"][0]["url"] == str(tree.resolve() / "sub")
    # Run from another working directory: the plan still names the same tree.
    result = lethe("purge", "--yes", "--plan", str(plan_file), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert not (tree / "sub").exists()
    assert (tree / "keep-contract.txt").exists()


def test_dotdot_after_symlink_follows_link(lethe, tmp_path: Path) -> None:
    # "link/../f1" names the f1 beside the link's target, as the kernel
    # resolves it, not the f1 beside the link.
    target_dir = tmp_path / "target"
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    target_dir.mkdir()
    (outside / "f1").write_text("outside\n")
    (target_dir / "f1").write_text("inside\n")
    (target_dir / "lnk").symlink_to(outside / "inner")
    result = lethe("plan", str(target_dir / "lnk" / ".." / "f1"), "--json")
    assert result.returncode == 0, result.stderr
    url = json.loads(result.stdout)["targets"][0]["url"]
    assert url == str((outside / "f1").resolve())


def test_file_url_dots_resolved_in_header(lethe, tree: Path) -> None:
    result = lethe("plan", f"file://{tree}/sub/deeper/..", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["targets"][0]["url"] == str(tree.resolve() / "sub")


def test_undecodable_target_name_planned(lethe, tmp_path: Path) -> None:
    root = os.path.join(os.fsencode(tmp_path), b"caf\xe9\nexport")
    os.mkdir(root)
    with open(os.path.join(root, b"list.csv"), "wb") as stream:
        stream.write(b"Ada Lovelace,+44 7700 900123\n")
    plan_file = tmp_path / "plan.json"
    planned = lethe("plan", os.fsdecode(root), "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    url = json.loads(plan_file.read_text())["targets"][0]["url"]
    assert url.endswith("/caf%E9%0Aexport")
    result = lethe("purge", "--yes", "--plan", str(plan_file))
    assert result.returncode == 0, result.stderr
    assert not os.path.exists(root)


def test_missing_undecodable_target_named(lethe, tmp_path: Path) -> None:
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"nope\xe9"))
    result = lethe("plan", missing)
    assert result.returncode == 3
    assert f"target {tmp_path}/nope\\xe9 does not exist" in result.stderr


def test_config_list_names_top_level(lethe, tmp_path: Path) -> None:
    config = tmp_path / "lethe.yaml"
    config.write_text("- url: /srv/exports\n")
    result = lethe("plan", "-c", str(config))
    assert result.returncode == 3
    assert f"{config}:1: top level: expected a mapping with the keys" in result.stderr
    assert "got a list" in result.stderr


def test_config_not_utf8_named(lethe, tmp_path: Path) -> None:
    config = tmp_path / "lethe.yaml"
    config.write_bytes(b"operator:\n  name: Jos\xe9\n")
    result = lethe("plan", "-c", str(config))
    assert result.returncode == 3
    assert f"{config}:2: not valid UTF-8 (byte 0xe9" in result.stderr
    assert "save the file as UTF-8" in result.stderr


def test_config_control_character_named(lethe, tmp_path: Path) -> None:
    config = tmp_path / "lethe.yaml"
    config.write_bytes(b"operator:\n  name: Jo\x07\n")
    result = lethe("plan", "-c", str(config))
    assert result.returncode == 3
    assert f"{config}:2: invalid YAML: character U+0007" in result.stderr


def test_config_directory_named(lethe, tmp_path: Path) -> None:
    result = lethe("plan", "-c", str(tmp_path))
    assert result.returncode == 3
    assert f"cannot read config file {tmp_path}: Is a directory" in result.stderr


def test_certificate_by_job_id(lethe, tree: Path, state_dir: Path) -> None:
    assert lethe("purge", "--yes", f"testdir://{tree / 'sub'}").returncode == 0
    result = lethe("certificate", "verify", latest_job(state_dir))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout


def test_certificate_missing_names_folder(lethe, state_dir: Path) -> None:
    result = lethe("certificate", "verify", "20260101T000000Z-abcdef")
    assert result.returncode == 3
    assert f"stored as {state_dir}/certificates/JOB.json" in result.stderr
    assert "lethe status" not in result.stderr
    assert "--state-dir" in result.stderr


def job_state(state_dir: Path, job_id: str) -> str:
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        return db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def purging_job(state_dir: Path) -> str | None:
    """Return the id of the job in state purging, or None before it starts."""
    if not (state_dir / "journal.sqlite").exists():
        return None
    try:
        with sqlite3.connect(state_dir / "journal.sqlite") as db:
            query = "SELECT id FROM jobs WHERE state = 'purging'"
            row = db.execute(query).fetchone()
    except sqlite3.OperationalError:
        return None  # the schema is not created yet
    return row[0] if row else None


def test_status_shows_killed_job_interrupted(
    lethe, tree: Path, tmp_path: Path, state_dir: Path
) -> None:
    config = config_with(tmp_path, f"testdir://{tree / 'sub'}", sleep=5)
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
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while (job_id := purging_job(state_dir)) is None:
            assert time.monotonic() < deadline, "the purge never started"
            time.sleep(0.1)
        running = json.loads(lethe("status", "--json").stdout)
        assert [job["id"] for job in running["jobs"]["running"]] == [job_id]
        second = lethe("purge", "--resume", job_id)
        assert second.returncode == 3
        assert f"job {job_id} is running in another process (pid {process.pid})" in (
            second.stderr
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    assert job_state(state_dir, job_id) == "purging"
    shown = lethe("status")
    assert f"interrupted: {job_id} (interrupted)" in shown.stdout
    assert f"lethe purge --resume {job_id}" in shown.stdout
    status = json.loads(lethe("status", "--json").stdout)
    assert status["counts"]["running"] == 0
    assert status["counts"]["interrupted"] == 1

    resumed = lethe("purge", "--resume", job_id)
    # The fingerprints ended with the killed process, so the raw scan of the
    # resumed job could not run.
    assert resumed.returncode == 1, resumed.stderr
    assert json.loads(lethe("status", "--json").stdout)["counts"]["interrupted"] == 0
    assert not (state_dir / "locks" / f"{job_id}.lock").exists()


@pytest.mark.parametrize(
    "command", [["verify"], ["purge", "--resume"], ["certificate", "show"]]
)
def test_unknown_job_exits_three(lethe, command: list[str]) -> None:
    result = lethe(*command, "20260101T000000Z-abcdef")
    assert result.returncode == 3
    assert "20260101T000000Z-abcdef" in result.stderr
    assert "--state-dir" in result.stderr


def test_full_state_directory_named(lethe, tree: Path, tmp_path: Path) -> None:
    require_root()
    state = tmp_path / "small-state"
    state.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(state)], check=True
    )
    try:
        many = tree / "many"
        many.mkdir()
        for index in range(400):
            (many / f"customer-export-{index:04d}-with-a-long-name.csv").write_text("x\n")
        result = lethe(
            "purge",
            "--yes",
            f"testdir://{many}",
            env={"LETHE_STATE_DIR": str(state / "s")},
        )
    finally:
        subprocess.run(["umount", str(state)], check=True)
    assert result.returncode == 2
    assert "lethe: error: no space left on a filesystem" in result.stderr
    assert re.search(r"lethe purge --resume (\d{8}T\d{6}Z-[0-9a-f]{6}|JOB \(lethe status)", result.stderr)
    assert "internal error" not in result.stderr


def test_state_dir_inside_target_kept(lethe, tmp_path: Path) -> None:
    # A target that contains the state directory must not destroy the
    # journal, the signing key or the certificates.
    target = tmp_path / "exports"
    state = target / "lethe-state"
    target.mkdir()
    (target / "customers.csv").write_text("Ada Lovelace,+44 7700 900123\n")
    first = lethe("plan", str(target), env={"LETHE_STATE_DIR": str(state)})
    assert first.returncode in (0, 1), first.stderr
    result = lethe(
        "purge", "--yes", str(target), env={"LETHE_STATE_DIR": str(state)}
    )
    assert result.returncode == 1, result.stderr
    output = result.stdout + result.stderr
    assert "Lethe's state directory" in output
    assert "protected system path" not in output
    assert not (target / "customers.csv").exists()
    assert (state / "journal.sqlite").exists()
    assert list((state / "certificates").glob("*.json"))


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("abc", "settings.passes: expected"), (0, "settings.passes: expected")],
)
def test_saved_plan_settings_checked(
    lethe, tree: Path, tmp_path: Path, setting, expected: str
) -> None:
    # A plan file edited by hand with its hash recomputed must still pass
    # the checks a config file's settings get.
    from agent.plan import HASHED_FIELDS, _hash_lines

    plan_file = tmp_path / "plan.json"
    planned = lethe("plan", str(tree / "sub"), "-o", str(plan_file))
    assert planned.returncode == 0, planned.stderr
    document = json.loads(plan_file.read_text())
    document["settings"]["passes"] = setting
    targets = (
        (entry["url"], entry.get("options", {}), entry.get("info", {}))
        for entry in document["targets"]
    )
    items = ({name: entry.get(name) for name in HASHED_FIELDS} for entry in document["items"])
    document["plan_hash"] = _hash_lines(document["settings"], targets, items)
    plan_file.write_text(json.dumps(document))
    result = lethe("purge", "--yes", "--plan", str(plan_file))
    assert result.returncode == 3, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert (tree / "sub" / "export-0.csv").exists()


def test_status_gives_plan_failure_reason(lethe, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert lethe("purge", "--yes", f"testdir://{missing}").returncode != 0
    output = lethe("status").stdout
    [line] = [line for line in output.splitlines() if "(plan-failed)" in line]
    assert line.endswith("(plan-failed)")
    assert f"planning failed: directory {missing} does not exist" in output
