"""S3 jobs that crash mid-purge and are resumed: the steps after the purge.

The ``lethe`` command runs against the moto server, and the engine kills
it with SIGKILL after the first destroyed item (``LETHE_CRASH_AFTER_ITEMS=1``).
All selected versions go in one DeleteObjects request, which S3 has carried
out before the plugin reports the first item. At the crash every version is
gone, but the journal still records the items as ``purging`` and no key was
scheduled. The resumed job deletes nothing itself and must still schedule
the KMS keys its plan named, unless versions the job keeps use them, and
delete the bucket when the plan requested it. The last tests drive the plugin
alone through the engine's resume steps.

moto never deletes a KMS key (it stays in PendingDeletion), so these tests
check the key state and the journaled steps, not that the data became
unreadable.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

from plugins.base import JobContext, MemoryCheckpoints, PlannedItem, Target
from plugins.s3 import S3Plugin
from tests.helpers.cli import run_cli
from tests.helpers.driver import run_plugin
from tests.s3.conftest import all_entries
from tests.s3.test_cli import write_config


def lethe(
    state_dir: Path, *args: str, crash_after: int = 0
) -> subprocess.CompletedProcess[str]:
    return run_cli(state_dir, *args, crash_after=crash_after, timeout=120)


def crash_then_resume(
    tmp_path: Path, url: str, options: dict
) -> tuple[subprocess.CompletedProcess[str], dict[str, tuple[str, str]]]:
    """Crash a purge after its first item, resume it, and return the run and steps."""
    config = write_config(tmp_path, url, options)
    state_dir = tmp_path / "state"
    crashed = lethe(state_dir, "purge", "--yes", "-c", str(config), crash_after=1)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    journal = state_dir / "journal.sqlite"
    with sqlite3.connect(journal) as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs").fetchall()
        states = {state for (state,) in db.execute("SELECT state FROM items")}
        steps = db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    assert "purging" in states
    assert steps == 0

    resumed = lethe(state_dir, "purge", "--resume", job_id, "-c", str(config))

    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT name, status, detail FROM steps").fetchall()
        left = db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    assert left == 0
    return resumed, {name: (status, detail) for name, status, detail in rows}


def put_encrypted(s3, bucket: str, key: str, key_id: str, **extra) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"customer row",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
        **extra,
    )


def key_state(kms, key_id: str) -> str:
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]


def test_resumed_kms_key_scheduled(s3, kms, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket()
    planned = kms.create_key()["KeyMetadata"]["KeyId"]
    outside = kms.create_key()["KeyMetadata"]["KeyId"]
    put_encrypted(s3, bucket, "e/a", planned)
    put_encrypted(s3, bucket, "e/b", planned)
    put_encrypted(s3, bucket, "keep/c", outside)
    options = {"endpoint_url": moto_endpoint, "purge_crypto": True}

    resumed, steps = crash_then_resume(tmp_path, f"s3://{bucket}/e/", options)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert steps[f"purge-crypto:{planned}"][0] == "purged"
    assert f"purge-crypto:{outside}" not in steps
    assert key_state(kms, planned) == "PendingDeletion"
    assert key_state(kms, outside) == "Enabled"
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["keep/c"]


def test_resumed_kms_key_kept_for_hold(s3, kms, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket(versioning=None, object_lock=True)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    put_encrypted(s3, bucket, "e/free", key_id, ObjectLockLegalHoldStatus="OFF")
    put_encrypted(s3, bucket, "e/held", key_id, ObjectLockLegalHoldStatus="ON")
    options = {"endpoint_url": moto_endpoint, "purge_crypto": True}

    resumed, steps = crash_then_resume(tmp_path, f"s3://{bucket}/e/", options)

    assert resumed.returncode == 1, resumed.stdout + resumed.stderr
    status, detail = steps[f"purge-crypto:{key_id}"]
    assert status == "blocked"
    assert "still encrypts 1 version(s)" in detail
    assert key_state(kms, key_id) == "Enabled"
    assert [key for _, key, _ in all_entries(s3, bucket)] == ["e/held"]


def test_resumed_bucket_deleted(s3, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket()
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"customer row")
    options = {
        "endpoint_url": moto_endpoint,
        "whole_bucket": True,
        "delete_bucket": True,
    }

    resumed, steps = crash_then_resume(tmp_path, f"s3://{bucket}", options)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert steps["bucket"][0] == "purged"
    names = [entry["Name"] for entry in s3.list_buckets()["Buckets"]]
    assert bucket not in names


def test_verify_relists_after_resumed_purge(s3, make_bucket, moto_endpoint):
    """The rescan of the items left in flight must not stand in for the last listing.

    The plugin is driven in the engine's order for a resumed job: rescan
    the item the crash left in flight, purge the rest, complete, verify.
    """
    bucket = make_bucket()
    for name in ("e/a", "e/b"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"customer row")
    target = Target(f"s3://{bucket}/e/", {"endpoint_url": moto_endpoint})
    checkpoints = MemoryCheckpoints()
    first = S3Plugin(target, JobContext("job", False, checkpoints=checkpoints))
    first.describe()
    planned = [PlannedItem(item, first.plan_item(item)) for item in first.discover()]
    list(first.purge(planned[:1]))
    first.close()

    resumed = S3Plugin(target, JobContext("job", False, checkpoints=checkpoints))
    resumed.describe()
    in_flight = list(resumed.verify(planned[:1]))
    results = list(resumed.purge(planned[1:]))
    steps = list(resumed.complete())
    evidence = list(resumed.verify(planned[1:]))
    resumed.close()

    assert [entry.verified for entry in in_flight] == [True]
    assert [result.status for result in results] == ["purged"]
    assert [step.status for step in steps] == ["purged"]
    assert [entry.verified for entry in evidence] == [True]
    assert all_entries(s3, bucket) == []


def test_resume_after_bucket_deleted(s3, make_bucket, moto_endpoint):
    """A job interrupted after deleting its bucket resumes without reading it.

    The second plugin shares the first one's checkpoints, as a resumed job
    does, and runs the engine's resume steps: describe, complete, verify.
    """
    bucket = make_bucket()
    for name in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"customer row")
    url = f"s3://{bucket}"
    options = {
        "endpoint_url": moto_endpoint,
        "whole_bucket": True,
        "delete_bucket": True,
    }
    checkpoints = MemoryCheckpoints()
    first = run_plugin(S3Plugin, url, options, checkpoints=checkpoints)
    assert {r.key: r.status for r in first.completion}["bucket"] == "purged"

    context = JobContext("job", False, checkpoints=checkpoints)
    plugin = S3Plugin(Target(url, options), context)
    info = plugin.describe()
    steps = list(plugin.complete())
    evidence = list(plugin.verify(first.permitted))
    plugin.close()

    assert info.media["bucket_deleted"] is True
    assert steps == []
    assert len(evidence) == 2
    assert all(entry.verified for entry in evidence)


def test_verify_after_bucket_deleted(s3, make_bucket, moto_endpoint, tmp_path):
    bucket = make_bucket()
    for name in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"customer row")
    options = {"endpoint_url": moto_endpoint, "whole_bucket": True, "delete_bucket": True}
    config = write_config(tmp_path, f"s3://{bucket}", options)
    state_dir = tmp_path / "state"
    purged = lethe(state_dir, "purge", "--yes", "-c", str(config))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs WHERE dry_run = 0").fetchall()

    verified = lethe(state_dir, "verify", job_id, "-c", str(config))

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 came back" in verified.stdout


def test_verify_of_vanished_bucket_fails(s3, make_bucket, moto_endpoint, tmp_path):
    """A bucket the job did not delete that is gone proves nothing about its items."""
    bucket = make_bucket(versioning=None)
    s3.put_object(Bucket=bucket, Key="e/a", Body=b"customer row")
    options = {"endpoint_url": moto_endpoint}
    config = write_config(tmp_path, f"s3://{bucket}/e/", options)
    state_dir = tmp_path / "state"
    purged = lethe(state_dir, "purge", "--yes", "-c", str(config))
    assert purged.returncode == 0, purged.stdout + purged.stderr
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        [(job_id,)] = db.execute("SELECT id FROM jobs WHERE dry_run = 0").fetchall()
    s3.delete_bucket(Bucket=bucket)

    verified = lethe(state_dir, "verify", job_id, "-c", str(config))

    assert verified.returncode != 0, verified.stdout + verified.stderr
    assert "0 came back" not in verified.stdout
