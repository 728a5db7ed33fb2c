"""The Google Cloud KMS and Azure Key Vault key store backends.

No emulator exists for Cloud KMS or Key Vault. These are contract tests at
the SDK boundary: the real google-cloud-kms client (REST transport, anonymous
credentials) talks to a fake Cloud KMS server on 127.0.0.1, and the real
azure-keyvault-keys client (fixed-token credential) talks to a recording
transport. Both fakes respond with the documented JSON and model only
the rules named in tests/helpers/fake_cloudkms.py and fake_keyvault.py. A
pass here shows that Lethe sends the documented requests and reads the documented
responses, not that the real services accept them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import seal
from plugins import _gcpkms, _keyvault
from plugins.base import Decision, JobContext, PlannedItem, Target
from plugins.errors import InvalidTarget
from plugins.keys import KeysPlugin, KeyStore
from tests.helpers import fake_cloudkms
from tests.helpers.driver import run_plugin
from tests.helpers.fake_keyvault import (
    VAULT_URL,
    FakeKeyVaultTransport,
    FixedTokenCredential,
)

KEY_RING = "projects/lethe-test/locations/global/keyRings/lethe"


def _sealed(store: KeyStore, tmp_path: Path, subject: str = "cust-1") -> Path:
    source = tmp_path / "backup.tar"
    source.write_bytes(b"row data " * 5000)
    sealed = tmp_path / "backup.tar.lethe"
    seal.seal_file(source, sealed, store, subject)
    return sealed


def _check_names(run) -> list[str]:
    return [check.name for evidence in run.evidence for check in evidence.checks]


# --- Google Cloud KMS (fake REST server; no emulator covers Cloud KMS) -------


@pytest.fixture
def cloudkms(monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_cloudkms.FakeCloudKms]:
    with fake_cloudkms.FakeCloudKmsServer() as server:
        monkeypatch.setattr(
            _gcpkms.GcpKmsBackend,
            "make_client",
            lambda self: fake_cloudkms.client(server.endpoint),
        )
        yield server.model


@pytest.fixture
def gcp_options(tmp_path: Path, cloudkms: fake_cloudkms.FakeCloudKms) -> dict:
    (tmp_path / "keys").mkdir(mode=0o700)
    return {
        "path": str(tmp_path / "keys" / "data-keys.store"),
        "backend": "gcp-kms",
        "gcp_kms": {"key_ring": KEY_RING, "destroy_scheduled_days": 7},
    }


def test_gcp_round_trip(gcp_options: dict, cloudkms, tmp_path: Path) -> None:
    store = KeyStore.from_options(gcp_options)
    sealed = _sealed(store, tmp_path)
    seal.unseal_file(sealed, tmp_path / "out", store)
    assert (tmp_path / "out").read_bytes() == (tmp_path / "backup.tar").read_bytes()
    record = store.active_for("cust-1")
    assert record["backend"] == "gcp-kms"
    assert record["kms_key"] == f"{KEY_RING}/cryptoKeys/lethe-{record['id']}"
    assert record["kms_key_version"] == f"{record['kms_key']}/cryptoKeyVersions/1"


def test_gcp_create_request(gcp_options: dict, cloudkms) -> None:
    store = KeyStore.from_options(gcp_options)
    key_id = store.data_key_for("cust-1").key_id
    [(path, body)] = [
        sent for sent in cloudkms.sent("POST", "") if sent[0].endswith("/cryptoKeys")
    ]
    assert path == f"/v1/{KEY_RING}/cryptoKeys"
    assert body["destroyScheduledDuration"] == "604800s"
    assert body["purpose"] in (1, "ENCRYPT_DECRYPT")
    assert len(body["labels"]["lethe-subject-sha256"]) == 63
    [(_path, encrypt)] = cloudkms.sent("POST", ":encrypt")
    assert encrypt["additionalAuthenticatedData"]
    assert key_id.encode() in base64.b64decode(encrypt["additionalAuthenticatedData"])


def test_gcp_purge_destroys_version(
    gcp_options: dict, cloudkms, tmp_path: Path
) -> None:
    store = KeyStore.from_options(gcp_options)
    sealed = _sealed(store, tmp_path)
    record = store.active_for("cust-1")
    run = run_plugin(KeysPlugin, "key://cust-1", gcp_options)
    assert run.unverified() == []
    assert "kms-version-destroyed" in _check_names(run)
    assert "kms-decrypt-fails" in _check_names(run)
    version = cloudkms.version(record["kms_key_version"])
    assert version.state == "DESTROY_SCHEDULED"
    assert cloudkms.sent("POST", f"{record['kms_key_version']}:destroy")
    facts = run.results[0].facts
    when = datetime.fromisoformat(facts["kms_destroy_time"])
    assert abs(when - (datetime.now(UTC) + timedelta(days=7))) < timedelta(hours=1)
    assert facts["kms_destroyed_versions"] == 1
    assert any("7 day(s) after the purge" in line for line in run.info.residual)
    with pytest.raises(seal.SealKeyDestroyed):
        seal.unseal_file(sealed, tmp_path / "out", store)


def test_gcp_verify_fails_when_version_survives(
    gcp_options: dict, cloudkms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destroy reply that the service did not act on must fail verification."""
    store = KeyStore.from_options(gcp_options)
    store.data_key_for("cust-1")
    original = cloudkms._destroy

    def reply_without_destroying(name, query, body):
        status, payload = original(name, query, body)
        cloudkms.version(name).state = "ENABLED"
        return status, payload

    monkeypatch.setattr(cloudkms, "_destroy", reply_without_destroying)
    run = run_plugin(KeysPlugin, "key://cust-1", gcp_options)
    failed = {
        check.name
        for evidence in run.evidence
        for check in evidence.checks
        if not check.passed
    }
    assert failed == {"kms-version-destroyed", "kms-decrypt-fails"}


