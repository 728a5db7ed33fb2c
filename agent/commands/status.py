"""``lethe status``: jobs running, queued, finished and failed, with counts."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import agent.daemon  # noqa: F401 (registers the daemon config section)
from agent.commands.common import load_context, parent_parser, print_json
from agent.daemon.spool import Spool
from agent.joblock import owner_alive
from agent.journal import FILE_NAME, Journal

#: How journal job states are grouped in the status.
GROUPS = {
    "running": ("planning", "planned", "purging"),
    "interrupted": ("interrupted",),
    "finished": ("done",),
    "failed": ("failed", "plan-failed", "mismatch"),
    "cancelled": ("cancelled",),
}
STATUS_FILE = "daemon-status.json"
RECENT = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        parents=[parent_parser()],
        help="show jobs running, queued, finished and failed",
        description=(
            "Summarise the journal's purge jobs (dry runs are left out), the "
            "daemon's spool and, when the daemon runs, its current jobs."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    context = load_context(args)
    status = collect(context.config, context.state_dir)
    if args.json:
        print_json(status)
    else:
        _print(status)
    return 0


def collect(config: Any, state_dir: Path) -> dict[str, Any]:
    """Gather the status from the journal, the spool and the daemon's status file."""
    jobs = _journal_jobs(state_dir)
    counts = {group: 0 for group in GROUPS}
    for job in jobs:
        for group, states in GROUPS.items():
            if job["state"] in states:
                counts[group] += 1
    spool = Spool.for_config(config, state_dir)
    spooled = spool.counts()
    daemon = _daemon_status(state_dir)
    counts["queued"] = spooled["incoming"] + (
        len(daemon["queued"]) if daemon else spooled["claimed"]
    )
    counts["rejected"] = spooled["rejected"]
    return {
        "state_dir": str(state_dir),
        "spool": str(spool.root),
        "counts": counts,
        "daemon": daemon,
        "jobs": {
            group: [job for job in jobs if job["state"] in states][-RECENT:]
            for group, states in GROUPS.items()
        },
    }


def _journal_jobs(state_dir: Path) -> list[dict[str, Any]]:
    if not (state_dir / FILE_NAME).exists():
        return []
    journal = Journal.open(state_dir)
    try:
        rows = journal.query(
            "SELECT id, created, updated, state, plan_hash, source_plan, certificate,"
            " json_extract(summary, '$.error') AS error"
            " FROM jobs WHERE dry_run = 0 ORDER BY created, rowid"
        )
        jobs = []
        for row in rows:
            job = dict(row)
            error = job.pop("error")
            if job["state"] == "plan-failed":
                job["detail"] = (
                    f"planning failed: {error}"
                    if error
                    else "planning failed; the journal does not record why"
                )
            job["items"] = journal.count_states(row["id"])
            _mark_dead_owner(job, state_dir)
            jobs.append(job)
        return jobs
    finally:
        journal.close()


def _mark_dead_owner(job: dict[str, Any], state_dir: Path) -> None:
    """Mark a running job whose process is gone (crash, SIGKILL) as cancelled or interrupted.

    A job that ended before its purge began destroyed nothing and cannot be
    resumed, so it shows as cancelled. A job that ended while purging shows
    as interrupted, with the command that continues it.
    """
    if job["state"] in GROUPS["running"] and not owner_alive(state_dir, job["id"]):
        job["journal_state"] = job["state"]
        if job["state"] in ("planning", "planned"):
            job["state"] = "cancelled"
            job["detail"] = (
                f"the process ended while the job was {job['journal_state']}, "
                "before anything was destroyed; run lethe purge again"
            )
            return
        job["state"] = "interrupted"
        job["detail"] = f"the process running it ended while it was {job['journal_state']}"
    if job["state"] == "interrupted":
        job["hint"] = f"continue it with lethe purge --resume {job['id']}"


def _daemon_status(state_dir: Path) -> dict[str, Any] | None:
    """Return the running daemon's status file, or None when no daemon runs."""
    try:
        snapshot = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = snapshot.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return snapshot


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print(status: dict[str, Any]) -> None:
    counts = status["counts"]
    daemon = status["daemon"]
    print(
        f"daemon: {'running, pid ' + str(daemon['pid']) if daemon else 'not running'}"
    )
    print(
        "jobs: "
        + ", ".join(
            f"{counts[name]} {name}"
            for name in (
                "running",
                "queued",
                "finished",
                "failed",
                "interrupted",
                "cancelled",
                "rejected",
            )
        )
    )
    for group in ("running", "interrupted", "failed", "cancelled"):
        for job in status["jobs"][group]:
            items = ", ".join(
                f"{n} {state}" for state, n in sorted(job["items"].items())
            )
            line = f"  {group}: {job['id']} ({job['state']})"
            print(f"{line}: {items}" if items else line)
            if job.get("detail"):
                print(f"    {job['detail']}")
            if job.get("hint"):
                print(f"    {job['hint']}")
    if daemon:
        for work in daemon["running"]:
            print(f"  daemon running: {work['label']} {', '.join(work['targets'])}")
