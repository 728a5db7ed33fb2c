"""Run the lethe command line in a subprocess with its own state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    state_dir: Path, *arguments: str, crash_after: int = 0, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``lethe ARGUMENTS``; with ``crash_after``, it kills itself after that many items."""
    return run_module(
        "agent.cli",
        *arguments,
        environment={"LETHE_STATE_DIR": str(state_dir)},
        crash_after=crash_after,
        timeout=timeout,
    )


def run_module(
    module: str,
    *arguments: str,
    environment: dict[str, str] | None = None,
    crash_after: int = 0,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGUMENTS`` from the repository with the crash point set."""
    variables = dict(os.environ, PYTHONPATH=str(REPO), **(environment or {}))
    variables.pop("LETHE_CRASH_AFTER_ITEMS", None)
    if crash_after:
        variables["LETHE_CRASH_AFTER_ITEMS"] = str(crash_after)
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        text=True,
        env=variables,
        timeout=timeout,
        cwd=REPO,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def clean_summary(items: int) -> str:
    """Return the summary line of a purge that destroyed and verified ``items`` items."""
    return f"destroyed and verified {items}, refused 0, blocked 0, failed 0"
