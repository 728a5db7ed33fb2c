"""Encryption per version, and key shredding of SSE-KMS customer keys."""

from __future__ import annotations

from plugins.base import JobContext, Method, Target
from plugins.s3 import S3Plugin, _Entry
from tests.s3.conftest import all_entries, operations


def encrypted_bucket(s3, kms, make_bucket):
    bucket = make_bucket()
    key_id = kms.create_key(Description="lethe test key")["KeyMetadata"]["KeyId"]
    s3.put_object(
        Bucket=bucket,
        Key="e/kms",
        Body=b"k",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
    )
    s3.put_object(Bucket=bucket, Key="e/s3", Body=b"s", ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="e/plain", Body=b"p")
    return bucket, key_id


def encryption_by_key(run):
    return {
        entry.item.identity["key"]: entry.item.attributes["encryption"]
        for entry in run.planned
    }


def test_encryption_reported_per_version(s3, kms, make_bucket, run_s3):
    bucket, key_id = encrypted_bucket(s3, kms, make_bucket)

    run = run_s3(f"s3://{bucket}/e/", purge=False)

    assert encryption_by_key(run) == {
        "e/kms": f"SSE-KMS ({key_id})",
        "e/s3": "SSE-S3",
        "e/plain": "none",
    }


def test_sse_c_reported_with_residual(moto_endpoint):
    """Contract test: moto omits SSE-C from HEAD, where S3 returns 400."""
    from botocore.stub import Stubber

    plugin = S3Plugin(
        Target("s3://stubbed/e/", {"endpoint_url": moto_endpoint}), JobContext()
    )
    entry = _Entry(kind="version", key="e/cust", ident="v1", size=1)
    with Stubber(plugin._client()) as stub:
        stub.add_client_error("head_object", "400", "Bad Request", 400)
        detail = plugin._inspect_version(entry)
    item = plugin._make_item(entry, detail)
    decision = plugin.plan_item(item)
    plugin.close()
    assert item.attributes["encryption"].startswith("SSE-C")
    assert "customer-provided key" in decision.residual[0]


def test_key_scheduled_for_deletion(s3, kms, make_bucket, run_s3, sdk_calls):
    """Schedules the KMS key; moto never deletes keys, so only the request is checked.

    moto keeps a key in PendingDeletion forever and still decrypts with it,
    so the test asserts the request sent and the certificate facts, and makes
    no claim that the data became unreadable.
    """
    bucket, key_id = encrypted_bucket(s3, kms, make_bucket)

    run = run_s3(f"s3://{bucket}/e/", purge_crypto=True, kms_pending_days=7)

    methods = {e.item.identity["key"]: e.decision.method for e in run.planned}
    assert methods["e/kms"] == Method.PURGE_CRYPTO
    assert methods["e/s3"] == Method.DELETE_ALL_VERSIONS
    step = next(r for r in run.completion if r.key == f"purge-crypto:{key_id}")
    assert step.status == "purged"
    assert step.facts["pending_window_days"] == 7
    assert step.facts["crypto_shredding_complete"] is False
    assert "completes only then" in step.detail
    scheduled = [p for name, p in sdk_calls if name == "ScheduleKeyDeletion"]
    assert scheduled == [{"KeyId": key_id, "PendingWindowInDays": 7}]
    state = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    assert state == "PendingDeletion"
    assert all_entries(s3, bucket) == []


def test_key_kept_while_held_data_uses_it(s3, kms, make_bucket, run_s3, sdk_calls):
    bucket = make_bucket(versioning=None, object_lock=True)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    for name, hold in (("e/free", "OFF"), ("e/held", "ON")):
        s3.put_object(
            Bucket=bucket,
            Key=name,
            Body=b"x",
            ServerSideEncryption="aws:kms",
            SSEKMSKeyId=key_id,
            ObjectLockLegalHoldStatus=hold,
        )

    run = run_s3(f"s3://{bucket}/e/", purge_crypto=True, kms_pending_days=7)

    step = next(r for r in run.completion if r.key == f"purge-crypto:{key_id}")
    assert step.status == "blocked"
    assert step.refusal.reason == "in-use"
    assert "ScheduleKeyDeletion" not in operations(sdk_calls)
    state = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    assert state == "Enabled"
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["e/held"]


