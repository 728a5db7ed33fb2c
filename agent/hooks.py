"""Functions the engine calls after each job, such as the erasure ledger.

A module appends a callable to :data:`AFTER_JOB` at import time. Each one
receives the finished job's summary (the mapping ``lethe purge --json``
prints: job id, state, plan hash, counts, bytes, certificate path) and must
not raise; an exception is logged and the next hook still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

AfterJob = Callable[[Mapping[str, Any]], None]

AFTER_JOB: list[AfterJob] = []

log = structlog.get_logger(__name__)


def register_after_job(hook: AfterJob) -> AfterJob:
    """Add a hook to run after every job; usable as a decorator."""
    AFTER_JOB.append(hook)
    return hook


def after_job(job_summary: Mapping[str, Any]) -> None:
    """Run every registered hook with the summary of a finished job."""
    for hook in list(AFTER_JOB):
        try:
            hook(job_summary)
        except Exception:  # a hook must not undo a finished purge
            log.exception(
                "after-job hook failed",
                hook=getattr(hook, "__qualname__", repr(hook)),
                job=job_summary.get("job_id"),
            )
