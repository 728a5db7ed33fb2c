"""Fixtures for policy tests: config files written to a temporary folder."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.policy import Policy
from agent.policy.config import load_policy_file
from tests.files.conftest import make_filesystem
from tests.helpers.loopfs import LoopFilesystem


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Return a function that writes a YAML config and returns its path."""

    def write(text: str) -> Path:
        path = tmp_path / "lethe.yaml"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_policy(write_config: Callable[[str], Path]) -> Callable[..., Policy]:
    """Return a function that builds a Policy from YAML text."""

    def load(text: str, **options: object) -> Policy:
        return Policy(load_policy_file(str(write_config(text))), **options)  # type: ignore[arg-type]

    return load


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[LoopFilesystem]:
    """An ext4 filesystem on a loop device, detached after the test."""
    yield from make_filesystem(tmp_path, "ext4", size_mib=16)
