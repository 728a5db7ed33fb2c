"""Loop devices over image files, and canaries written into them."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool

CANARY = b"LETHE-BLOCK-CANARY customer=Ada Lovelace id=AL-1815-12-10 #"
FIXTURES = Path(__file__).parent / "fixtures"


def attach(image: Path, read_only: bool = False) -> str:
    command = ["losetup", "--find", "--show"]
    if read_only:
        command.append("--read-only")
    return subprocess.run(
        [*command, str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()


def detach(device: str) -> None:
    subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def write_canaries(target: str | Path, size: int, count: int = 16) -> list[int]:
    """Write numbered canary lines spread over ``target``; return their offsets."""
    offsets = [index * (size // count) + 4096 for index in range(count)]
    with open(target, "r+b") as handle:
        for index, offset in enumerate(offsets):
            handle.seek(offset)
            handle.write(CANARY + str(index).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return offsets


def raw_count(device: str, needle: bytes = CANARY) -> int:
    """Count ``needle`` in the device, read with O_DIRECT past the page cache."""
    from plugins.scan import FingerprintScanner

    scanner = FingerprintScanner()
    scanner.add("canary", needle)
    return sum(1 for _ in scanner.scan_file(device, direct=True))


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Return a factory that makes an image, optionally with canaries, and attaches it."""
    require_root()
    require_tool("losetup")
    devices: list[str] = []

    def make(
        size_mib: int = 16,
        canaries: bool = True,
        read_only: bool = False,
        name: str = "disk",
    ) -> str:
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as handle:
            handle.truncate(size_mib * 1024 * 1024)
        if canaries:
            write_canaries(image, size_mib * 1024 * 1024)
        device = attach(image, read_only)
        devices.append(device)
        return device

    yield make
    for device in reversed(devices):
        detach(device)


@contextlib.contextmanager
def opened(path: str, flags: int = os.O_RDONLY) -> Iterator[int]:
    descriptor = os.open(path, flags)
    try:
        yield descriptor
    finally:
        os.close(descriptor)
