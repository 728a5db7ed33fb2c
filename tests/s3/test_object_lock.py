"""Object Lock: governance, compliance and legal holds are never counted as destroyed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from plugins.base import JobContext, PlannedItem, Target
from plugins.s3 import S3Plugin
from tests.s3.conftest import all_entries

RETAIN_DAYS = 3


def locked_bucket(s3, make_bucket) -> tuple[str, dict[str, str]]:
    """Create a lock bucket with governance, compliance, held and plain objects."""
    bucket = make_bucket(versioning=None, object_lock=True)
    until = datetime.now(UTC) + timedelta(days=RETAIN_DAYS)
    versions = {
        "gov": s3.put_object(
            Bucket=bucket,
            Key="l/gov",
            Body=b"g",
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=until,
        )["VersionId"],
        "comp": s3.put_object(
            Bucket=bucket,
            Key="l/comp",
            Body=b"c",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )["VersionId"],
        "hold": s3.put_object(
            Bucket=bucket, Key="l/hold", Body=b"h", ObjectLockLegalHoldStatus="ON"
        )["VersionId"],
        "plain": s3.put_object(Bucket=bucket, Key="l/plain", Body=b"p")["VersionId"],
    }
    return bucket, versions


def by_name(run, versions):
    names = {f"version:{vid}:l/{name}": name for name, vid in versions.items()}
    return {names[entry.item.key]: entry for entry in run.planned}


def test_locks_refused_without_bypass(s3, make_bucket, run_s3):
    bucket, versions = locked_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/l/")

    planned = by_name(run, versions)
    assert planned["gov"].decision.refusal.reason == "object-lock"
    assert "bypass_governance" in planned["gov"].decision.refusal.detail
    assert planned["comp"].decision.refusal.reason == "object-lock"
    assert planned["hold"].decision.refusal.reason == "legal-hold"
    assert planned["plain"].decision.permitted
    assert run.statuses() == {planned["plain"].item.key: "purged"}
    remaining = sorted(key for _, key, _ in all_entries(s3, bucket))
    assert remaining == ["l/comp", "l/gov", "l/hold"]


def test_compliance_blocked_until_date(s3, make_bucket, run_s3):
    bucket, versions = locked_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/l/", purge=False)

    refusal = by_name(run, versions)["comp"].decision.refusal
    expected = (datetime.now(UTC) + timedelta(days=RETAIN_DAYS)).date()
    assert refusal.blocked_until is not None
    assert refusal.blocked_until.date() == expected
    assert f"blocked until {expected.isoformat()}" in refusal.detail


def test_governance_purged_with_bypass(s3, make_bucket, run_s3, sdk_calls):
    bucket, versions = locked_bucket(s3, make_bucket)

    run = run_s3(f"s3://{bucket}/l/", bypass_governance=True)

    planned = by_name(run, versions)
    assert planned["gov"].decision.permitted
    assert planned["comp"].decision.refusal.reason == "object-lock"
    assert planned["hold"].decision.refusal.reason == "legal-hold"
    purged = {key for key, status in run.statuses().items() if status == "purged"}
    assert purged == {planned["gov"].item.key, planned["plain"].item.key}
    assert sorted(key for _, key, _ in all_entries(s3, bucket)) == ["l/comp", "l/hold"]
    bypassing = [
        params
        for name, params in sdk_calls
        if name == "DeleteObjects" and params.get("BypassGovernanceRetention")
    ]
    assert [obj["Key"] for obj in bypassing[0]["Delete"]["Objects"]] == ["l/gov"]
    assert run.unverified() == []


def test_hold_added_after_plan_is_blocked(s3, make_bucket, moto_endpoint):
    bucket, versions = locked_bucket(s3, make_bucket)
    target = Target(f"s3://{bucket}/l/plain", {"endpoint_url": moto_endpoint})
    plugin = S3Plugin(target, JobContext(dry_run=False))
    try:
        planned = [
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        ]
        s3.put_object_legal_hold(
            Bucket=bucket,
            Key="l/plain",
            VersionId=versions["plain"],
            LegalHold={"Status": "ON"},
        )
        results = list(plugin.purge(planned))
    finally:
        plugin.close()

    assert [result.status for result in results] == ["blocked"]
    assert results[0].refusal.reason == "object-lock"
    assert [key for _, key, _ in all_entries(s3, bucket, "l/plain")] == ["l/plain"]
