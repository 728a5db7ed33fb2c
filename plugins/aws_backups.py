"""Cloud snapshots and backups of AWS resources (``ebs``, ``rds``, ``aurora``).

A target names one resource whose copies are to go: ``ebs://vol-0abc`` (an
EBS volume), ``rds://mydb`` (an RDS DB instance), ``aurora://mycluster``
(an Aurora DB cluster) or ``s3-backups://bucket`` (the AWS Backup recovery
points of an S3 bucket; the bucket's objects belong to the ``s3`` plugin). The plugin lists the resource's snapshots (EBS
snapshots, RDS DB snapshots, Aurora cluster snapshots) and its AWS Backup
recovery points with their vault and the vault's lock state. Items are
deleted only when the target option ``remove_snapshots`` names them (snapshot
id, recovery point ARN or a shell pattern). Every deletion is confirmed by
listing afterwards, because AWS Backup can return success for
DeleteRecoveryPoint while it only marks the point ``EXPIRED``. Verification
lists again.

Options: ``endpoint_url``, ``region``, ``remove_snapshots`` (list of
patterns), ``recovery_points`` (default true: list AWS Backup recovery
points too).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from plugins.base import (
    Check,
    Decision,
    Evidence,
    Item,
    JobContext,
    Method,
    PlannedItem,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    TargetInfo,
)
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    MissingDependency,
    PluginError,
    TargetNotFound,
    TargetUnreachable,
)

log = structlog.get_logger(__name__)

OPTIONS = {"endpoint_url", "region", "remove_snapshots", "recovery_points"}
_NOT_FOUND = {
    "InvalidSnapshot.NotFound",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
    "DBClusterSnapshotNotFoundFault",
    "ResourceNotFoundException",
}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
}
#: How long verification waits for a recovery point in DELETING to go.
DELETING_WAIT_SECONDS = 30.0
_POLL_SECONDS = 2.0


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise MissingDependency(
            "boto3 is not installed; install the extra with: pip install 'lethe[aws]'"
        ) from None
    return boto3


def _sdk_errors() -> tuple[type[Exception], ...]:
    """Return the botocore exception bases every SDK failure derives from."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value) if value else None


