"""Steps after the purge in gs and az jobs that crash mid-purge and are resumed.

Each job runs in its own process (tests/cloud/crash_job.py), which the
engine kills with SIGKILL after the first destroyed item
(``LETHE_CRASH_AFTER_ITEMS=1``). The plugin sends the whole first batch
before it reports that item, so when the process dies every selected copy
is gone while the journal still records the items as ``purging`` and no
key was touched.
The resumed job can no longer list what it deleted, and must still destroy
the keys its plan named, unless data the job keeps uses them now, and
restore the bucket setting its first run changed.

gs: Cloud Storage is fake-gcs-server. The recording adapter adds
``kmsKeyName``, which fake-gcs-server does not store, and Cloud KMS is the
fake server from tests/helpers/fake_cloudkms.py. The soft-delete test runs
on gcp-storage-emulator, the emulator with soft delete. az: Azurite has no
encryption scopes, so the Blob service and Key Vault are the contract fakes
from tests/cloud/azure_support.py and tests/helpers/fake_keyvault.py, with
their state kept in a file across the two processes.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.azure_support import ACCOUNT, CONTAINER, Copy
from tests.cloud.conftest import unique
from tests.cloud.crash_job import azure_state
from tests.cloud.gcs_support import all_generations, client
from tests.helpers import fake_cloudkms
from tests.helpers.cli import run_module
from tests.helpers.fake_keyvault import VAULT_URL

KEY = "projects/lethe-test/locations/global/keyRings/lethe/cryptoKeys/objects"
VERSION_1 = f"{KEY}/cryptoKeyVersions/1"
VERSION_2 = f"{KEY}/cryptoKeyVersions/2"
SCOPE = "cmk-scope"
KEY_URL = f"{VAULT_URL}/keys/scope-key"
AZURE_OPTIONS = {
    "purge_crypto": True,
    "encryption_scope": SCOPE,
    "keyvault_key": KEY_URL,
}


@pytest.fixture
def cloudkms() -> Iterator[fake_cloudkms.FakeCloudKmsServer]:
    with fake_cloudkms.FakeCloudKmsServer() as server:
        server.model.add_key(KEY, destroy_seconds=86400, versions=2)
        yield server


def run_job(
    spec: dict, tmp_path: Path, job_id: str | None = None, crash_after: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run or resume the job of ``spec`` in a new process."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    arguments = [str(spec_path), str(tmp_path / "state")]
    if job_id is not None:
        arguments.append(job_id)
    return run_module("tests.cloud.crash_job", *arguments, crash_after=crash_after)


def crash(spec: dict, tmp_path: Path) -> str:
    """Run the job until the engine kills it after its first item, and return its id."""
    crashed = run_job(spec, tmp_path, crash_after=1)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    journal = tmp_path / "state" / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs").fetchall()
        states = {state for (state,) in db.execute("SELECT state FROM items")}
        steps = db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    assert "purging" in states
    assert steps == 0
    return job_id


def resume(
    spec: dict, tmp_path: Path, job_id: str
) -> tuple[dict, dict[str, tuple[str, str]]]:
    """Resume the job and return its outcome summary and its steps by name."""
    resumed = run_job(spec, tmp_path, job_id=job_id)

    assert resumed.returncode in (0, 1), resumed.stderr
    journal = tmp_path / "state" / "journal.sqlite"
    outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT name, status, detail FROM steps").fetchall()
        left = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    assert left == 0
    return outcome, {name: (status, detail) for name, status, detail in rows}


# -- Cloud Storage: CMEK key versions -----------------------------------------


def gcs_spec(fake_gcs: str, kms: str, objects: dict[str, str]) -> dict:
    """Create an unversioned bucket of ``objects`` (name to key version) and its spec."""
    name = unique("cmek-resume")
    bucket = client(fake_gcs).create_bucket(name)
    for object_name in objects:
        bucket.blob(object_name).upload_from_string(b"customer row")
    return {
        "store": "gcs",
        "endpoint": fake_gcs,
        "kms_endpoint": kms,
        "object_fields": {
            object_name: {"kmsKeyName": version}
            for object_name, version in objects.items()
        },
        "url": f"gs://{name}/p/",
        "options": {"purge_crypto": True},
        "bucket": name,
    }


def test_resumed_cmek_version_destroyed(fake_gcs, cloudkms, tmp_path):
    spec = gcs_spec(
        fake_gcs,
        cloudkms.endpoint,
        {"p/a": VERSION_1, "p/b": VERSION_1, "q/kept": VERSION_2},
    )

    job_id = crash(spec, tmp_path)
    outcome, steps = resume(spec, tmp_path, job_id)

    assert outcome["state"] == "done"
    assert outcome["counts"] == {"verified": 2}
    assert steps[f"purge-crypto:{VERSION_1}"][0] == "purged"
    assert f"purge-crypto:{VERSION_2}" not in steps
    assert cloudkms.model.version(VERSION_1).state == "DESTROY_SCHEDULED"
    assert cloudkms.model.version(VERSION_2).state == "ENABLED"
    kept = all_generations(client(fake_gcs), spec["bucket"])
    assert [name for name, _ in kept] == ["q/kept"]


def test_resumed_cmek_version_kept_in_use(fake_gcs, cloudkms, tmp_path):
    spec = gcs_spec(fake_gcs, cloudkms.endpoint, {"p/a": VERSION_1})
    job_id = crash(spec, tmp_path)
    # Written outside the prefix with the same key version while the job was down.
    bucket = client(fake_gcs).bucket(spec["bucket"])
    bucket.blob("q/new").upload_from_string(b"written later")
    spec["object_fields"]["q/new"] = {"kmsKeyName": VERSION_1}

    outcome, steps = resume(spec, tmp_path, job_id)

    status, detail = steps[f"purge-crypto:{VERSION_1}"]
    assert status == "blocked"
    assert "q/new" in detail
    assert outcome["counts"] == {"verified": 1}
    assert cloudkms.model.version(VERSION_1).state == "ENABLED"
    assert cloudkms.model.sent("POST", ":destroy") == []


def test_retention_restored_after_resume(soft_delete_gcs, tmp_path):
    """gcp-storage-emulator: the first run set the 604800 s retention to 0."""
    gcs = client(soft_delete_gcs)
    name = unique("retention-resume")
    bucket = gcs.create_bucket(name)
    for key in ("p/a", "p/b"):
        bucket.blob(key).upload_from_string(b"customer row")
    spec = {
        "store": "gcs",
        "endpoint": soft_delete_gcs,
        "object_fields": {},
        "url": f"gs://{name}/p/",
        "options": {"allow_bucket_changes": True},
    }

    job_id = crash(spec, tmp_path)

    assert gcs.get_bucket(name).soft_delete_policy.retention_duration_seconds == 0

    outcome, steps = resume(spec, tmp_path, job_id)

    assert outcome["counts"] == {"verified": 2}
    status, detail = steps["soft-delete-retention"]
    assert status == "purged"
    assert "was 604800 s" in detail
    policy = gcs.get_bucket(name).soft_delete_policy
    assert policy.retention_duration_seconds == 604800


# -- Azure Blob: the encryption scope's Key Vault key --------------------------


def azure_spec(tmp_path: Path, *copies: Copy) -> dict:
    state = tmp_path / "azure-state.json"
    state.write_text(
        json.dumps(azure_state(list(copies), ["scope-key"], "Recoverable+Purgeable"))
    )
    return {
        "store": "azure",
        "state": str(state),
        "url": f"az://{ACCOUNT}/{CONTAINER}/p/",
        "options": AZURE_OPTIONS,
    }


def azure_model(spec: dict) -> dict:
    return json.loads(Path(spec["state"]).read_text())


def test_resumed_scope_key_purged(tmp_path):
    spec = azure_spec(
        tmp_path,
        Copy("p/a", encryption_scope=SCOPE),
        Copy("p/b", encryption_scope=SCOPE),
        Copy("keep/x"),
    )

    job_id = crash(spec, tmp_path)
    outcome, steps = resume(spec, tmp_path, job_id)

    assert outcome["state"] == "done"
    assert outcome["counts"] == {"verified": 2}
    assert steps[f"purge-crypto:{KEY_URL}"][0] == "purged"
    model = azure_model(spec)
    assert [copy["name"] for copy in model["copies"]] == ["keep/x"]
    assert model["keys"] == []
    assert model["deleted"] == {}
    assert ["DELETE", "/deletedkeys/scope-key"] in model["requests"]


def test_resumed_scope_key_kept_in_use(tmp_path):
    spec = azure_spec(tmp_path, Copy("p/a", encryption_scope=SCOPE))
    job_id = crash(spec, tmp_path)
    # Written outside the prefix with the same scope while the job was down.
    model = azure_model(spec)
    later = azure_state([Copy("keep/new", encryption_scope=SCOPE)], [], "")
    model["copies"] += later["copies"]
    Path(spec["state"]).write_text(json.dumps(model))

    outcome, steps = resume(spec, tmp_path, job_id)

    status, detail = steps[f"purge-crypto:{KEY_URL}"]
    assert status == "blocked"
    assert "keep/new" in detail
    assert outcome["counts"] == {"verified": 1}
    model = azure_model(spec)
    assert model["keys"] == ["scope-key"]
    assert not any(method == "DELETE" for method, _ in model["requests"])