def bucket_of_versions(s3, make_bucket, encrypted_every: int) -> str:
    """Write 60 keys under s/; every ``encrypted_every``-th one with SSE-S3."""
    bucket = make_bucket()
    for number in range(60):
        extra = {"ServerSideEncryption": "AES256"}
        if number % encrypted_every:
            extra = {}
        s3.put_object(Bucket=bucket, Key=f"s/{number:02d}", Body=b"x", **extra)
    return bucket


def test_sample_heads_part_of_uniform_bucket(s3, make_bucket, run_s3, sdk_calls):
    bucket = bucket_of_versions(s3, make_bucket, encrypted_every=1)

    run = run_s3(f"s3://{bucket}/s/", purge=False, page_size=20)

    heads = operations(sdk_calls).count("HeadObject")
    assert heads == 30
    values = sorted(set(encryption_by_key(run).values()))
    assert values == ["SSE-S3", "not read (inspect_versions: sample)"]
    read = [v for v in encryption_by_key(run).values() if v == "SSE-S3"]
    assert len(read) == 30
    note = next(n for n in run.info.notes if "sample of" in n)
    assert "sample of 30 of 60 versions (SSE-S3 30)" in note
    assert "inspect_versions: true" in note


def test_mixed_sample_heads_every_version(s3, make_bucket, run_s3, sdk_calls):
    bucket = bucket_of_versions(s3, make_bucket, encrypted_every=3)

    run = run_s3(f"s3://{bucket}/s/", purge=False, page_size=20)

    assert operations(sdk_calls).count("HeadObject") == 60
    encryption = encryption_by_key(run)
    assert encryption["s/00"] == "SSE-S3"
    assert encryption["s/01"] == "none"
    assert encryption["s/03"] == "SSE-S3"
    assert sum(value == "SSE-S3" for value in encryption.values()) == 20
    assert any("because a sample found" in note for note in run.info.notes)


def test_inspect_false_heads_nothing(s3, make_bucket, run_s3, sdk_calls):
    bucket = bucket_of_versions(s3, make_bucket, encrypted_every=3)

    run = run_s3(f"s3://{bucket}/s/", purge=False, inspect_versions=False)

    assert "HeadObject" not in operations(sdk_calls)
    values = set(encryption_by_key(run).values())
    assert values == {"not read (inspect_versions: false)"}


def test_key_already_pending_deletion(s3, make_bucket, moto_endpoint):
    """Contract test: KMS rejects scheduling a key that is already pending deletion.

    A resumed job repeats the steps after the purge, so it requests the
    deletion of a key that its earlier run scheduled. KMS then returns
    KMSInvalidStateException, but moto schedules the key again, so the KMS
    client is stubbed with the documented replies.
    """
    from datetime import UTC, datetime

    from botocore.stub import Stubber

    bucket = make_bucket()
    url = f"s3://{bucket}/e/"
    plugin = S3Plugin(Target(url, {"endpoint_url": moto_endpoint}), JobContext())
    deletion = datetime(2027, 1, 8, tzinfo=UTC)
    with Stubber(plugin._kms_client()) as stub:
        stub.add_client_error(
            "schedule_key_deletion",
            "KMSInvalidStateException",
            "key k-1 is pending deletion.",
            400,
            expected_params={"KeyId": "k-1", "PendingWindowInDays": 30},
        )
        stub.add_response(
            "describe_key",
            {
                "KeyMetadata": {
                    "KeyId": "k-1",
                    "KeyState": "PendingDeletion",
                    "DeletionDate": deletion,
                    "PendingDeletionWindowInDays": 7,
                }
            },
            {"KeyId": "k-1"},
        )
        result = plugin._shred_key("k-1")
    plugin.close()

    assert result.status == "purged"
    assert result.facts["deletion_date"] == "2027-01-08T00:00:00+00:00"
    assert result.facts["pending_window_days"] == 7
    assert "scheduled for deletion on 2027-01-08" in result.detail
