"""Crash safety: kill -9 during a purge of 2,000 files, restart, check everything.

Each run kills the daemon at random points (planning, purging, verifying,
the rescan at start-up) until the job is done, then checks that every
selected file is destroyed and verified, every other file is untouched, and
the journal agrees with a rescan. The seeds are fixed so a failure repeats;
benchmarks/daemon_crash.py runs many more kill points.
"""

from __future__ import annotations

import random

import pytest

from tests.daemon.crash import build_tree, check_end_state, kill_until_done
from tests.daemon.rig import DaemonRig

#: Kill points each run must reach before the job is allowed to finish.
MIN_KILLS = 10


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_nine_during_purge(rig: DaemonRig, seed: int) -> None:
    tree = build_tree(rig, 2000)
    plan = rig.plan(rig.target)
    assert rig.submit(plan).returncode == 0
    spool_name = rig.spool_files("incoming")[0].name
    run = kill_until_done(
        rig, spool_name, random.Random(seed), max_kills=MIN_KILLS, max_events=500
    )
    assert run.kills == MIN_KILLS, f"job finished after {run.kills} kills: {run.delays}"
    assert check_end_state(rig, tree, run) == []
    resumed = [e for e in rig.events() if e.get("event") == "resuming unfinished job"]
    assert resumed, "no kill landed inside the purge"


def test_end_state_check_can_fail(rig: DaemonRig) -> None:
    """A file left behind must be reported, or the crash test could not fail."""
    tree = build_tree(rig, 40)
    plan = rig.plan(rig.target)
    rig.submit(plan)
    spool_name = rig.spool_files("incoming")[0].name
    run = kill_until_done(rig, spool_name, random.Random(0), max_kills=0, max_events=1)
    survivor = next(iter(tree.selected))
    survivor.parent.mkdir(parents=True, exist_ok=True)
    survivor.write_text("survived\n")
    problems = check_end_state(rig, tree, run)
    assert any("still exist" in problem for problem in problems)
