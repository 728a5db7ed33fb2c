"""AzurePlugin against Azurite.

Azurite's blob service keeps snapshots and handles blob batch requests, so
the tests here purge real blobs and snapshots and verify with fresh
listings. Azurite has no versions, no soft delete and no immutability
policies, and accepts the listing includes for them without effect; those
features are covered in test_azure_contract.py at the SDK boundary.
"""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from plugins.azure import AzurePlugin
from plugins.base import JobContext, MemoryCheckpoints, PurgeResult, Target
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    TargetNotFound,
    TargetUnreachable,
)
from tests.cloud.conftest import AZURITE_ACCOUNT, AZURITE_KEY, closed_port, unique
from tests.helpers.driver import run_plugin


@pytest.fixture
def azure_env(azurite, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    return BlobServiceClient.from_connection_string(azurite)


def _container(service):
    return service.create_container(unique("c").lower())


def _listed(container, prefix=None):
    return [
        (blob.name, blob.snapshot)
        for blob in container.list_blobs(name_starts_with=prefix, include=["snapshots"])
    ]


def _url(container, prefix=""):
    return f"az://{AZURITE_ACCOUNT}/{container.container_name}/{prefix}"


def test_blob_with_two_snapshots(azure_env):
    """C9: a blob with two snapshots is purged with them, no SnapshotsPresent.

    Azurite behaviour: refuses to delete a blob that has snapshots unless
    delete_snapshots is given, and lists snapshots with include=snapshots.
    """
    container = _container(azure_env)
    blob = container.upload_blob("p/a", b"payload")
    blob.create_snapshot()
    blob.create_snapshot()
    assert len(_listed(container)) == 3

    run = run_plugin(AzurePlugin, _url(container, "p/"))

    assert len(run.permitted) == 3
    assert set(run.statuses().values()) == {"purged"}
    assert _listed(container) == []
    assert run.unverified() == []


def test_verify_fails_without_delete(azure_env, monkeypatch):
    """Verification catches a purge that deleted nothing (Azurite listing)."""
    container = _container(azure_env)
    container.upload_blob("p/a", b"payload")

    def skip_delete(self, entries):
        for entry in entries:
            yield PurgeResult(key=entry.item.key, status="purged")

    monkeypatch.setattr(AzurePlugin, "_delete_batch", skip_delete)
    run = run_plugin(AzurePlugin, _url(container, "p/"))

    assert len(run.unverified()) == 1


def test_many_snapshots(azure_env):
    """C4 for Azure: 1,200 snapshots of one blob, deleted in batches of 256.

    Azurite behaviour: lists all 1,200 entries in one page and handles blob
    batch requests of up to 256 deletes.
    """
    container = _container(azure_env)
    blob = container.upload_blob("p/many", b"v")
    for _ in range(1199):
        blob.create_snapshot()
    assert len(_listed(container)) == 1200

    run = run_plugin(AzurePlugin, _url(container, "p/"))

    assert len(run.results) == 1200
    assert set(run.statuses().values()) == {"purged"}
    assert _listed(container) == []
    assert run.unverified() == []


def test_three_blobs_small_pages(azure_env, monkeypatch):
    """C4 for Azure: 3 blobs with 2 snapshots each, listed 3 per page, deleted 2 at a time.

    Azurite behaviour: continuation markers stay valid while deletes run. Its
    marker is a blob name, so a page boundary inside one blob's snapshots
    would skip the rest of them; 3 per page keeps each blob on one page. The
    final check lists in one page, so a skipped entry would fail the test.
    """
    monkeypatch.setattr("plugins.azure.PAGE_SIZE", 3)
    container = _container(azure_env)
    for name in ("p/a", "p/b", "p/c"):
        blob = container.upload_blob(name, b"v")
        blob.create_snapshot()
        blob.create_snapshot()

    small = type("SmallBatchPlugin", (AzurePlugin,), {"batch_size": 2})
    run = run_plugin(small, _url(container, "p/"))

    assert len(run.results) == 9
    assert set(run.statuses().values()) == {"purged"}
    assert _listed(container) == []
    assert run.unverified() == []


ODD_NAMES = [
    "t/dir/",
    "t//lead",
    "t/cr\rx",
    "t/q?x=1#f",
    "t/ünï",
    "t/sp ace",
    "t/%2E%2E",
]


def test_odd_names_exact(azure_env):
    """C5 for Azure: odd names are purged exactly, nothing outside the prefix.

    Azurite behaviour: stores each name as sent. Names with '.' or '..'
    path segments are left out: the SDK's HTTP stack (urllib3) removes dot
    segments from the request path, so the signed path no longer matches and
    the upload fails before any plugin code runs.
    """
    container = _container(azure_env)
    for name in [*ODD_NAMES, "keep/x", "t"]:
        container.upload_blob(name, b"v")
    stored = sorted(name for name, _ in _listed(container))

    run = run_plugin(AzurePlugin, _url(container, "t/"))

    expected = sorted(name for name in stored if name.startswith("t/"))
    assert sorted(entry.item.attributes["name"] for entry in run.planned) == expected
    assert set(run.statuses().values()) == {"purged"}
    assert sorted(name for name, _ in _listed(container)) == ["keep/x", "t"]
    assert run.unverified() == []


def test_whole_container_needs_flag(azure_env):
    """C10 for Azure: a bare container target is rejected without whole_container."""
    container = _container(azure_env)
    with pytest.raises(InvalidTarget, match="whole_container: true"):
        run_plugin(AzurePlugin, f"az://{AZURITE_ACCOUNT}/{container.container_name}")


def test_whole_container_kept(azure_env):
    """C10 for Azure: the plan states the container is kept, and it is (Azurite)."""
    container = _container(azure_env)
    container.upload_blob("x", b"v")

    run = run_plugin(AzurePlugin, _url(container), {"whole_container": True})

    assert (
        f"the container {container.container_name!r} itself is kept" in run.info.notes
    )
    assert container.exists()
    assert _listed(container) == []


def test_whole_container_deleted(azure_env):
    """C10 for Azure: with delete_container the plan states it and the container is deleted."""
    container = _container(azure_env)
    container.upload_blob("x", b"v")

    run = run_plugin(
        AzurePlugin,
        _url(container),
        {"whole_container": True, "delete_container": True},
    )

    assert any("itself is deleted" in note for note in run.info.notes)
    assert {r.key: r.status for r in run.completion}["delete-container"] == "purged"
    assert not container.exists()
    assert run.unverified() == []


def test_resume_after_container_deleted(azure_env):
    """A job interrupted after deleting its container resumes without reading it.

    The second plugin shares the first one's checkpoints, as a resumed job
    does, and runs the engine's resume steps: describe, complete, verify.
    """
    container = _container(azure_env)
    for name in ("x", "y"):
        container.upload_blob(name, b"v")
    options = {"whole_container": True, "delete_container": True}
    checkpoints = MemoryCheckpoints()
    first = run_plugin(AzurePlugin, _url(container), options, checkpoints=checkpoints)
    assert {r.key: r.status for r in first.completion}["delete-container"] == "purged"

    context = JobContext("test", False, checkpoints=checkpoints)
    plugin = AzurePlugin(Target(_url(container), options), context)
    info = plugin.describe()
    steps = list(plugin.complete())
    evidence = list(plugin.verify(first.permitted))
    plugin.close()

    assert info.media["container_deleted"] is True
    assert steps == []
    assert len(evidence) == 2
    assert all(entry.verified for entry in evidence)


def test_missing_container(azure_env):
    """Azurite returns ContainerNotFound for an unknown container."""
    with pytest.raises(TargetNotFound, match="no-such-container"):
        run_plugin(AzurePlugin, f"az://{AZURITE_ACCOUNT}/no-such-container/p/")


def test_wrong_key_denied(azurite, monkeypatch):
    """Azurite checks the shared-key signature and returns 403 for a wrong key."""
    wrong = azurite.replace(
        AZURITE_KEY, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc="
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    with pytest.raises(AccessDenied, match="permission denied"):
        run_plugin(AzurePlugin, f"az://{AZURITE_ACCOUNT}/any-container/p/")


def test_endpoint_down(monkeypatch):
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{closed_port()}/{AZURITE_ACCOUNT};"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    with pytest.raises(TargetUnreachable, match="did not answer"):
        run_plugin(AzurePlugin, f"az://{AZURITE_ACCOUNT}/c/p/", {"retry_total": 0})


def test_connection_string_env_option(azurite, monkeypatch):
    """connection_string_env names the variable; a missing one is a config error."""
    monkeypatch.setenv("LETHE_TEST_AZURE", azurite)
    service = BlobServiceClient.from_connection_string(azurite)
    container = _container(service)
    container.upload_blob("p/a", b"v")

    run = run_plugin(
        AzurePlugin,
        _url(container, "p/"),
        {"connection_string_env": "LETHE_TEST_AZURE"},
    )

    assert set(run.statuses().values()) == {"purged"}
    with pytest.raises(InvalidTarget, match="LETHE_MISSING"):
        run_plugin(
            AzurePlugin,
            _url(container, "p/"),
            {"connection_string_env": "LETHE_MISSING"},
        )


def test_account_mismatch(azure_env):
    with pytest.raises(InvalidTarget, match="otheraccount"):
        run_plugin(AzurePlugin, "az://otheraccount/c/p/")
