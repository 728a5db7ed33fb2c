"""The AWS KMS backend against moto's server on 127.0.0.1, and its request shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import seal
from plugins.keys import KeysPlugin, KeyStore
from tests.helpers.driver import run_plugin


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def kms_options(tmp_path: Path, kms_endpoint: str) -> dict:
    (tmp_path / "keys").mkdir(mode=0o700)
    return {
        "path": str(tmp_path / "keys" / "data-keys.store"),
        "backend": "aws-kms",
        "aws_kms": {
            "region": "us-east-1",
            "endpoint_url": kms_endpoint,
            "pending_window_days": 7,
        },
    }


def test_kms_round_trip(kms_options: dict, tmp_path: Path) -> None:
    store = KeyStore.from_options(kms_options)
    source = tmp_path / "backup.tar"
    source.write_bytes(b"row data " * 5000)
    seal.seal_file(source, tmp_path / "backup.tar.lethe", store, "cust-1")
    seal.unseal_file(tmp_path / "backup.tar.lethe", tmp_path / "out", store)
    assert (tmp_path / "out").read_bytes() == source.read_bytes()
    assert store.active_for("cust-1")["kms_key"].startswith("arn:aws:kms:us-east-1:")


def test_kms_purge_schedules_deletion(kms_options: dict, tmp_path: Path) -> None:
    store = KeyStore.from_options(kms_options)
    source = tmp_path / "backup.tar"
    source.write_bytes(b"row data " * 5000)
    seal.seal_file(source, tmp_path / "backup.tar.lethe", store, "cust-1")
    kms_key_id = store.active_for("cust-1")["kms_key_id"]
    run = run_plugin(KeysPlugin, "key://cust-1", kms_options)
    assert run.unverified() == []
    assert "kms-deletion" in {check.name for check in run.evidence[0].checks}
    state, date = store.kms.key_state(kms_key_id)
    assert state == "PendingDeletion"
    expected = datetime.now(UTC) + timedelta(days=7)
    assert abs(datetime.fromisoformat(date) - expected) < timedelta(hours=1)
    assert run.results[0].facts["kms_deletion_date"] == date
    assert any("pending window of 7 days" in line for line in run.info.residual)
    with pytest.raises(seal.SealKeyDestroyed):
        seal.unseal_file(tmp_path / "backup.tar.lethe", tmp_path / "out", store)


def test_schedule_deletion_request(kms_options: dict) -> None:
    """Check the request the SDK sends, independent of what the emulator accepts."""
    store = KeyStore.from_options(kms_options)
    key_id = store.data_key_for("cust-1").key_id
    sent: list[dict] = []

    def capture(request, **_ignored) -> None:
        sent.append(
            {
                "target": request.headers["X-Amz-Target"],
                "body": json.loads(request.body),
            }
        )

    store.kms.client.meta.events.register(
        "before-send.kms.ScheduleKeyDeletion", capture
    )
    record = store.find(key_id)[1]
    store.destroy(key_id, "job-1")
    assert sent == [
        {
            "target": b"TrentService.ScheduleKeyDeletion",
            "body": {"KeyId": record["kms_key_id"], "PendingWindowInDays": 7},
        }
    ]


def test_pending_window_out_of_range(kms_options: dict) -> None:
    from plugins.errors import InvalidTarget

    options = {
        **kms_options,
        "aws_kms": {**kms_options["aws_kms"], "pending_window_days": 3},
    }
    with pytest.raises(InvalidTarget, match="7 to 30"):
        KeyStore.from_options(options)


def test_kms_key_refused_without_kms_backend(kms_options: dict) -> None:
    store = KeyStore.from_options(kms_options)
    store.data_key_for("cust-1")
    local = {"path": kms_options["path"], "kek_env": "LETHE_TEST_UNSET_KEK"}
    run = run_plugin(KeysPlugin, "key://cust-1", local)
    assert run.refusal_reasons() == {store.active_for("cust-1")["id"]: "not-supported"}
    assert run.results == []
    assert store.active_for("cust-1") is not None


def test_key_already_pending_deletion(kms_options: dict) -> None:
    """Contract test: KMS rejects scheduling a key that is already pending deletion.

    A destroy interrupted after KMS scheduled the key and before the store
    was written is repeated by the resumed job. KMS then returns
    KMSInvalidStateException, but moto schedules the key again, so the
    client is stubbed with the documented replies.
    """
    from botocore.stub import Stubber

    store = KeyStore.from_options(kms_options)
    record = {"kms_key_id": "k-1", "kms_key": "arn:aws:kms:us-east-1:1:key/k-1"}
    deletion = datetime(2027, 1, 8, tzinfo=UTC)
    with Stubber(store.kms.client) as stub:
        stub.add_client_error(
            "schedule_key_deletion",
            "KMSInvalidStateException",
            "key k-1 is pending deletion.",
            400,
            expected_params={"KeyId": "k-1", "PendingWindowInDays": 7},
        )
        stub.add_response(
            "describe_key",
            {
                "KeyMetadata": {
                    "KeyId": "k-1",
                    "KeyState": "PendingDeletion",
                    "DeletionDate": deletion,
                }
            },
            {"KeyId": "k-1"},
        )
        facts = store.kms.schedule_deletion(record)

    assert facts == {"kms_deletion_date": "2027-01-08T00:00:00+00:00"}
