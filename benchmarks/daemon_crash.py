"""Kill -9 the daemon at many random points of 2,000-file purges (root only).

Runs ``--jobs`` jobs one after another, each on a fresh tree of ``--files``
files on a tmpfs, killing the daemon ``--kills`` times per job at random
points, then checks every file's end state as tests/daemon/test_crash.py
does. Prints one line per job and exits 1 if any check failed.

    sudo .venv/bin/python benchmarks/daemon_crash.py --jobs 6 --kills 15
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.daemon.crash import build_tree, check_end_state, kill_until_done
from tests.daemon.rig import DaemonRig, mount_tmpfs, unmount


def run_job(
    seed: int, files: int, kills: int, max_events: int
) -> tuple[int, list[str]]:
    with tempfile.TemporaryDirectory(prefix="lethe-crash-") as folder:
        root = Path(folder)
        filesystem = root / "fs"
        mount_tmpfs(filesystem, "256m")
        rig = DaemonRig(root, filesystem)
        try:
            tree = build_tree(rig, files)
            plan = rig.plan(rig.target)
            if rig.submit(plan).returncode != 0:
                return 0, ["lethe submit failed"]
            name = rig.spool_files("incoming")[0].name
            run = kill_until_done(rig, name, random.Random(seed), kills, max_events)
            return run.kills, check_end_state(rig, tree, run)
        finally:
            rig.close()
            unmount(filesystem)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs to run (default 6)")
    parser.add_argument("--files", type=int, default=2000, help="files per job")
    parser.add_argument(
        "--kills", type=int, default=15, help="kill points per job at most"
    )
    parser.add_argument(
        "--max-events",
        type=int,
        default=400,
        help="maximum logged item state changes before a kill (default 400)",
    )
    parser.add_argument("--seed", type=int, default=100, help="seed of the first job")
    args = parser.parse_args()
    total_kills = 0
    failures = 0
    started = time.monotonic()
    for index in range(args.jobs):
        seed = args.seed + index
        kills, problems = run_job(seed, args.files, args.kills, args.max_events)
        total_kills += kills
        failures += bool(problems)
        verdict = "ok" if not problems else "; ".join(problems)
        print(
            f"job {index + 1} seed {seed}: {kills} kill points, {verdict}", flush=True
        )
    seconds = time.monotonic() - started
    print(
        f"{args.jobs} jobs of {args.files} files, {total_kills} kill points, "
        f"{failures} failed, {seconds:.0f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
