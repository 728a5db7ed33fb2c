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
    environment = dict(os.environ, LETHE_STATE_DIR=str(state_dir), PYTHONPATH=str(REPO))
    environment.pop("LETHE_CRASH_AFTER_ITEMS", None)
    if crash_after:
        environment["LETHE_CRASH_AFTER_ITEMS"] = str(crash_after)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=REPO,
        check=False,
        stdin=subprocess.DEVNULL,
    )
