"""End to end through the CLI with the local-files plugin on an ext4 loop device."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from agent.journal import key_text
from tests.core.conftest import LETHE, REPO
from tests.helpers.loopfs import LoopFilesystem

CANARY = b"LETHE-E2E-CANARY"
NAME_CANARY = "Quentin-Zebulon-QZ99887766"


def raw_image(filesystem: LoopFilesystem) -> bytes:
    os.sync()
    subprocess.run(["blockdev", "--flushbufs", filesystem.device], check=False)
    return filesystem.image.read_bytes()


def write_config(tmp_path: Path, state_dir: Path, scan_device: bool) -> Path:
    path = tmp_path / "lethe.yaml"
    path.write_text(
        "operator:\n"
        "  name: Test Operator\n"
        "  organization:\n"
        "    name: Test Org\n"
        f"state_dir: {state_dir}\n"
        "settings:\n"
        f"  scan_device: {'true' if scan_device else 'false'}\n"
    )
    return path


def run(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, PYTHONPATH=str(REPO), LETHE_STATE_DIR=str(state_dir))
    return subprocess.run(
        [str(LETHE), *args],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def customer_tree(root: Path, outside: Path) -> list[Path]:
    """Write nested customer exports with canary content and one canary name."""
    files = []
    for year in ("2019", "2020"):
        for quarter in ("q1", "q2"):
            path = root / year / quarter / "customers.csv"
            path.parent.mkdir(parents=True)
            rows = b"".join(
                CANARY + f"-{year}-{quarter}-{index:05d},Ada,+44 7700 900123\n".encode()
                for index in range(400)
            )
            path.write_bytes(rows)
            files.append(path)
    named = root / "2020" / f"{NAME_CANARY}.csv"
    named.write_bytes(CANARY + b"-named,Grace,+1 555 0199\n" * 50)
    files.append(named)
    outside.mkdir()
    (outside / "contract.txt").write_text("kept outside the target\n")
    (root / "contract-link").symlink_to(outside / "contract.txt")
    os.link(outside / "contract.txt", root / "2019" / "contract-hardlink.txt")
    return files


def test_purge_verify_certify(ext4: LoopFilesystem, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=True)
    root = ext4.mountpoint / "exports"
    files = customer_tree(root, ext4.mountpoint / "outside")
    assert CANARY in raw_image(ext4)

    planned = run("plan", str(root), "-c", str(config), "--json", state_dir=state_dir)
    assert planned.returncode == 1, planned.stderr
    summary = json.loads(planned.stdout)
    reasons = {group["reason"] for group in summary["targets"][0]["refused"]}
    # Directories that keep a refused entry are refused as "not-empty".
    assert reasons == {"symlink", "hard-link", "not-empty"}

    purged = run(
        "purge", "--yes", str(root), "-c", str(config), "--json", state_dir=state_dir
    )
    assert purged.returncode == 1, purged.stderr
    outcome = json.loads(purged.stdout)
    assert outcome["counts"].get("failed", 0) == 0
    assert not any(path.exists() for path in files)
    assert (
        ext4.mountpoint / "outside" / "contract.txt"
    ).read_text() == "kept outside the target\n"

    image = raw_image(ext4)
    assert image.count(CANARY) == 0
    assert image.count(NAME_CANARY.encode()) == 0

    certificate = Path(outcome["certificate"])
    document = json.loads(certificate.read_text())
    assert document["media"][0]["filesystem"] == "ext4"
    # Files and the directories emptied with them are items.
    assert (
        document["counts"]["destroyed_and_verified"] == summary["totals"]["permitted"]
    )
    assert document["verification"]["result"] == "passed"
    assert (
        run(
            "certificate",
            "verify",
            str(certificate),
            "-c",
            str(config),
            state_dir=state_dir,
        ).returncode
        == 0
    )
    assert (
        run(
            "verify", outcome["job_id"], "-c", str(config), state_dir=state_dir
        ).returncode
        == 0
    )


def test_plain_rm_leaves_canaries(ext4: LoopFilesystem, tmp_path: Path) -> None:
    """Control: without Lethe the raw image keeps the deleted content."""
    root = ext4.mountpoint / "exports"
    files = customer_tree(root, ext4.mountpoint / "outside")
    os.sync()
    for path in files:
        path.unlink()
    assert raw_image(ext4).count(CANARY) > 0


def journal_rows(state_dir: Path) -> list[tuple[str, str]]:
    try:
        with sqlite3.connect(state_dir / "journal.sqlite", timeout=5) as db:
            rows = db.execute(
                "SELECT key, state FROM items WHERE kind = 'file'"
            ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [(key_text(key), state) for key, state in rows]


def test_sigkill_mid_purge_then_resume(ext4: LoopFilesystem, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    config.write_text(config.read_text() + "  passes: 4\n")
    root = ext4.mountpoint / "bulk"
    root.mkdir()
    for index in range(300):
        (root / f"record-{index:04d}.bin").write_bytes(os.urandom(96 * 1024))
    # The engine kills itself after the 40th destroyed item, before the batch's
    # outcomes are committed: the window a resume must recover from.
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LETHE_STATE_DIR=str(state_dir),
        LETHE_CRASH_AFTER_ITEMS="40",
    )
    process = subprocess.run(
        [str(LETHE), "purge", "--yes", str(root), "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL

    rows = journal_rows(state_dir)
    states = [state for _, state in rows]
    assert "verified" not in states
    assert "purging" in states
    for key, state in rows:
        if state == "planned":
            assert Path(key).exists()

    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        job_id = db.execute("SELECT id FROM jobs").fetchone()[0]
    resumed = run("purge", "--resume", job_id, "-c", str(config), state_dir=state_dir)
    final = journal_rows(state_dir)
    for key, state in final:
        if state == "verified":
            assert not Path(key).exists()
    # The items in flight at the crash were verified without their read-back.
    assert resumed.returncode == 1, resumed.stderr
    assert "without these checks: read-back" in resumed.stdout
    assert {state for _, state in final} == {"verified"}
    # No renamed leftovers: the emptied directory itself was removed.
    assert not root.exists()


def test_symlink_removed_after_resume(ext4: LoopFilesystem, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    outside = ext4.mountpoint / "outside.csv"
    outside.write_bytes(b"kept outside the target\n")
    root = ext4.mountpoint / "exports"
    directory = root / "2024"
    directory.mkdir(parents=True)
    (directory / "customers.csv").write_bytes(os.urandom(8192))
    link = directory / "latest.csv"
    link.symlink_to(outside)
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LETHE_STATE_DIR=str(state_dir),
        LETHE_CRASH_AFTER_ITEMS="1",
    )
    process = subprocess.run(
        [str(LETHE), "purge", "--yes", str(root), "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environment,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL
    assert os.path.lexists(link)

    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        job_id = db.execute("SELECT id FROM jobs").fetchone()[0]
    resumed = run("purge", "--resume", job_id, "-c", str(config), state_dir=state_dir)
    assert resumed.returncode == 1, resumed.stderr  # the link is listed as refused
    assert not os.path.lexists(link)
    assert not root.exists()
    assert outside.read_bytes() == b"kept outside the target\n"


def test_awkward_names_through_cli(ext4: LoopFilesystem, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    root = ext4.mountpoint / "awkward"
    root.mkdir()
    names = [b"line\nbreak.csv", b"caf\xe9-latin1.csv", b"plain.csv"]
    for name in names:
        with open(os.path.join(os.fsencode(root), name), "wb") as stream:
            stream.write(b"Ada Lovelace,+44 7700 900123\n")

    planned = run("plan", str(root), "-c", str(config), state_dir=state_dir)
    assert planned.returncode == 0, planned.stderr
    assert "would purge 4 items" in planned.stdout

    purged = run(
        "purge", "--yes", str(root), "-c", str(config), "--json", state_dir=state_dir
    )
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout)["counts"] == {"verified": 4}
    assert not root.exists()


def test_certificate_counts_checks_not_run(tmp_path: Path) -> None:
    # scan_device: false makes every device-scan check "not run"; the
    # certificate must count those apart from the checks that ran.
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    root = tmp_path / "exports"
    root.mkdir()
    for index in range(3):
        (root / f"customer-{index}.csv").write_text("Ada Lovelace,+44 7700 900123\n")
    purged = run("purge", "--yes", str(root), "-c", str(config), state_dir=state_dir)
    assert purged.returncode == 0, purged.stderr
    certificate_path = sorted((state_dir / "certificates").glob("*.json"))[-1]
    document = json.loads(certificate_path.read_text())
    checks = {check["check"]: check for check in document["verification"]["checks"]}
    assert checks["device-scan"]["not_run"] == checks["device-scan"]["items"]
    assert checks["device-scan"]["passed"] == 0
    assert checks["path-gone"]["not_run"] == 0
    assert checks["path-gone"]["passed"] == checks["path-gone"]["items"]
    ran, _, skipped = document["verification"]["method"].partition("; not run: ")
    assert "device-scan" not in ran
    assert skipped.startswith("device-scan for ")


def test_nested_file_targets_purged_once(ext4: LoopFilesystem, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    root = ext4.mountpoint / "exports"
    (root / "2019").mkdir(parents=True)
    files = [root / "2019" / "customers.csv", root / "orders.csv"]
    for path in files:
        path.write_bytes(CANARY + b"-" + path.name.encode() + b"\n")
    targets = [
        str(root / "2019"),
        str(root),
        str(root / "orders.csv"),
        f"{root}/2019/../.",
    ]
    planned = run("plan", *targets, "-c", str(config), "--json", state_dir=state_dir)
    assert planned.returncode == 0, planned.stderr
    summary = json.loads(planned.stdout)
    assert [target["url"] for target in summary["targets"]] == [str(root)]
    notes = " ".join(summary["targets"][0]["notes"])
    assert f"{root / '2019'} was also given as a target" in notes
    assert f"{root / 'orders.csv'} was also given as a target" in notes
    assert f"{root} was given more than once" in notes

    purged = run(
        "purge", "--yes", *targets, "-c", str(config), "--json", state_dir=state_dir
    )
    assert purged.returncode == 0, purged.stderr
    outcome = json.loads(purged.stdout)
    assert outcome["counts"] == {"verified": summary["totals"]["permitted"]}
    assert not any(path.exists() for path in files)


def test_file_target_locked_by_running_job(
    ext4: LoopFilesystem, tmp_path: Path
) -> None:
    from agent.joblock import TargetLock

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    config = write_config(tmp_path, state_dir, scan_device=False)
    root = ext4.mountpoint / "exports"
    (root / "2019").mkdir(parents=True)
    path = root / "2019" / "customers.csv"
    path.write_bytes(CANARY + b"-locked\n")
    # This test process stands for another job that purges the whole tree.
    other = TargetLock.acquire(state_dir, "20260101T000000Z-other0", [str(root)])
    try:
        spelled_otherwise = f"{root}/2019/../2019"
        blocked = run(
            "purge", "--yes", spelled_otherwise, "-c", str(config), state_dir=state_dir
        )
    finally:
        other.release()
    assert blocked.returncode == 3
    assert (
        f"target {root / '2019'} overlaps target {root} of job 20260101T000000Z-other0"
        in blocked.stderr
    )
    assert path.exists()
    after = run(
        "purge", "--yes", str(root / "2019"), "-c", str(config), state_dir=state_dir
    )
    assert after.returncode == 0, after.stderr
    assert not path.exists()


def test_certificate_show_merges_method_entries(tmp_path: Path) -> None:
    # Files and their directory are certified as two clear-overwrite entries
    # with different details; show prints the method once.
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, state_dir, scan_device=False)
    root = tmp_path / "exports"
    root.mkdir()
    for index in range(3):
        (root / f"customer-{index}.csv").write_text("Ada Lovelace,+44 7700 900123\n")
    purged = run("purge", "--yes", str(root), "-c", str(config), state_dir=state_dir)
    assert purged.returncode == 0, purged.stderr
    job_id = sorted((state_dir / "certificates").glob("*.json"))[-1].stem
    shown = run("certificate", "show", job_id, "-c", str(config), state_dir=state_dir)
    assert shown.returncode == 0, shown.stderr
    methods = [line for line in shown.stdout.splitlines() if "(Clear)" in line]
    assert methods == ["  clear-overwrite (Clear): 4 items, 87 bytes"]
    assert "destroyed and verified 4" in shown.stdout
    assert "destroyed_and_verified" not in shown.stdout
