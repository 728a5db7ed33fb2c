"""The gs and az plugins through the real ``lethe`` command.

The command finds the emulator through the SDKs' standard settings only:
STORAGE_EMULATOR_HOST for Cloud Storage (the SDK then uses anonymous
credentials) and AZURE_STORAGE_CONNECTION_STRING for Azurite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from tests.cloud.conftest import AZURITE_ACCOUNT, unique
from tests.cloud.gcs_support import all_generations, client


@pytest.fixture
def lethe(tmp_path: Path):
    command = shutil.which("lethe") or str(Path(sys.executable).parent / "lethe")

    def run(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LETHE_STATE_DIR": str(tmp_path / "state"), **environment}
        return subprocess.run(
            [command, *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=120,
        )

    return run


def test_cli_gs_purge(lethe, fake_gcs):
    """fake-gcs-server: live objects of an unversioned bucket, purged and certified."""
    gcs = client(fake_gcs)
    name = unique("cli")
    bucket = gcs.create_bucket(name)
    for key in ("p/a", "p/b", "keep"):
        bucket.blob(key).upload_from_string(b"customer record")

    result = lethe("purge", "--yes", f"gs://{name}/p/", STORAGE_EMULATOR_HOST=fake_gcs)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [key for key, _ in all_generations(gcs, name)] == ["keep"]
    certificate = re.search(r"certificate: (\S+\.json)", result.stdout)
    assert certificate is not None, result.stdout
    assert lethe("certificate", "verify", certificate.group(1)).returncode == 0


def test_cli_az_purge(lethe, azurite):
    """Azurite: a blob with two snapshots, purged and certified."""
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.create_container(unique("cli"))
    blob = container.upload_blob("p/a", b"customer record")
    blob.create_snapshot()
    blob.create_snapshot()
    container.upload_blob("keep", b"v")

    result = lethe(
        "purge",
        "--yes",
        f"az://{AZURITE_ACCOUNT}/{container.container_name}/p/",
        AZURE_STORAGE_CONNECTION_STRING=azurite,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert [b.name for b in container.list_blobs(include=["snapshots"])] == ["keep"]
    assert re.search(r"certificate: (\S+\.json)", result.stdout) is not None


def test_cli_missing_bucket_exit_code(lethe, fake_gcs):
    """An unknown bucket is a usage error (exit 3) whose message names it."""
    result = lethe("plan", "gs://no-such-bucket-cli/p/", STORAGE_EMULATOR_HOST=fake_gcs)

    assert result.returncode == 3
    assert "no-such-bucket-cli" in result.stdout + result.stderr
