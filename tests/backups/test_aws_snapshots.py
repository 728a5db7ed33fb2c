"""EBS and RDS snapshots through moto's server on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from plugins.aws_backups import AWSBackupsPlugin
from plugins.base import JobContext, PlannedItem, Target
from tests.helpers.driver import run_plugin


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def ec2(endpoint: str) -> Any:
    return boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def rds(endpoint: str) -> Any:
    return boto3.client("rds", endpoint_url=endpoint, region_name="us-east-1")


def volume_with_snapshots(ec2: Any) -> tuple[str, list[str]]:
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    snapshots = [
        ec2.create_snapshot(VolumeId=volume, Description=name)["SnapshotId"]
        for name in ("nightly", "before-upgrade")
    ]
    return volume, snapshots


def instance_with_snapshots(rds: Any) -> tuple[str, list[str]]:
    instance = f"lethe-{uuid.uuid4().hex[:8]}"
    rds.create_db_instance(
        DBInstanceIdentifier=instance,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="lethe",
        MasterUserPassword="not-a-secret-1",
    )
    snapshots = [f"{instance}-{name}" for name in ("nightly", "before-upgrade")]
    for snapshot in snapshots:
        rds.create_db_snapshot(
            DBInstanceIdentifier=instance, DBSnapshotIdentifier=snapshot
        )
    return instance, snapshots


def options(endpoint: str, remove: list[str]) -> dict:
    return {
        "endpoint_url": endpoint,
        "remove_snapshots": remove,
        "recovery_points": False,
    }


def ebs_ids(ec2: Any, volume: str) -> set[str]:
    listing = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": [volume]}]
    )
    return {snapshot["SnapshotId"] for snapshot in listing["Snapshots"]}


def test_ebs_plan_lists_both(endpoint, ec2):
    volume, snapshots = volume_with_snapshots(ec2)
    run = run_plugin(
        AWSBackupsPlugin, f"ebs://{volume}", options(endpoint, []), purge=False
    )
    assert {entry.item.attributes["snapshot"] for entry in run.planned} == set(
        snapshots
    )
    assert set(run.refusal_reasons().values()) == {"copy-kept"}


def test_ebs_deletes_only_named(endpoint, ec2):
    volume, snapshots = volume_with_snapshots(ec2)
    run = run_plugin(
        AWSBackupsPlugin, f"ebs://{volume}", options(endpoint, [snapshots[0]])
    )
    assert run.statuses() == {f"ebs-snapshot:{snapshots[0]}": "purged"}
    assert run.unverified() == []
    assert ebs_ids(ec2, volume) == {snapshots[1]}


def test_ebs_vanished_snapshot_fails(endpoint, ec2):
    volume, snapshots = volume_with_snapshots(ec2)
    context = JobContext(dry_run=False)
    plugin = AWSBackupsPlugin(
        Target(f"ebs://{volume}", options(endpoint, ["snap-*"])), context
    )
    plugin.describe()
    planned = [PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()]
    ec2.delete_snapshot(SnapshotId=snapshots[0])
    results = {result.key: result for result in plugin.purge(planned)}
    gone = results[f"ebs-snapshot:{snapshots[0]}"]
    assert gone.status == "failed"
    assert "disappeared between plan and purge; nothing was deleted" in gone.detail
    assert results[f"ebs-snapshot:{snapshots[1]}"].status == "purged"


def test_rds_deletes_only_named(endpoint, rds):
    instance, snapshots = instance_with_snapshots(rds)
    run = run_plugin(
        AWSBackupsPlugin, f"rds://{instance}", options(endpoint, ["*-nightly"])
    )
    assert run.statuses() == {f"rds-snapshot:{snapshots[0]}": "purged"}
    assert run.unverified() == []
    left = rds.describe_db_snapshots(
        DBInstanceIdentifier=instance, SnapshotType="manual"
    )["DBSnapshots"]
    assert [snapshot["DBSnapshotIdentifier"] for snapshot in left] == [snapshots[1]]


def test_rds_automated_snapshot_refused(endpoint, rds):
    """moto, like RDS, takes an automated snapshot when the instance is created."""
    instance, _ = instance_with_snapshots(rds)
    run = run_plugin(
        AWSBackupsPlugin, f"rds://{instance}", options(endpoint, ["*"]), purge=False
    )
    automated = [
        e for e in run.refused if e.item.attributes.get("snapshot_type") == "automated"
    ]
    assert len(automated) == 1
    assert "automated snapshot" in automated[0].decision.refusal.detail


def test_rds_plan_shows_creation_time(endpoint, rds):
    instance, _ = instance_with_snapshots(rds)
    run = run_plugin(
        AWSBackupsPlugin, f"rds://{instance}", options(endpoint, []), purge=False
    )
    assert all(entry.item.attributes["created"] for entry in run.planned)
    assert all(entry.item.size == 20 * 1024**3 for entry in run.planned)


def test_aurora_deletes_only_named(endpoint, rds):
    cluster = f"lethe-{uuid.uuid4().hex[:8]}"
    rds.create_db_cluster(
        DBClusterIdentifier=cluster,
        Engine="aurora-postgresql",
        MasterUsername="lethe",
        MasterUserPassword="not-a-secret-1",
    )
    names = [f"{cluster}-nightly", f"{cluster}-keep"]
    for name in names:
        rds.create_db_cluster_snapshot(
            DBClusterIdentifier=cluster, DBClusterSnapshotIdentifier=name
        )
    run = run_plugin(
        AWSBackupsPlugin, f"aurora://{cluster}", options(endpoint, ["*-nightly"])
    )
    assert run.statuses() == {f"aurora-snapshot:{names[0]}": "purged"}
    assert run.unverified() == []
    left = rds.describe_db_cluster_snapshots(
        DBClusterIdentifier=cluster, SnapshotType="manual"
    )["DBClusterSnapshots"]
    assert [snapshot["DBClusterSnapshotIdentifier"] for snapshot in left] == [names[1]]