class AWSBackupsPlugin(Plugin):
    """Snapshots and AWS Backup recovery points of EBS volumes and RDS databases."""

    name = "aws-backups"
    schemes = ("ebs", "rds", "aurora", "s3-backups")
    requires = ("boto3", "botocore")
    methods = (Method.REMOVE_SNAPSHOTS,)
    batch_size = 20

    def __init__(self, target: Target, context: JobContext) -> None:
        super().__init__(target, context)
        unknown = set(target.options) - OPTIONS
        if unknown:
            raise InvalidTarget(
                f"unknown option(s) {', '.join(sorted(unknown))} for target "
                f"{target.url}; valid options: {', '.join(sorted(OPTIONS))}"
            )
        self.resource = (target.parts.netloc + target.parts.path).strip("/")
        if not self.resource or "/" in self.resource:
            raise InvalidTarget(
                f"target {target.url} names no single resource; write it as "
                f"{target.scheme}://ID, for example ebs://vol-0abc"
            )
        patterns = target.options.get("remove_snapshots", [])
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise InvalidTarget(
                f"target {target.url}: remove_snapshots must be a list of snapshot "
                "ids, recovery point ARNs or shell patterns"
            )
        self.patterns = tuple(patterns)
        self.region = target.options.get("region") or "us-east-1"
        self.log = log.bind(plugin=self.name, target=target.url)
        self._clients: dict[str, Any] = {}
        self._vaults: dict[str, dict[str, Any]] = {}
        self._arn: str | None = None

    # -- clients and errors -------------------------------------------------

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = _boto3().client(
                service,
                region_name=self.region,
                endpoint_url=self.target.options.get("endpoint_url"),
            )
        return self._clients[service]

    def _translate(self, error: Exception, action: str) -> PluginError:
        """Turn an SDK exception into the plugin error a caller can act on."""
        self.log.debug("AWS call failed", action=action, exc_info=True)
        code = _error_code(error)
        if type(error).__name__ == "NoCredentialsError":
            return AccessDenied(
                f"{action}: no AWS credentials were found; configure them through "
                "the AWS SDK's standard chain (environment, profile or role)"
            )
        if code in _DENIED:
            return AccessDenied(
                f"{action}: permission denied ({code or type(error).__name__}); "
                "grant the missing permission to the credentials Lethe runs with"
            )
        if code in _NOT_FOUND:
            return TargetNotFound(f"{action}: not found ({code})")
        if type(error).__name__ in ("EndpointConnectionError", "ConnectTimeoutError"):
            return TargetUnreachable(f"{action}: cannot reach the AWS endpoint")
        return TargetUnreachable(
            f"{action} failed: {code or type(error).__name__}: {error}"
        )

    def _call(
        self, service: str, operation: str, action: str, **parameters: Any
    ) -> Any:
        client = self.client(service)
        try:
            return getattr(client, operation)(**parameters)
        except _sdk_errors() as error:
            raise self._translate(error, action) from None

    def _pages(
        self, service: str, operation: str, key: str, action: str, **parameters: Any
    ) -> Iterator[dict]:
        paginator = self.client(service).get_paginator(operation)
        try:
            for page in paginator.paginate(**parameters):
                yield from page.get(key, [])
        except _sdk_errors() as error:
            raise self._translate(error, action) from None

    # -- describe -----------------------------------------------------------

    def describe(self) -> TargetInfo:
        kind = {
            "ebs": "EBS volume",
            "rds": "RDS DB instance",
            "aurora": "Aurora DB cluster",
            "s3-backups": "S3 bucket",
        }
        return TargetInfo(
            media={
                "media_type": "cloud snapshots and backups",
                "resource": self.resource,
                "resource_type": kind[self.target.scheme],
                "region": self.region,
            },
            notes=(
                (
                    f"snapshots and recovery points of {kind[self.target.scheme]} "
                    f"{self.resource}; the resource itself is not changed"
                ),
            ),
            residual=(
                (
                    "Copies of these snapshots in other regions or accounts "
                    "(copy-snapshot, cross-region backup copies) are not listed "
                    "by this target."
                ),
            ),
        )

    # -- discover -----------------------------------------------------------

    def discover(self) -> Iterator[Item]:
        scheme = self.target.scheme
        if scheme == "ebs":
            yield from self._ebs_snapshots()
        elif scheme == "rds":
            yield from self._rds_snapshots()
        elif scheme == "aurora":
            yield from self._aurora_snapshots()
        if scheme == "s3-backups" or self.target.options.get("recovery_points", True):
            yield from self._recovery_points()

    def _ebs_snapshots(self) -> Iterator[Item]:
        for snapshot in self._pages(
            "ec2",
            "describe_snapshots",
            "Snapshots",
            f"listing EBS snapshots of {self.resource}",
            OwnerIds=["self"],
            Filters=[{"Name": "volume-id", "Values": [self.resource]}],
        ):
            yield self._item(
                "ebs-snapshot",
                snapshot["SnapshotId"],
                snapshot.get("StartTime"),
                int(snapshot.get("VolumeSize", 0)) * 1024**3,
                state=snapshot.get("State"),
            )

    def _rds_snapshots(self) -> Iterator[Item]:
        for snapshot in self._pages(
            "rds",
            "describe_db_snapshots",
            "DBSnapshots",
            f"listing RDS snapshots of {self.resource}",
            DBInstanceIdentifier=self.resource,
        ):
            yield self._item(
                "rds-snapshot",
                snapshot["DBSnapshotIdentifier"],
                snapshot.get("SnapshotCreateTime"),
                int(snapshot.get("AllocatedStorage", 0)) * 1024**3,
                state=snapshot.get("Status"),
                snapshot_type=snapshot.get("SnapshotType"),
            )

    def _aurora_snapshots(self) -> Iterator[Item]:
        for snapshot in self._pages(
            "rds",
            "describe_db_cluster_snapshots",
            "DBClusterSnapshots",
            f"listing Aurora snapshots of {self.resource}",
            DBClusterIdentifier=self.resource,
        ):
            yield self._item(
                "aurora-snapshot",
                snapshot["DBClusterSnapshotIdentifier"],
                snapshot.get("SnapshotCreateTime"),
                int(snapshot.get("AllocatedStorage", 0)) * 1024**3,
                state=snapshot.get("Status"),
                snapshot_type=snapshot.get("SnapshotType"),
            )

    def _item(
        self, copy: str, ident: str, created: Any, size: int, **facts: Any
    ) -> Item:
        return Item(
            key=f"{copy}:{ident}",
            kind=copy,
            size=size,
            identity={"id": ident, "created": _iso(created)},
            attributes={
                "copy": copy,
                "snapshot": ident,
                "resource": self.resource,
                "created": _iso(created),
                **{key: value for key, value in facts.items() if value is not None},
            },
            label=f"{copy} {ident}",
        )

    def resource_arn(self) -> str:
        if self._arn is None and self.target.scheme == "s3-backups":
            self._arn = f"arn:aws:s3:::{self.resource}"
        if self._arn is None:
            account = self._call(
                "sts", "get_caller_identity", "reading the account id"
            )["Account"]
            kind = {
                "ebs": ("ec2", "volume/"),
                "rds": ("rds", "db:"),
                "aurora": ("rds", "cluster:"),
            }
            service, prefix = kind[self.target.scheme]
            self._arn = (
                f"arn:aws:{service}:{self.region}:{account}:{prefix}{self.resource}"
            )
        return self._arn

    def _recovery_points(self) -> Iterator[Item]:
        arn = self.resource_arn()
        for point in self._pages(
            "backup",
            "list_recovery_points_by_resource",
            "RecoveryPoints",
            f"listing AWS Backup recovery points of {arn}",
            ResourceArn=arn,
        ):
            vault = point["BackupVaultName"]
            lock = self._vault_lock(vault)
            lifecycle = {}
            if lock["mode"] != "unlocked":
                # The listing by resource carries no lifecycle; the date a
                # locked point may be deleted comes from DescribeRecoveryPoint.
                described = self._call(
                    "backup", "describe_recovery_point",
                    f"describing recovery point {point['RecoveryPointArn']}",
                    BackupVaultName=vault, RecoveryPointArn=point["RecoveryPointArn"],
                )  # fmt: skip
                lifecycle = described.get("CalculatedLifecycle") or {}
            yield Item(
                key=f"recovery-point:{point['RecoveryPointArn']}",
                kind="recovery-point",
                size=int(point.get("BackupSizeBytes", 0)),
                identity={
                    "id": point["RecoveryPointArn"],
                    "created": _iso(point.get("CreationDate")),
                },
                attributes={
                    "copy": "recovery-point",
                    "snapshot": point["RecoveryPointArn"],
                    "resource": arn,
                    "vault": vault,
                    "lock": lock["mode"],
                    "lock_date": lock["lock_date"],
                    "min_retention_days": lock["min_retention_days"],
                    "delete_at": _iso(lifecycle.get("DeleteAt")),
                    "created": _iso(point.get("CreationDate")),
                    "status": point.get("Status"),
                },
                label=f"recovery point {point['RecoveryPointArn']} in vault {vault}",
            )

    def _vault_lock(self, vault: str) -> dict[str, Any]:
        """Describe a vault's lock: ``unlocked``, ``governance`` or ``compliance``.

        A locked vault whose LockDate has passed can no longer be unlocked by
        anyone, which is compliance mode. A locked vault without a passed
        LockDate is in governance mode.
        """
        if vault not in self._vaults:
            found = self._call(
                "backup", "describe_backup_vault", f"describing backup vault {vault}",
                BackupVaultName=vault,
            )  # fmt: skip
            lock_date = found.get("LockDate")
            if not found.get("Locked"):
                mode = "unlocked"
            elif lock_date is not None and lock_date <= datetime.now(UTC):
                mode = "compliance"
            else:
                mode = "governance"
            self._vaults[vault] = {
                "mode": mode,
                "lock_date": _iso(lock_date),
                "min_retention_days": found.get("MinRetentionDays"),
            }
        return self._vaults[vault]

    # -- plan ---------------------------------------------------------------

    def plan_item(self, item: Item) -> Decision:
        attributes = item.attributes
        ident = attributes["snapshot"]
        if attributes.get("snapshot_type") == "automated":
            return Decision(
                refusal=Refusal(
                    "not-supported",
                    f"{ident} is an automated snapshot; AWS deletes it only when the "
                    "backup retention period of its database is lowered or ends",
                )
            )
        if item.kind == "recovery-point" and attributes.get("lock") == "compliance":
            until = _parse(attributes.get("delete_at"))
            if until is None or until > datetime.now(UTC):
                shown = until.isoformat() if until else "the end of its retention"
                return Decision(
                    refusal=Refusal(
                        "object-lock",
                        f"{ident} is in vault {attributes['vault']}, locked in compliance "
                        f"mode: blocked until {shown}",
                        blocked_until=until,
                    )
                )
        if not any(fnmatch.fnmatchcase(ident, pattern) for pattern in self.patterns):
            return Decision(
                refusal=Refusal(
                    "copy-kept",
                    f"{item.label} holds a copy of {self.resource} and is kept, because "
                    "the target option remove_snapshots names no pattern that matches it",
                )
            )
        residual = [
            f"{item.label} holds the whole {self.resource}, not only selected data"
        ]
        if attributes.get("lock") == "governance":
            residual.append(
                f"vault {attributes['vault']} is locked in governance mode; deleting needs "
                "permission to bypass the lock"
            )
        return Decision(method=Method.REMOVE_SNAPSHOTS, residual=tuple(residual))

    # -- purge --------------------------------------------------------------

    def purge(self, batch: Sequence[PlannedItem]) -> Iterator[PurgeResult]:
        for planned in batch:
            if self.context.should_stop():
                return
            item = planned.item
            try:
                result = self._purge_one(item)
            except PluginError as error:
                result = PurgeResult(
                    item.key, "failed", f"{item.label}: {error}; nothing was deleted"
                )
            if result.status == "purged":
                self.log.info("copy deleted", key=item.key)
            else:
                self.log.error("copy not deleted", key=item.key, detail=result.detail)
            yield result

    def _purge_one(self, item: Item) -> PurgeResult:
        current = self._find(item)
        if current is None:
            return PurgeResult(
                item.key,
                "failed",
                f"{item.label} disappeared between plan and purge; nothing was deleted. "
                "Plan again to see the current copies",
            )
        ident = item.attributes["snapshot"]
        if item.kind == "ebs-snapshot":
            self._call("ec2", "delete_snapshot", f"deleting {ident}", SnapshotId=ident)
        elif item.kind == "rds-snapshot":
            self._call(
                "rds",
                "delete_db_snapshot",
                f"deleting {ident}",
                DBSnapshotIdentifier=ident,
            )
        elif item.kind == "aurora-snapshot":
            self._call(
                "rds", "delete_db_cluster_snapshot", f"deleting {ident}",
                DBClusterSnapshotIdentifier=ident,
            )  # fmt: skip
        else:
            return self._delete_recovery_point(item)
        return PurgeResult(
            item.key, "purged", f"deleted {item.label}", bytes=item.size,
            method=Method.REMOVE_SNAPSHOTS,
        )  # fmt: skip

    def _delete_recovery_point(self, item: Item) -> PurgeResult:
        vault = item.attributes["vault"]
        ident = item.attributes["snapshot"]
        self._call(
            "backup", "delete_recovery_point",
            f"deleting recovery point {ident} in vault {vault}",
            BackupVaultName=vault, RecoveryPointArn=ident,
        )  # fmt: skip
        after = self._find(item)
        status = after.get("Status") if after else None
        if after is not None and status != "DELETING":
            return PurgeResult(
                item.key,
                "failed",
                f"AWS Backup accepted the deletion of {ident} in vault {vault}, but the "
                f"recovery point is still listed with status {status}: it was expired, "
                "not deleted. Check the vault's lock and the point's retention",
                facts={"status_after_delete": status},
            )
        return PurgeResult(
            item.key,
            "purged",
            f"deleted recovery point {ident} from vault {vault}"
            + (" (deletion in progress)" if status == "DELETING" else ""),
            bytes=item.size,
            method=Method.REMOVE_SNAPSHOTS,
            facts={"status_after_delete": status or "not listed"},
        )

    def _find(self, item: Item) -> dict[str, Any] | None:
        """List the item's copy afresh; None when it no longer exists."""
        ident = item.attributes["snapshot"]
        if item.kind == "recovery-point":
            points = self._pages(
                "backup", "list_recovery_points_by_resource", "RecoveryPoints",
                f"listing recovery points of {item.attributes['resource']}",
                ResourceArn=item.attributes["resource"],
            )  # fmt: skip
            return next((p for p in points if p["RecoveryPointArn"] == ident), None)
        listings = {
            "ebs-snapshot": (
                "ec2",
                "describe_snapshots",
                "Snapshots",
                "SnapshotId",
                {
                    "OwnerIds": ["self"],
                    "Filters": [{"Name": "volume-id", "Values": [self.resource]}],
                },
            ),
            "rds-snapshot": (
                "rds",
                "describe_db_snapshots",
                "DBSnapshots",
                "DBSnapshotIdentifier",
                {"DBInstanceIdentifier": self.resource},
            ),
            "aurora-snapshot": (
                "rds",
                "describe_db_cluster_snapshots",
                "DBClusterSnapshots",
                "DBClusterSnapshotIdentifier",
                {"DBClusterIdentifier": self.resource},
            ),
        }
        service, operation, key, field, parameters = listings[item.kind]
        entries = self._pages(
            service,
            operation,
            key,
            f"listing {item.kind}s of {self.resource}",
            **parameters,
        )
        return next((entry for entry in entries if entry[field] == ident), None)

    # -- verify -------------------------------------------------------------

    def verify(self, batch: Sequence[PlannedItem]) -> Iterator[Evidence]:
        for planned in batch:
            yield Evidence(planned.item.key, (self._gone_check(planned.item),))

    def _gone_check(self, item: Item) -> Check:
        deadline = time.monotonic() + DELETING_WAIT_SECONDS
        while True:
            try:
                found = self._find(item)
            except PluginError as error:
                return Check("copy-gone", False, f"cannot list {item.label}: {error}")
            if found is None:
                return Check("copy-gone", True, f"{item.label} is no longer listed")
            status = found.get("Status") or found.get("State")
            if status != "DELETING" or time.monotonic() >= deadline:
                return Check(
                    "copy-gone",
                    False,
                    f"{item.label} is still listed (status {status})",
                )
            time.sleep(_POLL_SECONDS)


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