def test_gcp_rerun_after_destroy(gcp_options: dict, cloudkms) -> None:
    """A version already scheduled for destruction is reported, not an error."""
    store = KeyStore.from_options(gcp_options)
    record = store.find(store.data_key_for("cust-1").key_id)[1]
    cloudkms.version(record["kms_key_version"]).state = "DESTROY_SCHEDULED"
    facts = store.kms.schedule_deletion(record)
    assert facts["kms_destroyed_versions"] == 1
    assert len(cloudkms.sent("POST", ":destroy")) == 1


def test_gcp_interrupted_destroy_purged_again(gcp_options: dict, cloudkms) -> None:
    """A destroy interrupted after Cloud KMS and before the store write is redone.

    The rescan of the resumed job finds that the version no longer unwraps
    the key, but the store still contains the wrapped key, so the item is
    not verified and the next purge overwrites its slot.
    """
    store = KeyStore.from_options(gcp_options)
    key_id = store.data_key_for("cust-1").key_id
    # The interrupted run's Cloud KMS step.
    store.kms.schedule_deletion(store.find(key_id)[1])
    plugin = KeysPlugin(Target("key://cust-1", gcp_options), JobContext("job", False))
    [item] = plugin.discover()
    planned = plugin.plan_item(item)
    # A resumed job has the plan's method and params, and no fingerprints.
    params = {**planned.params, "resumed": True}
    resumed = PlannedItem(item, Decision(method=planned.method, params=params))

    [rescan] = plugin.verify([resumed])
    results = list(plugin.purge([resumed]))
    [evidence] = plugin.verify([resumed])
    plugin.close()

    checks = {check.name: check for check in rescan.checks}
    assert not checks["key-destroyed"].passed
    assert "still contains data key" in checks["key-destroyed"].detail
    assert [result.status for result in results] == ["purged"]
    assert evidence.verified
    assert store.find(key_id)[1]["state"] == "destroyed"


def test_gcp_rotated_key_all_versions(gcp_options: dict, cloudkms) -> None:
    """A version added by rotation is destroyed and verified with the first."""
    store = KeyStore.from_options(gcp_options)
    record = store.find(store.data_key_for("cust-1").key_id)[1]
    key = cloudkms.keys[record["kms_key"]]
    key.versions.append(
        fake_cloudkms.FakeVersion(f"{record['kms_key']}/cryptoKeyVersions/2")
    )
    run = run_plugin(KeysPlugin, "key://cust-1", gcp_options)
    assert run.unverified() == []
    assert run.results[0].facts["kms_destroyed_versions"] == 2
    assert [version.state for version in key.versions] == [
        "DESTROY_SCHEDULED",
        "DESTROY_SCHEDULED",
    ]
    assert _check_names(run).count("kms-version-destroyed") == 2


