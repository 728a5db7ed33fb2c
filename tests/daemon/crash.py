"""Kill -9 the daemon at random points of a purge, restart it, check the end state.

Shared by the test suite (a few kill points per job) and
benchmarks/daemon_crash.py (many more).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.daemon.rig import DaemonRig, file_hashes, make_tree, run_lethe


@dataclass
class CrashTree:
    """The files a crash run starts with: selected, kept outside, refused inside."""

    selected: dict[Path, str]
    kept: dict[Path, str]
    refused: dict[Path, str]


@dataclass
class CrashRun:
    kills: int = 0
    delays: list[float] = field(default_factory=list)
    job_id: str = ""


def build_tree(rig: DaemonRig, files: int) -> CrashTree:
    selected = make_tree(rig.target, files, dirs=max(files // 50, 1))
    kept = make_tree(rig.keep, 50, dirs=5)
    outside = next(iter(kept))
    symlink = rig.target / "d00" / "link-out.csv"
    symlink.symlink_to(outside)
    hard_link = rig.target / "d00" / "hard-link-out.csv"
    os.link(next(iter(list(kept)[1:])), hard_link)
    refused = file_hashes([hard_link])
    return CrashTree(selected, kept, refused)


def job_of(rig: DaemonRig, spool_name: str) -> tuple[str, str] | None:
    """Return (id, state) of the latest job started from a spooled plan."""
    journal = rig.state / "journal.sqlite"
    if not journal.exists():
        return None
    connection = sqlite3.connect(journal, timeout=30)
    try:
        row = connection.execute(
            "SELECT id, state FROM jobs WHERE source_plan LIKE ? AND state != 'cancelled'"
            " ORDER BY created DESC, rowid DESC LIMIT 1",
            (f"%{spool_name}",),
        ).fetchone()
    finally:
        connection.close()
    return (row[0], row[1]) if row else None


def kill_until_done(
    rig: DaemonRig,
    spool_name: str,
    rng: random.Random,
    max_kills: int,
    max_events: int,
) -> CrashRun:
    """Start and kill -9 the daemon at random points until the job is done.

    Most kill points are counted in logged item state changes after READY
    (between 1 and ``max_events``), so they land inside the purge however
    loaded the machine is. The rest fall at a random time during start-up,
    where the rescan of items left in flight runs.
    """
    run = CrashRun()
    while run.kills < max_kills:
        job = job_of(rig, spool_name)
        if job is not None and job[1] in ("done", "failed"):
            break
        offset = rig.log_path.stat().st_size if rig.log_path.exists() else 0
        rig.start()
        if rng.random() < 0.2:
            point = f"{rng.uniform(0.0, 0.8):.2f}s after start"
            time.sleep(float(point.split("s")[0]))
        else:
            events = rng.randint(1, max_events)
            point = f"{events} item events"
            rig.wait_ready(timeout=120)
            _wait_for_item_events(rig, offset, events)
        rig.kill()
        run.kills += 1
        run.delays.append(point)
    rig.start()
    rig.wait_ready(timeout=120)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = job_of(rig, spool_name)
        if job is not None and job[1] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert rig.stop() == 0
    job = job_of(rig, spool_name)
    assert job is not None, "no job was started from the spooled plan"
    run.job_id = job[0]
    return run


def _wait_for_item_events(rig: DaemonRig, offset: int, count: int) -> None:
    """Wait until the daemon logged ``count`` item state changes after ``offset``."""
    seen = 0
    deadline = time.monotonic() + 120
    with open(rig.log_path, "rb") as log:
        log.seek(offset)
        while seen < count and time.monotonic() < deadline:
            if rig.process is not None and rig.process.poll() is not None:
                return
            seen += log.read().count(b'"event": "item state"')
            time.sleep(0.005)


def journal_items(rig: DaemonRig, job_id: str) -> dict[str, tuple[str, str]]:
    """Return each item's (state, kind) by key."""
    connection = sqlite3.connect(rig.state / "journal.sqlite")
    try:
        rows = connection.execute(
            "SELECT key, state, kind FROM items WHERE job_id = ?", (job_id,)
        ).fetchall()
    finally:
        connection.close()
    return {
        bytes(key).decode("utf-8", "surrogateescape"): (state, kind)
        for key, state, kind in rows
    }


def check_end_state(rig: DaemonRig, tree: CrashTree, run: CrashRun) -> list[str]:
    """Return every way the end state breaks the crash-safety rules (empty: none)."""
    problems = []
    items = journal_items(rig, run.job_id)
    states = {state for state, _ in items.values()}
    if not states <= {"verified", "refused"}:
        problems.append(f"items not verified or refused: {sorted(states)}")
    verified_files = {
        key
        for key, (state, kind) in items.items()
        if state == "verified" and kind == "file"
    }
    expected = {str(path) for path in tree.selected}
    if verified_files != expected:
        problems.append(
            f"verified files differ from the selection: {len(verified_files ^ expected)} differences"
        )
    left = [path for path in tree.selected if os.path.lexists(path)]
    if left:
        problems.append(f"{len(left)} selected files still exist, such as {left[0]}")
    for key, (state, kind) in items.items():
        if state == "verified" and os.path.lexists(key):
            problems.append(f"journal says verified but the path exists: {key}")
        # A refused symlink is removed (its destination is never touched).
        if state == "refused" and kind != "symlink" and not os.path.lexists(key):
            problems.append(f"journal says refused but the path is gone: {key}")
    # NOTE: the files plugin removes refused symlinks from a list it keeps in
    # memory since discovery, so after a restart mid-job the link stays in
    # place. Its destination is checked with the kept files below.
    if file_hashes(list(tree.kept)) != tree.kept:
        problems.append("a file outside the target changed")
    if file_hashes(list(tree.refused)) != tree.refused:
        problems.append("a refused file inside the target changed")
    rescan = run_lethe("verify", "-c", str(rig.config), run.job_id, "--json")
    if rescan.returncode != 0:
        problems.append(
            f"lethe verify exited {rescan.returncode}: {rescan.stderr[-500:]}"
        )
    return problems
