"""Versions, delete markers, keys and uploads under a prefix, on moto's server."""

from __future__ import annotations

import pytest

from plugins.base import Method
from plugins.errors import InvalidTarget
from tests.s3.conftest import all_entries, operations


def test_versions_and_marker_purged(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="cust/1.csv", Body=b"first")
    s3.put_object(Bucket=bucket, Key="cust/1.csv", Body=b"second")
    s3.delete_object(Bucket=bucket, Key="cust/1.csv")

    run = run_s3(f"s3://{bucket}/cust/")

    kinds = sorted(entry.item.kind for entry in run.planned)
    assert kinds == ["marker", "version", "version"]
    assert run.statuses() == {entry.item.key: "purged" for entry in run.planned}
    assert all_entries(s3, bucket) == []
    assert run.unverified() == []
    assert len(run.evidence) == 3


def test_plan_reports_versioning_and_counts(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="p/a", Body=b"12345")
    s3.delete_object(Bucket=bucket, Key="p/a")

    run = run_s3(f"s3://{bucket}/p/", purge=False)

    assert run.info.media["versioning"] == "enabled"
    assert run.info.media["counts"] == {
        "versions": 1,
        "markers": 1,
        "uploads": 0,
        "bytes": 5,
    }
    assert "versioning: enabled" in run.info.notes
    assert len(all_entries(s3, bucket)) == 2


def test_suspended_versioning_old_versions_purged(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="p/doc", Body=b"one")
    s3.put_object(Bucket=bucket, Key="p/doc", Body=b"two")
    s3.put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
    )
    # S3 keeps the older versions of a key when a suspended bucket takes a new
    # write to it, but moto drops them, so the null version goes to another key.
    s3.put_object(Bucket=bucket, Key="p/new", Body=b"three")

    run = run_s3(f"s3://{bucket}/p/")

    assert run.info.media["versioning"] == "suspended"
    ids = sorted(entry.item.identity["id"] for entry in run.planned)
    assert len(ids) == 3
    assert ids.count("null") == 1
    assert all_entries(s3, bucket) == []
    assert run.unverified() == []


def test_never_versioned_bucket_purged(s3, make_bucket, run_s3):
    bucket = make_bucket(versioning=None)
    s3.put_object(Bucket=bucket, Key="p/one", Body=b"1")
    s3.put_object(Bucket=bucket, Key="p/two", Body=b"2")

    run = run_s3(f"s3://{bucket}/p/")

    assert run.info.media["versioning"] == "never enabled"
    assert {entry.item.identity["id"] for entry in run.planned} == {"null"}
    assert all_entries(s3, bucket) == []
    assert run.unverified() == []


def test_overwritten_null_version_not_deleted(s3, make_bucket, run_s3, moto_endpoint):
    from plugins.base import JobContext, PlannedItem, Target
    from plugins.s3 import S3Plugin

    bucket = make_bucket(versioning=None)
    s3.put_object(Bucket=bucket, Key="p/one", Body=b"planned content")
    plugin = S3Plugin(
        Target(f"s3://{bucket}/p/", {"endpoint_url": moto_endpoint}), JobContext()
    )
    try:
        planned = [
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        ]
        s3.put_object(Bucket=bucket, Key="p/one", Body=b"newer content")
        results = list(plugin.purge(planned))
    finally:
        plugin.close()

    assert [result.status for result in results] == ["failed"]
    assert "overwritten" in results[0].detail
    body = s3.get_object(Bucket=bucket, Key="p/one")["Body"].read()
    assert body == b"newer content"