def test_gcp_denied_destroy_keeps_key(gcp_options: dict, cloudkms) -> None:
    store = KeyStore.from_options(gcp_options)
    key_id = store.data_key_for("cust-1").key_id
    cloudkms.deny = lambda method, path: 403 if path.endswith(":destroy") else None
    run = run_plugin(KeysPlugin, "key://cust-1", gcp_options)
    assert run.statuses() == {key_id: "failed"}
    assert "permission denied" in run.results[0].detail
    assert store.active_for("cust-1")["id"] == key_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_ring": "projects/p/keyRings/r"}, "must name a key ring"),
        ({"key_ring": KEY_RING, "destroy_scheduled_days": 0}, "from 1 to 120"),
        ({"key_ring": KEY_RING, "protection_level": "EXTERNAL"}, "SOFTWARE or HSM"),
    ],
)
def test_gcp_bad_options(tmp_path: Path, options: dict, message: str) -> None:
    store_options = {
        "path": str(tmp_path / "store"),
        "backend": "gcp-kms",
        "gcp_kms": options,
    }
    with pytest.raises(InvalidTarget, match=message):
        KeyStore.from_options(store_options)


# --- Azure Key Vault (recording transport; no emulator covers Key Vault) ----


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> FakeKeyVaultTransport:
    transport = FakeKeyVaultTransport()
    monkeypatch.setattr(
        _keyvault.AzureKeyVaultBackend,
        "make_credential",
        lambda self: FixedTokenCredential(),
    )
    monkeypatch.setattr(
        _keyvault.AzureKeyVaultBackend,
        "client_kwargs",
        lambda self: {"transport": transport},
    )
    return transport


@pytest.fixture
def azure_options(tmp_path: Path, vault: FakeKeyVaultTransport) -> dict:
    (tmp_path / "keys").mkdir(mode=0o700)
    return {
        "path": str(tmp_path / "keys" / "data-keys.store"),
        "backend": "azure-keyvault",
        "azure_keyvault": {"vault_url": VAULT_URL},
    }


def test_azure_round_trip(azure_options: dict, vault, tmp_path: Path) -> None:
    store = KeyStore.from_options(azure_options)
    sealed = _sealed(store, tmp_path)
    seal.unseal_file(sealed, tmp_path / "out", store)
    assert (tmp_path / "out").read_bytes() == (tmp_path / "backup.tar").read_bytes()
    record = store.active_for("cust-1")
    assert record["kms_key_name"] == f"lethe-{record['id']}"
    assert record["kms_key"].startswith(f"{VAULT_URL}/keys/lethe-{record['id']}/")
    [create] = [
        body
        for (method, path), body in zip(vault.requests_sent, vault.bodies, strict=True)
        if method == "POST" and path.endswith("/create")
    ]
    assert create["kty"] == "RSA"
    assert create["key_size"] == 2048
    assert sorted(create["key_ops"]) == ["unwrapKey", "wrapKey"]
    assert vault.sent("POST", "/unwrapkey")


def test_azure_purge_deletes_and_purges(
    azure_options: dict, vault, tmp_path: Path
) -> None:
    store = KeyStore.from_options(azure_options)
    sealed = _sealed(store, tmp_path)
    name = store.active_for("cust-1")["kms_key_name"]
    run = run_plugin(KeysPlugin, "key://cust-1", azure_options)
    assert run.unverified() == []
    assert set(_check_names(run)) >= {
        "keyvault-key-deleted",
        "keyvault-key-purged",
        "keyvault-unwrap-fails",
    }
    assert vault.sent("DELETE", f"/keys/{name}")
    assert vault.sent("DELETE", f"/deletedkeys/{name}")
    assert name not in vault.keys
    assert name not in vault.deleted
    assert run.results[0].facts["kms_purged"] is True
    with pytest.raises(seal.SealKeyDestroyed):
        seal.unseal_file(sealed, tmp_path / "out", store)


def test_azure_destroy_after_key_purged(azure_options: dict, vault) -> None:
    """A destroy interrupted after Key Vault purged the key finishes on the next purge."""
    store = KeyStore.from_options(azure_options)
    key_id = store.data_key_for("cust-1").key_id
    record = store.find(key_id)[1]
    name = record["kms_key_name"]
    # The interrupted run's Key Vault step.
    store.kms.schedule_deletion(record)
    assert name not in vault.keys
    assert name not in vault.deleted

    run = run_plugin(KeysPlugin, "key://cust-1", azure_options)

    assert run.statuses() == {key_id: "purged"}
    assert run.results[0].facts["kms_purged"] is True
    assert run.unverified() == []
    assert store.find(key_id)[1]["state"] == "destroyed"


