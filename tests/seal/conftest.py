"""Fixtures for sealed files, the data-key store and the erasure ledger."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from plugins.keys import KeyStore


@pytest.fixture
def kek_file(tmp_path: Path) -> Path:
    path = tmp_path / "kek"
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(0o600)
    return path


@pytest.fixture
def store_options(tmp_path: Path, kek_file: Path) -> dict:
    return {
        "path": str(tmp_path / "keys" / "data-keys.store"),
        "kek_file": str(kek_file),
    }


@pytest.fixture
def store(store_options: dict) -> KeyStore:
    Path(store_options["path"]).parent.mkdir(mode=0o700)
    return KeyStore.from_options(store_options)


REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def lethe(state_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the installed ``lethe`` command with a private state dir and KEK."""
    kek = secrets.token_hex(32)

    def run(
        *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = dict(os.environ)
        environment.update(
            PYTHONPATH=str(REPO),
            LETHE_STATE_DIR=str(state_dir),
            LETHE_KEK=kek,
        )
        environment.update(env or {})
        return subprocess.run(
            [str(LETHE), *args],
            check=False,
            input="",
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            cwd=REPO,
        )

    return run
