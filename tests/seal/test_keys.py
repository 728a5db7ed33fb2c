"""The data-key store and the key-shredding plugin, down to the raw device."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from agent import seal
from plugins.base import JobContext, Target
from plugins.errors import InvalidTarget
from plugins.keys import (
    HEADER_SIZE,
    SLOT_SIZE,
    KeyDestroyed,
    KeysPlugin,
    KeyStore,
    KeyStoreError,
)
from plugins.scan import _read_chunks
from tests.conftest import require_root, require_tool
from tests.helpers.driver import run_plugin
from tests.helpers.loopfs import loop_filesystem


def _key_bytes(store: KeyStore, subject: str) -> list[bytes]:
    """Return the stored forms of a subject's key: wrapped (base64 and raw) and plain."""
    record = store.active_for(subject)
    wrapped = record["wrapped"].encode()
    return [wrapped, base64.b64decode(wrapped), store.data_key(record["id"]).key]


def test_store_mode_is_0600(store: KeyStore) -> None:
    store.data_key_for("cust-1")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_store_with_open_mode_rejected(store: KeyStore) -> None:
    store.data_key_for("cust-1")
    os.chmod(store.path, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.data_key_for("cust-2")


def test_one_key_per_subject(store: KeyStore) -> None:
    first = store.data_key_for("cust-1")
    again = store.data_key_for("cust-1")
    other = store.data_key_for("cust-2")
    assert again.key_id == first.key_id
    assert again.key == first.key
    assert other.key_id != first.key_id


def test_destroy_leaves_no_key_bytes(store: KeyStore) -> None:
    store.data_key_for("cust-1")
    store.data_key_for("cust-2")
    doomed = _key_bytes(store, "cust-1")
    kept = _key_bytes(store, "cust-2")
    raw_before = store.path.read_bytes()
    assert doomed[0] in raw_before
    store.destroy(store.active_for("cust-1")["id"], "job-1")
    raw = store.path.read_bytes()
    for fingerprint in doomed:
        assert fingerprint not in raw
    assert kept[0] in raw
    assert store.data_key_for("cust-2").key == kept[2]


def test_destroy_compacts_into_new_inode(store: KeyStore) -> None:
    for subject in ("cust-1", "cust-2", "cust-3"):
        store.data_key_for(subject)
    inode = os.stat(store.path).st_ino
    store.destroy(store.active_for("cust-2")["id"], "job-1")
    assert os.stat(store.path).st_ino != inode
    assert (os.path.getsize(store.path) - HEADER_SIZE) % SLOT_SIZE == 0
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not [
        name for name in os.listdir(store.path.parent) if name.startswith(".data-keys")
    ]


def test_tombstone_keeps_no_subject(store: KeyStore) -> None:
    key_id = store.data_key_for("alice@example.com").key_id
    store.destroy(key_id, "job-1")
    assert b"alice@example.com" not in store.path.read_bytes()
    with pytest.raises(KeyDestroyed, match="job job-1"):
        store.data_key(key_id)


def test_torn_slot_is_skipped(store: KeyStore) -> None:
    store.data_key_for("cust-1")
    with open(store.path, "ab") as stream:
        stream.write(os.urandom(300))
    assert store.data_key_for("cust-2").key_id
    assert [record["subject"] for _slot, record in store.records()] == [
        "cust-1",
        "cust-2",
    ]


def test_plugin_purges_and_verifies(
    store: KeyStore, store_options: dict, tmp_path: Path
) -> None:
    source = tmp_path / "export.csv"
    source.write_bytes(b"id,name\n1,Ada\n" * 1000)
    sealed = tmp_path / "export.csv.lethe"
    seal.seal_file(source, sealed, store, "cust-1")
    store.data_key_for("cust-2")
    run = run_plugin(KeysPlugin, "key://cust-1", store_options)
    assert run.statuses() == {store.find(run.planned[0].item.key)[1]["id"]: "purged"}
    assert run.unverified() == []
    checks = {check.name for check in run.evidence[0].checks}
    assert checks == {"key-destroyed", "store-scan", "sample-unseal"}
    assert str(sealed) in " ".join(run.info.notes)
    with pytest.raises(seal.SealKeyDestroyed):
        seal.unseal_file(sealed, tmp_path / "out", store)
    assert store.active_for("cust-2") is not None


def test_plugin_wildcard_needs_option(store: KeyStore, store_options: dict) -> None:
    store.data_key_for("cust-1")
    with pytest.raises(InvalidTarget, match="all_keys"):
        run_plugin(KeysPlugin, "key://*", store_options, purge=False)


def test_plugin_wildcard_with_prefix(store: KeyStore, store_options: dict) -> None:
    for subject in ("eu-1", "eu-2", "us-1"):
        store.data_key_for(subject)
    run = run_plugin(
        KeysPlugin, "key://*", {**store_options, "subject_prefix": "eu-"}, purge=False
    )
    assert len(run.permitted) == 2


def test_verification_fails_when_key_survives(
    store: KeyStore, store_options: dict, monkeypatch
) -> None:
    store.data_key_for("cust-1")
    monkeypatch.setattr(
        KeyStore, "destroy", lambda self, key_id, job: {"destroyed": "never"}
    )
    run = run_plugin(KeysPlugin, "key://cust-1", store_options)
    failed = {check.name for check in run.evidence[0].checks if not check.passed}
    assert failed == {"key-destroyed", "store-scan", "sample-unseal"}


@pytest.mark.root
def test_raw_device_holds_no_key_after_purge(tmp_path: Path, kek_file: Path) -> None:
    require_root()
    require_tool("mkfs.ext4")
    with loop_filesystem(tmp_path, "ext4", size_mib=16) as filesystem:
        options = {
            "path": str(filesystem.mountpoint / "data-keys.store"),
            "kek_file": str(kek_file),
            "scan_device": True,
        }
        store = KeyStore.from_options(options)
        for index in range(20):
            store.data_key_for(f"cust-{index}")
        doomed, kept = _key_bytes(store, "cust-7"), _key_bytes(store, "cust-8")
        os.sync()
        before = filesystem.raw_bytes()
        assert doomed[0] in before
        assert kept[0] in before
        run = run_plugin(KeysPlugin, "key://cust-7", options)
        assert run.unverified() == []
        assert "device-scan" in {check.name for check in run.evidence[0].checks}
        raw = _raw_device(filesystem.device)
        for fingerprint in doomed:
            assert raw.count(fingerprint) == 0
        assert kept[0] in raw


def _raw_device(device: str) -> bytes:
    """Read the device with O_DIRECT so the page cache cannot hide stale blocks."""
    os.sync()
    return b"".join(_read_chunks(device, None, True))


def test_empty_store_file_is_empty_store(store: KeyStore) -> None:
    store.path.touch(mode=0o600)
    assert list(store.records()) == []
    assert store.data_key_for("cust-1").key_id


def test_foreign_file_rejected(store: KeyStore) -> None:
    store.path.write_bytes(b"not a key store\n")
    store.path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="not a Lethe key store"):
        store.data_key_for("cust-1")


def test_resumed_verify_reports_sample_not_run(
    store: KeyStore, store_options: dict
) -> None:
    store.data_key_for("cust-1")
    run = run_plugin(KeysPlugin, "key://cust-1", store_options)
    # A later process verifies the destroyed key, as a resumed job does.
    later = KeysPlugin(Target("key://cust-1", store_options), JobContext(dry_run=False))
    try:
        later.describe()
        evidence = list(later.verify(run.planned))
    finally:
        later.close()
    checks = {check.name: check for check in evidence[0].checks}
    assert checks["key-destroyed"].passed
    assert checks["sample-unseal"].passed
    assert checks["sample-unseal"].detail.startswith("not run")
