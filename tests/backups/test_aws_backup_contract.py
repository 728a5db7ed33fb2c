"""AWS Backup recovery points: contract tests of requests and responses.

moto 5.2 does not implement recovery points (ListRecoveryPointsByResource,
DeleteRecoveryPoint), so these tests check the requests the plugin sends
and its reaction to AWS's documented responses with botocore's Stubber.
Every response is consumed in order, so a request the plugin should not
send (a delete outside the plan) fails the test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from plugins.aws_backups import AWSBackupsPlugin
from plugins.base import JobContext, PlannedItem, Target

ACCOUNT = "123456789012"
VOLUME = "vol-0123456789abcdef0"
RESOURCE = f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/{VOLUME}"
OPEN_POINT = "arn:aws:ec2:us-east-1::snapshot/snap-0aaaaaaaaaaaaaaa1"
LOCKED_POINT = "arn:aws:ec2:us-east-1::snapshot/snap-0bbbbbbbbbbbbbbb2"
RETAINED_UNTIL = datetime(2031, 1, 1, tzinfo=UTC)


def point(arn: str, vault: str, status: str = "COMPLETED") -> dict[str, Any]:
    return {
        "RecoveryPointArn": arn,
        "CreationDate": datetime(2026, 11, 1, tzinfo=UTC),
        "Status": status,
        "BackupSizeBytes": 1024**3,
        "BackupVaultName": vault,
    }


class Stubs:
    """Stubbed ec2, sts and backup clients that a plugin uses instead of AWS."""

    def __init__(self) -> None:
        self.clients = {
            name: boto3.client(name, region_name="us-east-1")
            for name in ("ec2", "sts", "backup")
        }
        self.stubbers = {name: Stubber(client) for name, client in self.clients.items()}

    def add(
        self, service: str, operation: str, response: dict, expected: dict | None = None
    ) -> None:
        self.stubbers[service].add_response(operation, response, expected)

    def error(
        self, service: str, operation: str, code: str, message: str, expected: dict
    ) -> None:
        self.stubbers[service].add_client_error(
            operation, code, message, http_status_code=403, expected_params=expected
        )

    def listing(self, *points: dict) -> None:
        self.add("backup", "list_recovery_points_by_resource",
                 {"RecoveryPoints": list(points)}, {"ResourceArn": RESOURCE})  # fmt: skip

    def plan_responses(self) -> None:
        """Discovery: no EBS snapshots, the account id, two points, two vaults."""
        self.add("ec2", "describe_snapshots", {"Snapshots": []})
        self.add(
            "sts",
            "get_caller_identity",
            {
                "Account": ACCOUNT,
                "Arn": "arn:aws:iam::123456789012:user/t",
                "UserId": "t",
            },
        )
        self.listing(
            point(OPEN_POINT, "open-vault"), point(LOCKED_POINT, "locked-vault")
        )
        self.add(
            "backup",
            "describe_backup_vault",
            {"BackupVaultName": "open-vault", "Locked": False},
            {"BackupVaultName": "open-vault"},
        )
        self.add("backup", "describe_backup_vault",
                 {"BackupVaultName": "locked-vault", "Locked": True, "MinRetentionDays": 30,
                  "LockDate": datetime.now(UTC) - timedelta(days=10)},
                 {"BackupVaultName": "locked-vault"})  # fmt: skip
        self.add("backup", "describe_recovery_point",
                 {"RecoveryPointArn": LOCKED_POINT, "BackupVaultName": "locked-vault",
                  "CalculatedLifecycle": {"DeleteAt": RETAINED_UNTIL}},
                 {"BackupVaultName": "locked-vault", "RecoveryPointArn": LOCKED_POINT})  # fmt: skip

    def __enter__(self) -> Stubs:
        for stubber in self.stubbers.values():
            stubber.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stubber in self.stubbers.values():
            stubber.deactivate()

    def assert_all_used(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def delete_request(arn: str, vault: str) -> dict:
    return {"BackupVaultName": vault, "RecoveryPointArn": arn}


@pytest.fixture
def stubs() -> Stubs:
    with Stubs() as stubbed:
        yield stubbed


def planned_run(
    stubs: Stubs, remove: list[str]
) -> tuple[AWSBackupsPlugin, list[PlannedItem]]:
    target = Target(f"ebs://{VOLUME}", {"remove_snapshots": remove})
    plugin = AWSBackupsPlugin(target, JobContext(dry_run=False))
    plugin._clients = stubs.clients
    plugin.describe()
    stubs.plan_responses()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    return plugin, planned


def by_vault(planned: list[PlannedItem]) -> dict[str, PlannedItem]:
    return {entry.item.attributes["vault"]: entry for entry in planned}


def test_plan_shows_vault_and_lock(stubs):
    _, planned = planned_run(stubs, ["*"])
    entries = by_vault(planned)
    assert entries["open-vault"].item.attributes["lock"] == "unlocked"
    assert entries["locked-vault"].item.attributes["lock"] == "compliance"


def test_compliance_lock_blocked_until_date(stubs):
    _, planned = planned_run(stubs, ["*"])
    refusal = by_vault(planned)["locked-vault"].decision.refusal
    assert refusal.reason == "object-lock"
    assert refusal.blocked_until == RETAINED_UNTIL
    assert "blocked until 2031-01-01T00:00:00+00:00" in refusal.detail


def test_unnamed_point_kept(stubs):
    _, planned = planned_run(stubs, [])
    assert by_vault(planned)["open-vault"].decision.refusal.reason == "copy-kept"


def test_delete_confirmed_by_listing(stubs):
    plugin, planned = planned_run(stubs, [OPEN_POINT])
    permitted = [entry for entry in planned if entry.decision.permitted]
    stubs.listing(point(OPEN_POINT, "open-vault"))
    stubs.add(
        "backup", "delete_recovery_point", {}, delete_request(OPEN_POINT, "open-vault")
    )
    stubs.listing(point(LOCKED_POINT, "locked-vault"))
    results = list(plugin.purge(permitted))
    stubs.listing(point(LOCKED_POINT, "locked-vault"))
    evidence = list(plugin.verify(permitted))
    assert [result.status for result in results] == ["purged"]
    assert evidence[0].verified
    stubs.assert_all_used()


def test_expired_not_deleted_fails(stubs):
    """DeleteRecoveryPoint returns 200, but the point stays listed as EXPIRED."""
    plugin, planned = planned_run(stubs, [OPEN_POINT])
    permitted = [entry for entry in planned if entry.decision.permitted]
    stubs.listing(point(OPEN_POINT, "open-vault"))
    stubs.add(
        "backup", "delete_recovery_point", {}, delete_request(OPEN_POINT, "open-vault")
    )
    stubs.listing(point(OPEN_POINT, "open-vault", status="EXPIRED"))
    result = next(iter(plugin.purge(permitted)))
    assert result.status == "failed"
    assert "it was expired, not deleted" in result.detail
    assert result.facts["status_after_delete"] == "EXPIRED"
    stubs.assert_all_used()


def test_vault_permission_denied_fails(stubs):
    plugin, planned = planned_run(stubs, [OPEN_POINT])
    permitted = [entry for entry in planned if entry.decision.permitted]
    stubs.listing(point(OPEN_POINT, "open-vault"))
    stubs.error(
        "backup", "delete_recovery_point", "AccessDeniedException",
        "Insufficient privileges to perform this action.",
        delete_request(OPEN_POINT, "open-vault"),
    )  # fmt: skip
    result = next(iter(plugin.purge(permitted)))
    assert result.status == "failed"
    assert "permission denied (AccessDeniedException)" in result.detail
    assert "in vault open-vault" in result.detail
    stubs.assert_all_used()


def test_vanished_point_not_deleted(stubs):
    plugin, planned = planned_run(stubs, [OPEN_POINT])
    permitted = [entry for entry in planned if entry.decision.permitted]
    stubs.listing(point(LOCKED_POINT, "locked-vault"))
    result = next(iter(plugin.purge(permitted)))
    assert result.status == "failed"
    assert "disappeared between plan and purge" in result.detail
    stubs.assert_all_used()


def test_s3_bucket_points_listed(stubs):
    """An S3 bucket's recovery points are listed by the bucket's ARN."""
    bucket_arn = "arn:aws:s3:::lethe-exports"
    plugin = AWSBackupsPlugin(Target("s3-backups://lethe-exports"), JobContext())
    plugin._clients = stubs.clients
    stubs.add(
        "backup", "list_recovery_points_by_resource",
        {"RecoveryPoints": [point("arn:aws:backup:us-east-1:123456789012:recovery-point:s3-1", "open-vault")]},
        {"ResourceArn": bucket_arn},
    )  # fmt: skip
    stubs.add("backup", "describe_backup_vault",
              {"BackupVaultName": "open-vault", "Locked": False}, {"BackupVaultName": "open-vault"})  # fmt: skip
    items = list(plugin.discover())
    assert [item.attributes["resource"] for item in items] == [bucket_arn]
    stubs.assert_all_used()


def test_denied_vault_journal_exact(stubs, tmp_path):
    """Through the engine: the denied point fails, the locked one stays refused."""
    from agent.config import Config
    from agent.engine import Engine
    from agent.registry import Registry

    class StubbedPlugin(AWSBackupsPlugin):
        def client(self, service: str) -> Any:
            return stubs.clients[service]

    registry = Registry()
    registry.add(StubbedPlugin)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    engine = Engine(Config(), state, registry=registry)
    try:
        stubs.plan_responses()
        target = Target(f"ebs://{VOLUME}", {"remove_snapshots": ["*"]})
        job_id = engine.plan([target], {}, dry_run=False)
        stubs.listing(point(OPEN_POINT, "open-vault"))
        stubs.error(
            "backup", "delete_recovery_point", "AccessDeniedException",
            "Insufficient privileges to perform this action.",
            delete_request(OPEN_POINT, "open-vault"),
        )  # fmt: skip
        outcome = engine.purge(job_id)
        rows = {row.key: row for row in engine.journal.items(job_id)}
    finally:
        engine.close()
    denied = rows[f"recovery-point:{OPEN_POINT}"]
    locked = rows[f"recovery-point:{LOCKED_POINT}"]
    assert outcome.exit_code == 2
    assert outcome.certificate is None
    assert denied.state == "failed"
    assert "permission denied (AccessDeniedException)" in denied.detail
    assert locked.state == "refused"
    assert locked.refusal["reason"] == "object-lock"
    stubs.assert_all_used()
