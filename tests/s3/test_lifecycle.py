"""The lifecycle method: S3 expires the data, Lethe proves the result later."""

from __future__ import annotations

from plugins.base import JobContext, Method, PlannedItem, Target
from plugins.s3 import S3Plugin
from tests.s3.conftest import all_entries

KEEP_RULE = {
    "ID": "keep-logs",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 365},
}


def lifecycle_bucket(s3, make_bucket) -> str:
    bucket = make_bucket()
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [KEEP_RULE]}
    )
    s3.put_object(Bucket=bucket, Key="old/a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="old/a", Body=b"2")
    s3.delete_object(Bucket=bucket, Key="old/a")
    return bucket


def test_rules_installed_beside_existing(s3, make_bucket, run_s3):
    bucket = lifecycle_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/old/", method="lifecycle")

    assert {e.decision.method for e in run.planned} == {Method.LIFECYCLE}
    assert set(run.statuses().values()) == {"purged"}
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert "keep-logs" in by_id
    ours = [rule for rule in rules if rule["ID"].startswith("lethe-expire-")]
    assert len(ours) == 2
    assert {rule["Filter"]["Prefix"] for rule in ours} == {"old/"}
    versions_rule = next(rule for rule in ours if "Days" in rule["Expiration"])
    assert versions_rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert versions_rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    markers_rule = next(rule for rule in ours if rule not in (versions_rule,))
    assert markers_rule["Expiration"]["ExpiredObjectDeleteMarker"] is True


def test_plan_lists_existing_lifecycle_rules(s3, make_bucket, run_s3):
    bucket = lifecycle_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/old/", purge=False)

    assert any(note.startswith("lifecycle rule: keep-logs") for note in run.info.notes)


def test_verify_tracks_until_expired(s3, make_bucket, run_s3, moto_endpoint):
    """moto never runs lifecycle expiration, so the test expires the data itself.

    Right after the rules go in, verification must report every entry as
    still listed. Once the versions are gone (here deleted by the test, on S3
    by expiration), a later verification of the same plan passes.
    """
    bucket = lifecycle_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/old/", method="lifecycle")

    assert len(run.unverified()) == 3
    assert "lifecycle rule" in run.unverified()[0].checks[0].detail
    for _, key, version in all_entries(s3, bucket, "old/"):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    options = {"endpoint_url": moto_endpoint, "method": "lifecycle"}
    later = S3Plugin(Target(f"s3://{bucket}/old/", options), JobContext())
    try:
        evidence = list(
            later.verify([PlannedItem(e.item, e.decision) for e in run.planned])
        )
    finally:
        later.close()
    assert all(item.verified for item in evidence)
