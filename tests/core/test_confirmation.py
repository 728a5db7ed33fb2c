"""Typed confirmation when stdin is a terminal (run under a pseudo-terminal)."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

from tests.core.conftest import LETHE, REPO, TEST_PLUGIN


def run_on_terminal(state_dir: Path, target: str, answer: bytes) -> int:
    controller, terminal = pty.openpty()
    environment = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        LETHE_EXTRA_PLUGINS=TEST_PLUGIN,
        LETHE_STATE_DIR=str(state_dir),
        TERM="dumb",
    )
    process = subprocess.Popen(
        [str(LETHE), "purge", target],
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while b"Type 'purge'" not in output and time.monotonic() < deadline:
        try:
            output += os.read(controller, 4096)
        except OSError:
            break
    os.write(controller, answer)
    try:
        return process.wait(timeout=60)
    finally:
        os.close(controller)


def test_wrong_word_cancels(state_dir: Path, tree: Path) -> None:
    code = run_on_terminal(state_dir, f"testdir://{tree / 'sub'}", b"yes\n")
    assert code == 3
    assert (tree / "sub" / "export-0.csv").exists()


def test_typed_word_purges(state_dir: Path, tree: Path) -> None:
    code = run_on_terminal(state_dir, f"testdir://{tree / 'sub'}", b"purge\n")
    assert code == 0
    assert not (tree / "sub" / "export-0.csv").exists()