def test_azure_purge_protection_reported(azure_options: dict, vault) -> None:
    vault.recovery_level = "Recoverable"
    store = KeyStore.from_options(azure_options)
    key_id = store.data_key_for("cust-1").key_id
    name = store.active_for("cust-1")["kms_key_name"]
    run = run_plugin(KeysPlugin, "key://cust-1", azure_options)
    [entry] = run.planned
    assert any("purge protection" in line for line in entry.decision.residual)
    result = run.results[0]
    assert result.status == "purged"
    scheduled = vault.deleted[name].scheduled_purge_date
    date = datetime.fromtimestamp(scheduled, UTC).isoformat()
    assert result.facts["kms_purged"] is False
    assert result.facts["kms_scheduled_purge_date"] == date
    assert f"recoverable until {date}" in result.detail
    assert vault.sent("DELETE", "/deletedkeys/") == []
    assert run.unverified() == []
    assert store.find(key_id)[1]["kms_purged"] is False


def test_azure_refused_purge_fails_verification(
    azure_options: dict, vault, monkeypatch
) -> None:
    """A purge the vault refuses although its level allows purging leaves a copy."""
    store = KeyStore.from_options(azure_options)
    store.data_key_for("cust-1")
    original = vault._deleted_key

    def reject_purge(method, name):
        if method == "DELETE":
            return 403, {"error": {"code": "Forbidden", "message": "denied"}}
        return original(method, name)

    monkeypatch.setattr(vault, "_deleted_key", reject_purge)
    run = run_plugin(KeysPlugin, "key://cust-1", azure_options)
    assert "permission denied" in run.results[0].detail
    tombstone = store.find(run.results[0].key)[1]
    assert tombstone["state"] == "destroyed"
    assert "kms_purge_blocked" in tombstone
    failed = [
        check
        for evidence in run.evidence
        for check in evidence.checks
        if not check.passed
    ]
    assert [check.name for check in failed] == ["keyvault-key-purged"]


def test_azure_bad_vault_url(tmp_path: Path) -> None:
    options = {
        "path": str(tmp_path / "store"),
        "backend": "azure-keyvault",
        "azure_keyvault": {"vault_url": "http://vault.invalid"},
    }
    with pytest.raises(InvalidTarget, match="must be a vault URL"):
        KeyStore.from_options(options)


# --- configuration -----------------------------------------------------------


def test_keystore_section_cloud_backends(tmp_path: Path) -> None:
    from agent import config

    path = tmp_path / "lethe.yaml"
    path.write_text(
        "keystore:\n"
        "  backend: gcp-kms\n"
        "  gcp_kms:\n"
        f"    key_ring: {KEY_RING}\n"
        "    destroy_scheduled_days: 2\n"
        "  azure_keyvault:\n"
        f"    vault_url: {VAULT_URL}\n"
    )
    section = config.load(path).sections["keystore"]
    assert section["backend"] == "gcp-kms"
    assert section["gcp_kms"]["key_ring"] == KEY_RING
    assert section["gcp_kms"]["destroy_scheduled_days"] == 2
    assert section["gcp_kms"]["protection_level"] == "SOFTWARE"
    assert section["azure_keyvault"]["key_size"] == 2048


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "  gcp_kms:\n    endpoint: x\n",
            "keystore.gcp_kms.key_ring: missing required key",
        ),
        (
            f"  gcp_kms:\n    key_ring: {KEY_RING}\n    destroy_scheduled_days: 121\n",
            "an integer from 1 to 120",
        ),
        (
            f"  azure_keyvault:\n    vault_url: {VAULT_URL}\n    key_size: 4096\n",
            "an integer from 2048 to 3072",
        ),
    ],
)
def test_keystore_section_rejects(tmp_path: Path, text: str, message: str) -> None:
    from agent import config
    from agent.errors import ConfigError

    path = tmp_path / "lethe.yaml"
    path.write_text("keystore:\n" + text)
    with pytest.raises(ConfigError, match=message):
        config.load(path)
