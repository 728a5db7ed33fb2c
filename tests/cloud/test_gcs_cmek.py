"""Crypto-erase of CMEK-encrypted generations: GCSPlugin with ``purge_crypto``.

Cloud Storage runs on fake-gcs-server, which stores no ``kmsKeyName``, so the
recording adapter adds the key version to each object resource as the real
service returns it. No emulator exists for Cloud KMS: the plugin's Cloud KMS
client (REST transport, anonymous credentials) talks to the fake Cloud KMS
server on 127.0.0.1 from tests/helpers/fake_cloudkms.py. These are contract
tests of the requests Lethe sends and the documented responses it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cloud.conftest import unique
from tests.cloud.gcs_support import RecordingAdapter, client
from tests.cloud.gcs_support import plugin_class as storage_plugin_class
from tests.helpers import fake_cloudkms
from tests.helpers.driver import run_plugin

KEY = "projects/lethe-test/locations/global/keyRings/lethe/cryptoKeys/objects"
VERSION_1 = f"{KEY}/cryptoKeyVersions/1"
VERSION_2 = f"{KEY}/cryptoKeyVersions/2"


@pytest.fixture
def cloudkms() -> Iterator[fake_cloudkms.FakeCloudKmsServer]:
    with fake_cloudkms.FakeCloudKmsServer() as server:
        server.model.add_key(KEY, destroy_seconds=86400, versions=2)
        yield server


def _plugin(endpoint: str, adapter: RecordingAdapter, kms_endpoint: str) -> type:
    base = storage_plugin_class(endpoint, adapter)

    class CmekPlugin(base):
        def make_kms_client(self) -> Any:
            return fake_cloudkms.client(kms_endpoint)

    return CmekPlugin


def _bucket(fake_gcs: str, objects: dict[str, str]) -> tuple[str, RecordingAdapter]:
    """Create a bucket whose objects the adapter reports as encrypted with ``objects``."""
    name = unique("cmek")
    # Unversioned, because fake-gcs-server deletes no noncurrent generation.
    bucket = client(fake_gcs).create_bucket(name)
    for object_name in objects:
        bucket.blob(object_name).upload_from_string(b"customer row")
    adapter = RecordingAdapter()
    adapter.object_fields = {
        object_name: {"kmsKeyName": version} for object_name, version in objects.items()
    }
    return name, adapter


def _step(run, version: str):  # noqa: ANN001, ANN202
    [result] = [r for r in run.completion if r.key == f"purge-crypto:{version}"]
    return result


def test_cmek_version_destroyed(fake_gcs, cloudkms):
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_1, "q/kept": VERSION_2})
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)

    run = run_plugin(plugin, f"gs://{name}/p/", {"purge_crypto": True})

    assert any(
        f"Lethe destroys Cloud KMS key version {VERSION_1}" in note
        and "1 day(s) later" in note
        for note in run.info.notes
    )
    assert any("cannot be listed" in line for line in run.info.residual)
    result = _step(run, VERSION_1)
    assert result.status == "purged"
    assert result.facts["state"] == "DESTROY_SCHEDULED"
    assert result.facts["crypto_shredding_complete"] is False
    assert cloudkms.model.version(VERSION_1).state == "DESTROY_SCHEDULED"
    assert cloudkms.model.version(VERSION_2).state == "ENABLED"
    assert cloudkms.model.sent("POST", f"{VERSION_2}:destroy") == []
    assert run.unverified() == []


def test_cmek_version_shared_outside_kept(fake_gcs, cloudkms):
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_1, "q/other": VERSION_1})
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)

    run = run_plugin(plugin, f"gs://{name}/p/", {"purge_crypto": True})

    assert any(
        "outside the prefix (for example q/other)" in note for note in run.info.notes
    )
    result = _step(run, VERSION_1)
    assert result.status == "blocked"
    assert result.refusal.reason == "in-use"
    assert "q/other" in result.detail
    assert cloudkms.model.version(VERSION_1).state == "ENABLED"
    assert cloudkms.model.sent("POST", ":destroy") == []


def test_cmek_untouched_without_option(fake_gcs, cloudkms):
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_1})
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)

    run = run_plugin(plugin, f"gs://{name}/p/")

    assert [r.key for r in run.completion if r.key.startswith("purge-crypto")] == []
    assert cloudkms.model.requests == []
    assert cloudkms.model.version(VERSION_1).state == "ENABLED"


def test_cmek_dry_run_destroys_nothing(fake_gcs, cloudkms):
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_1})
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)

    run = run_plugin(plugin, f"gs://{name}/p/", {"purge_crypto": True}, purge=False)

    assert any(VERSION_1 in note for note in run.info.notes)
    assert cloudkms.model.sent("POST", ":destroy") == []


def test_cmek_unacted_destroy_fails(fake_gcs, cloudkms, monkeypatch):
    """A destroy reply that Cloud KMS did not act on is reported as failed."""
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_1})
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)
    model = cloudkms.model
    original = model._destroy

    def reply_without_destroying(version, query, body):  # noqa: ANN001, ANN202
        status, payload = original(version, query, body)
        model.version(version).state = "ENABLED"
        return status, payload

    monkeypatch.setattr(model, "_destroy", reply_without_destroying)
    run = run_plugin(plugin, f"gs://{name}/p/", {"purge_crypto": True})

    result = _step(run, VERSION_1)
    assert result.status == "failed"
    assert "ENABLED" in result.detail


def test_cmek_primary_of_default_key_noted(fake_gcs, cloudkms):
    name, adapter = _bucket(fake_gcs, {"p/a": VERSION_2})
    adapter.bucket_fields = {"encryption": {"defaultKmsKeyName": KEY}}
    plugin = _plugin(fake_gcs, adapter, cloudkms.endpoint)

    run = run_plugin(plugin, f"gs://{name}/p/", {"purge_crypto": True}, purge=False)

    assert any(
        "primary version of the bucket's default key" in note for note in run.info.notes
    )