def test_odd_keys_purged_exactly(s3, make_bucket, run_s3):
    bucket = make_bucket()
    # moto rejects a line feed in a PUT path and ignores encoding-type=url in
    # listings (a carriage return comes back as a line feed), so keys with
    # control characters are covered by the contract test below.
    inside = ["t/.", "t/..", "t/a/./b", "t/a/../b", "t/dir/", "t//lead", "t/sp ace"]
    for key in [*inside, "keep/x", "t0"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    run = run_s3(f"s3://{bucket}/t/")

    planned = sorted(entry.item.identity["key"] for entry in run.planned)
    assert planned == sorted(inside)
    assert sorted(key for _, key, _ in all_entries(s3, bucket)) == ["keep/x", "t0"]
    assert run.unverified() == []


def test_carriage_return_key_deleted_singly(moto_endpoint):
    """Contract test at the SDK boundary: moto cannot store a carriage return.

    botocore lists with encoding-type=url and decodes the keys, so S3 hands
    the plugin the exact key; the plugin must send it in a DeleteObject URL,
    never in a DeleteObjects XML body where it would become a line feed.
    """
    from botocore.stub import Stubber

    from plugins.base import JobContext, PlannedItem, Target
    from plugins.s3 import S3Plugin, _Entry

    # One worker keeps the two requests in the order the stubs expect.
    options = {"endpoint_url": moto_endpoint, "workers": 1}
    target = Target("s3://stubbed/t/", options)
    plugin = S3Plugin(target, JobContext(dry_run=False))
    entries = [
        _Entry(kind="version", key="t/cr\rkey", ident="v1", size=1),
        _Entry(kind="version", key="t/plain", ident="v2", size=1),
    ]
    batch = []
    for entry in entries:
        item = plugin._make_item(entry, {"encryption": "none"})
        batch.append(PlannedItem(item, plugin.plan_item(item)))
    with Stubber(plugin._client()) as stub:
        stub.add_response(
            "delete_object",
            {},
            {"Bucket": "stubbed", "Key": "t/cr\rkey", "VersionId": "v1"},
        )
        stub.add_response(
            "delete_objects",
            {},
            {
                "Bucket": "stubbed",
                "Delete": {
                    "Objects": [{"Key": "t/plain", "VersionId": "v2"}],
                    "Quiet": True,
                },
            },
        )
        results = list(plugin.purge(batch))
        stub.assert_no_pending_responses()
    plugin.close()

    assert sorted(result.status for result in results) == ["purged", "purged"]


def test_dot_segments_in_prefix_not_normalised(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="a/./b", Body=b"x")
    s3.put_object(Bucket=bucket, Key="a/b", Body=b"x")

    run = run_s3(f"s3://{bucket}/a/./")

    assert [entry.item.identity["key"] for entry in run.planned] == ["a/./b"]
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["a/b"]


def test_incomplete_upload_aborted(s3, make_bucket, run_s3):
    bucket = make_bucket()
    upload = s3.create_multipart_upload(Bucket=bucket, Key="up/big.bin")
    s3.upload_part(
        Bucket=bucket,
        Key="up/big.bin",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"part one",
    )

    run = run_s3(f"s3://{bucket}/up/")

    assert run.info.media["counts"]["uploads"] == 1
    assert [entry.item.kind for entry in run.planned] == ["upload"]
    assert run.statuses() == {f"upload:{upload['UploadId']}:up/big.bin": "purged"}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert run.unverified() == []


def test_whole_bucket_kept_by_default(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")

    run = run_s3(f"s3://{bucket}", whole_bucket=True)

    assert run.info.media["bucket_deleted"] is False
    assert any("itself is kept" in note for note in run.info.notes)
    assert all_entries(s3, bucket) == []
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_whole_bucket_deleted_when_asked(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="a")

    plan = run_s3(f"s3://{bucket}", purge=False, whole_bucket=True, delete_bucket=True)
    assert plan.info.media["bucket_deleted"] is True
    assert any("itself is deleted" in note for note in plan.info.notes)
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200

    run = run_s3(f"s3://{bucket}", whole_bucket=True, delete_bucket=True)

    steps = {result.key: result.status for result in run.completion}
    assert steps["bucket"] == "purged"
    buckets = [entry["Name"] for entry in s3.list_buckets()["Buckets"]]
    assert bucket not in buckets


def test_delete_bucket_with_prefix_rejected(make_bucket, run_s3):
    bucket = make_bucket()
    with pytest.raises(InvalidTarget, match="can only be deleted"):
        run_s3(f"s3://{bucket}/p/", delete_bucket=True)


def test_requests_are_quiet_batches(s3, make_bucket, run_s3, sdk_calls):
    bucket = make_bucket()
    for number in range(5):
        s3.put_object(Bucket=bucket, Key=f"q/{number}", Body=b"x")

    run_s3(f"s3://{bucket}/q/")

    deletes = [params for name, params in sdk_calls if name == "DeleteObjects"]
    assert len(deletes) == 1
    assert deletes[0]["Delete"]["Quiet"] is True
    assert len(deletes[0]["Delete"]["Objects"]) == 5
    assert "DeleteObject" not in operations(sdk_calls)


def test_method_is_delete_all_versions(s3, make_bucket, run_s3):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="m/a", Body=b"x")

    run = run_s3(f"s3://{bucket}/m/", purge=False)

    assert [entry.decision.method for entry in run.planned] == [
        Method.DELETE_ALL_VERSIONS
    ]
