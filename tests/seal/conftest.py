"""Fixtures for sealed files, the data-key store and the erasure ledger."""

from __future__ import annotations

import secrets
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
    return {"path": str(tmp_path / "keys" / "data-keys.store"), "kek_file": str(kek_file)}


@pytest.fixture
def store(store_options: dict) -> KeyStore:
    Path(store_options["path"]).parent.mkdir(mode=0o700)
    return KeyStore.from_options(store_options)
