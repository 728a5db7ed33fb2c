"""Fixtures for the core tests: a state directory, a sample tree, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")
TEST_PLUGIN = "testdir=tests.core.dirplugin:DirPlugin"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree of customer-like files, one held file and one symlink."""
    root = tmp_path / "data"
    (root / "sub" / "deeper").mkdir(parents=True)
    for index in range(3):
        (root / "sub" / f"export-{index}.csv").write_text(
            f"name,phone,id\nAda Lovelace {index},+44 7700 900{index:03d},ZX{index:07d}\n"
        )
    (root / "sub" / "deeper" / "accounts.csv").write_text(
        "Grace Hopper,+1 555 0199,QK7733001\n"
    )
    (root / "keep-contract.txt").write_text("retained for seven years\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the target\n")
    (root / "link-out").symlink_to(outside)
    return root


@pytest.fixture
def lethe(state_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``lethe`` command with the test plugin and state dir."""

    def run(
        *args: str,
        stdin: str | None = "",
        env: dict[str, str] | None = None,
        timeout: float = 60,
        cwd: Path = REPO,
    ):
        environment = dict(os.environ)
        environment.update(
            PYTHONPATH=str(REPO),
            LETHE_EXTRA_PLUGINS=TEST_PLUGIN,
            LETHE_STATE_DIR=str(state_dir),
        )
        environment.update(env or {})
        return subprocess.run(
            [str(LETHE), *args],
            check=False,
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
            cwd=cwd,
        )

    return run


def log_events(stderr: str) -> list[dict]:
    """Parse the JSON log lines a non-terminal run writes to stderr."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


@pytest.fixture
def ext4(tmp_path: Path):
    """An ext4 filesystem on a loop device that the test creates and removes."""
    from tests.conftest import require_root, require_tool
    from tests.helpers.loopfs import loop_filesystem

    require_root()
    require_tool("mkfs.ext4")
    require_tool("losetup")
    with loop_filesystem(tmp_path, "ext4", 64) as filesystem:
        yield filesystem
