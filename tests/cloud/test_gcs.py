"""GCSPlugin against fake-gcs-server and gcp-storage-emulator.

Each test names the emulator behaviour it relies on. fake-gcs-server keeps
noncurrent generations (memory backend) but stores no holds, retention
times or soft-deleted copies, and it ignores the generation of a delete
request: it always deletes the live object, and no call removes a
noncurrent generation. gcp-storage-emulator implements soft delete but keeps
no noncurrent generations. Deletes of noncurrent generations are therefore
checked at the SDK boundary: the recording adapter shows one delete request
per listed generation, and the plugin's own verification must report the
generations the emulator failed to delete. Holds, retention and permission errors
are covered through the recording adapter in gcs_support, which adds the
fields the real service returns while every request still reaches the
emulator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plugins.base import JobContext, MemoryCheckpoints, PurgeResult, Target
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    TargetNotFound,
    TargetUnreachable,
)
from plugins.gcs import BATCHES_IN_FLIGHT, GCSPlugin
from tests.cloud.conftest import closed_port, unique
from tests.cloud.gcs_support import (
    RecordingAdapter,
    all_generations,
    client,
    plugin_class,
    versioned_bucket,
)
from tests.helpers.driver import run_plugin


@pytest.fixture
def gcs(fake_gcs):
    return client(fake_gcs)


def _deleted_generations(adapter):
    """(name, generation) of every delete request the SDK sent."""
    found = []
    for url in adapter.sent("DELETE", "/o/"):
        path, _, query = url.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&"))
        found.append((path.split("/o/", 1)[1], int(params["generation"])))
    return found


def test_noncurrent_generations_requested(fake_gcs, gcs):
    """C1 for GCS: two generations of one name and a deleted live object.

    fake-gcs-server behaviour: lists live and noncurrent generations of a
    versioned bucket. Its gap: deletes ignore the generation, so the test
    checks the delete requests at the SDK boundary, and that verification
    reports the generations the emulator kept instead of trusting replies.
    """
    name = unique("c1")
    bucket = versioned_bucket(gcs, name)
    for body in (b"first", b"second"):
        bucket.blob("data/k").upload_from_string(body)
    bucket.blob("data/gone").upload_from_string(b"only")
    bucket.blob("data/gone").delete()
    listed = all_generations(gcs, name, "data/")
    assert len(listed) == 3
    adapter = RecordingAdapter()

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/data/")

    assert len(run.permitted) == 3
    assert sorted(_deleted_generations(adapter)) == sorted(listed)
    assert all("ifMetagenerationMatch=" in url for url in adapter.sent("DELETE", "/o/"))
    remaining = {
        f"{key}#{generation}" for key, generation in all_generations(gcs, name, "data/")
    }
    assert {evidence.key for evidence in run.unverified()} == remaining


def test_unversioned_objects_purged(fake_gcs, gcs):
    """Live objects of a bucket without versioning are deleted and verified.

    fake-gcs-server behaviour: deletes the live object of an unversioned bucket.
    """
    name = unique("live")
    bucket = gcs.create_bucket(name)
    for key in ("data/a", "data/b/c", "other"):
        bucket.blob(key).upload_from_string(b"v")

    run = run_plugin(plugin_class(fake_gcs), f"gs://{name}/data/")

    assert set(run.statuses().values()) == {"purged"}
    assert [key for key, _ in all_generations(gcs, name)] == ["other"]
    assert run.unverified() == []


def test_verify_fails_without_delete(fake_gcs, gcs, monkeypatch):
    """Verification catches a purge that deleted nothing (fake-gcs-server generations)."""
    name = unique("nodel")
    bucket = gcs.create_bucket(name)
    bucket.blob("p/k").upload_from_string(b"x")

    def skip_delete(self, bucket, entries):
        for entry in entries:
            yield PurgeResult(key=entry.item.key, status="purged")

    monkeypatch.setattr(GCSPlugin, "_delete_batch", skip_delete)
    run = run_plugin(plugin_class(fake_gcs), f"gs://{name}/p/")

    assert run.statuses() == {
        f"p/k#{run.planned[0].item.attributes['generation']}": "purged"
    }
    assert len(run.unverified()) == 1


def test_many_generations_one_key(fake_gcs, gcs, monkeypatch):
    """C4 for GCS: one name with 1,200 generations, each sent its own delete.

    fake-gcs-server behaviour: lists generations, but its page token is the
    next object name, so a page boundary inside one name's generations
    repeats forever. The page size is raised above 1,200 to list them in one
    page. The deletes are checked at the SDK boundary (see the C1 test).
    """
    monkeypatch.setattr("plugins.gcs.PAGE_SIZE", 1500)
    name = unique("c4")
    bucket = versioned_bucket(gcs, name)
    blob = bucket.blob("p/many")
    for index in range(1200):
        blob.upload_from_string(str(index).encode())
    listed = all_generations(gcs, name, "p/")
    assert len(listed) == 1200
    adapter = RecordingAdapter()

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/", purge=True)

    assert len(run.permitted) == 1200
    assert sorted(_deleted_generations(adapter)) == sorted(listed)


def test_repeated_page_token_stops(fake_gcs, gcs, monkeypatch):
    """A listing whose page token repeats raises instead of looping forever.

    fake-gcs-server behaviour: with 2 objects per page and 3 generations of
    one name, it returns the same page token again and again.
    """
    monkeypatch.setattr("plugins.gcs.PAGE_SIZE", 2)
    name = unique("loop")
    bucket = versioned_bucket(gcs, name)
    for body in (b"1", b"2", b"3"):
        bucket.blob("p/a").upload_from_string(body)

    with pytest.raises(TargetUnreachable, match="page token"):
        run_plugin(plugin_class(fake_gcs), f"gs://{name}/p/", purge=False)


def test_small_pages_while_deleting(fake_gcs, gcs, monkeypatch):
    """C4 for GCS: 9 objects listed 2 per page and deleted 2 at a time.

    fake-gcs-server behaviour: pages through an unversioned bucket by name
    and deletes live objects. Verification lists afresh after the deletes.
    """
    monkeypatch.setattr("plugins.gcs.PAGE_SIZE", 2)
    name = unique("c4p")
    bucket = gcs.create_bucket(name)
    for index in range(9):
        bucket.blob(f"p/{index}").upload_from_string(b"v")
    adapter = RecordingAdapter()

    small = type(
        "SmallBatchPlugin", (plugin_class(fake_gcs, adapter),), {"batch_size": 2}
    )
    run = run_plugin(small, f"gs://{name}/p/")

    assert len(run.results) == 9
    assert set(run.statuses().values()) == {"purged"}
    assert all_generations(gcs, name) == []
    assert run.unverified() == []
    assert len(adapter.sent("GET", "pageToken=")) >= 4


ODD_NAMES = [
    "t/a/./b",
    "t/a/../b",
    "t/dir/",
    "t//lead",
    "t/sp ace",
    "t/hash#1",
    "t/q?x=1",
    "t/ünï",
]


def test_odd_names_exact(fake_gcs, gcs):
    """C5 for GCS: names are purged byte for byte, nothing outside the prefix.

    Cloud Storage forbids the names '.' and '..' and carriage returns, so the
    case uses the dot segments, slashes and URL characters it allows.
    fake-gcs-server behaviour: stores each name as sent and deletes live
    objects of an unversioned bucket.
    """
    name = unique("c5")
    bucket = gcs.create_bucket(name)
    for key in [*ODD_NAMES, "keep/x", "t"]:
        bucket.blob(key).upload_from_string(b"v")

    run = run_plugin(plugin_class(fake_gcs), f"gs://{name}/t/")

    planned = sorted(entry.item.attributes["name"] for entry in run.planned)
    assert planned == sorted(ODD_NAMES)
    assert set(run.statuses().values()) == {"purged"}
    assert sorted(key for key, _ in all_generations(gcs, name)) == ["keep/x", "t"]
    assert run.unverified() == []


def test_whole_bucket_needs_flag(fake_gcs, gcs):
    """C10 for GCS: a bare bucket target is rejected without whole_bucket."""
    name = unique("c10a")
    versioned_bucket(gcs, name)
    with pytest.raises(InvalidTarget, match="whole_bucket: true"):
        run_plugin(plugin_class(fake_gcs), f"gs://{name}")


def test_whole_bucket_kept(fake_gcs, gcs):
    """C10 for GCS: the plan states the bucket is kept, and it is (fake-gcs-server)."""
    name = unique("c10b")
    bucket = gcs.create_bucket(name)
    bucket.blob("x").upload_from_string(b"v")

    run = run_plugin(plugin_class(fake_gcs), f"gs://{name}", {"whole_bucket": True})

    assert f"the bucket {name!r} itself is kept" in run.info.notes
    assert gcs.lookup_bucket(name) is not None
    assert all_generations(gcs, name) == []


def test_whole_bucket_deleted(fake_gcs, gcs):
    """C10 for GCS: with delete_bucket the plan states it and the bucket is deleted."""
    name = unique("c10c")
    bucket = gcs.create_bucket(name)
    bucket.blob("x").upload_from_string(b"v")

    run = run_plugin(
        plugin_class(fake_gcs),
        f"gs://{name}",
        {"whole_bucket": True, "delete_bucket": True},
    )

    assert any("itself is deleted" in note for note in run.info.notes)
    assert {r.key: r.status for r in run.completion}["delete-bucket"] == "purged"
    assert gcs.lookup_bucket(name) is None


def test_resume_after_bucket_deleted(fake_gcs, gcs):
    """A job interrupted after deleting its bucket resumes without reading it.

    The second plugin shares the first one's checkpoints, as a resumed job
    does, and runs the engine's resume steps: describe, complete, verify.
    """
    name = unique("c10d")
    bucket = gcs.create_bucket(name)
    for key in ("x", "y"):
        bucket.blob(key).upload_from_string(b"v")
    options = {"whole_bucket": True, "delete_bucket": True}
    checkpoints = MemoryCheckpoints()
    first = run_plugin(
        plugin_class(fake_gcs), f"gs://{name}", options, checkpoints=checkpoints
    )
    assert {r.key: r.status for r in first.completion}["delete-bucket"] == "purged"

    context = JobContext("test", False, checkpoints=checkpoints)
    plugin = plugin_class(fake_gcs)(Target(f"gs://{name}", options), context)
    info = plugin.describe()
    steps = list(plugin.complete())
    evidence = list(plugin.verify(first.permitted))
    plugin.close()

    assert info.media["bucket_deleted"] is True
    assert steps == []
    assert len(evidence) == 2
    assert all(entry.verified for entry in evidence)


def test_delete_bucket_needs_whole_bucket(fake_gcs):
    with pytest.raises(InvalidTarget, match="delete_bucket"):
        plugin_class(fake_gcs)
        run_plugin(plugin_class(fake_gcs), "gs://b/prefix/", {"delete_bucket": True})


def test_missing_bucket(fake_gcs):
    """fake-gcs-server returns 404 for an unknown bucket."""
    with pytest.raises(TargetNotFound, match="nonexistent-bucket"):
        run_plugin(plugin_class(fake_gcs), "gs://nonexistent-bucket/p/")


def test_endpoint_down():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TargetUnreachable, match="did not answer"):
        run_plugin(plugin_class(url), "gs://b/p/", {"retry_deadline": 1})


def test_permission_denied(fake_gcs, gcs):
    """The adapter returns 403 as Cloud Storage does, because emulators never deny."""
    name = unique("deny")
    versioned_bucket(gcs, name)
    adapter = RecordingAdapter()
    adapter.deny = lambda method, url: 403 if method == "GET" else None
    with pytest.raises(AccessDenied, match=name):
        run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/")


def _held_bucket(gcs, name):
    bucket = gcs.create_bucket(name)
    for key in ("p/temp", "p/event", "p/retained", "p/free"):
        bucket.blob(key).upload_from_string(b"v")
    return bucket


def test_holds_and_retention_blocked(fake_gcs, gcs):
    """Holds and a locked retention policy are refused with dates.

    The emulators store no holds, so the adapter adds them to the JSON the
    emulator returns. A delete sent by mistake would still reach the emulator
    and remove the object, so the surviving objects prove no delete was sent.
    """
    name = unique("hold")
    _held_bucket(gcs, name)
    until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    adapter = RecordingAdapter()
    adapter.bucket_fields = {
        "retentionPolicy": {
            "retentionPeriod": "2592000",
            "isLocked": True,
            "effectiveTime": "2026-01-01T00:00:00Z",
        }
    }
    adapter.object_fields = {
        "p/temp": {"temporaryHold": True},
        "p/event": {"eventBasedHold": True},
        "p/retained": {
            "retentionExpirationTime": until.isoformat().replace("+00:00", "Z")
        },
    }

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/")

    reasons = {
        entry.item.attributes["name"]: entry.decision.refusal for entry in run.refused
    }
    assert sorted(reasons) == ["p/event", "p/retained", "p/temp"]
    assert reasons["p/retained"].blocked_until == until
    assert "locked retention policy" in reasons["p/retained"].detail
    assert reasons["p/temp"].reason == "hold"
    assert any("locked retention policy" in note for note in run.info.notes)
    assert sorted(key for key, _ in all_generations(gcs, name)) == [
        "p/event",
        "p/retained",
        "p/temp",
    ]
    assert adapter.sent("DELETE", "p/temp") == []


def test_holds_released_on_request(fake_gcs, gcs):
    """release_holds sends a PATCH clearing the hold before the delete (adapter)."""
    name = unique("rel")
    bucket = gcs.create_bucket(name)
    bucket.blob("p/temp").upload_from_string(b"v")
    adapter = RecordingAdapter()
    adapter.object_fields = {"p/temp": {"temporaryHold": True}}

    run = run_plugin(
        plugin_class(fake_gcs, adapter), f"gs://{name}/p/", {"release_holds": True}
    )

    patch_index = next(
        i for i, (verb, url) in enumerate(adapter.requests) if verb == "PATCH"
    )
    delete_index = next(
        i for i, (verb, url) in enumerate(adapter.requests) if verb == "DELETE"
    )
    assert patch_index < delete_index
    assert set(run.statuses().values()) == {"purged"}
    assert all_generations(gcs, name) == []


def test_cmek_key_version_reported(fake_gcs, gcs):
    """The KMS key version of each object lands in its result (adapter adds it)."""
    name = unique("kms")
    bucket = versioned_bucket(gcs, name)
    bucket.blob("p/k").upload_from_string(b"v")
    key = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
    adapter = RecordingAdapter()
    adapter.bucket_fields = {"encryption": {"defaultKmsKeyName": key}}
    adapter.object_fields = {"p/k": {"kmsKeyName": f"{key}/cryptoKeyVersions/3"}}

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/")

    assert run.info.media["default_kms_key_name"] == key
    assert run.results[0].facts["kms_key_version"] == f"{key}/cryptoKeyVersions/3"
    assert any(key in line for line in run.info.residual)


@pytest.fixture
def soft_gcs(soft_delete_gcs):
    return client(soft_delete_gcs)


def _soft_deleted(gcs, bucket):
    return [
        blob
        for blob in gcs.list_blobs(bucket, soft_deleted="true")
        if blob.soft_delete_time is not None
    ]


def test_soft_delete_reported_by_default(soft_delete_gcs, soft_gcs):
    """C8 for GCS: the default 7-day policy is stated and the remainder reported.

    gcp-storage-emulator behaviour: new buckets get a 604800 s soft-delete
    policy, deletes leave soft-deleted copies with a hard-delete time, and
    softDeleted=true lists them.
    """
    name = unique("c8a")
    bucket = soft_gcs.create_bucket(name)
    bucket.blob("p/a").upload_from_string(b"v")

    run = run_plugin(plugin_class(soft_delete_gcs), f"gs://{name}/p/")

    assert run.info.media["soft_delete_retention_seconds"] == 604800
    assert any("604800 s (7 days)" in note for note in run.info.notes)
    assert any("remain restorable until" in line for line in run.info.residual)
    assert run.permitted[0].decision.residual != ()
    remainder = {result.key: result for result in run.completion}[
        "soft-deleted-listing"
    ]
    assert remainder.status == "blocked"
    assert remainder.refusal.blocked_until > datetime.now(UTC) + timedelta(days=6)
    assert len(_soft_deleted(soft_gcs, name)) == 1
    assert run.unverified() == []


def test_soft_delete_retention_zeroed(soft_delete_gcs, soft_gcs):
    """C8 for GCS: with allow_bucket_changes the soft-deleted listing ends empty.

    gcp-storage-emulator behaviour: a delete under retention 0 keeps no
    soft-deleted copy, and the bucket's policy can be patched back.
    """
    name = unique("c8b")
    bucket = soft_gcs.create_bucket(name)
    for key in ("p/a", "p/b"):
        bucket.blob(key).upload_from_string(b"v")

    run = run_plugin(
        plugin_class(soft_delete_gcs), f"gs://{name}/p/", {"allow_bucket_changes": True}
    )

    assert any("from 604800 s to 0" in note for note in run.info.notes)
    completion = {result.key: result for result in run.completion}
    assert completion["soft-deleted-listing"].status == "purged"
    assert (
        completion["soft-delete-retention"].facts["soft_delete_retention_before"]
        == 604800
    )
    assert _soft_deleted(soft_gcs, name) == []
    assert (
        soft_gcs.get_bucket(name).soft_delete_policy.retention_duration_seconds
        == 604800
    )
    assert set(run.statuses().values()) == {"purged"}
    assert run.unverified() == []


def test_existing_soft_deleted_refused(soft_delete_gcs, soft_gcs):
    """A copy soft-deleted before the job is refused with its hard-delete time.

    gcp-storage-emulator behaviour: lists the earlier delete as soft-deleted.
    """
    name = unique("c8c")
    bucket = soft_gcs.create_bucket(name)
    bucket.blob("p/old").upload_from_string(b"v")
    bucket.blob("p/old").delete()

    run = run_plugin(plugin_class(soft_delete_gcs), f"gs://{name}/p/")

    assert list(run.refusal_reasons().values()) == ["soft-deleted"]
    refusal = run.refused[0].decision.refusal
    assert refusal.blocked_until > datetime.now(UTC) + timedelta(days=6)


def test_changed_object_not_deleted(fake_gcs, gcs):
    """A generation changed after planning fails with ItemChanged and is kept.

    fake-gcs-server ignores ifMetagenerationMatch on delete, so the adapter
    returns 412 as Cloud Storage does for a failed precondition, and the
    test checks the precondition the SDK sent.
    """
    name = unique("chg")
    bucket = gcs.create_bucket(name)
    bucket.blob("p/a").upload_from_string(b"v")
    adapter = RecordingAdapter()
    adapter.deny = lambda method, url: 412 if method == "DELETE" else None

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/")

    assert list(run.statuses().values()) == ["failed"]
    assert "changed since the plan" in run.results[0].detail
    assert "ifMetagenerationMatch=1" in adapter.sent("DELETE", "/o/")[0]
    assert [key for key, _ in all_generations(gcs, name)] == ["p/a"]


def test_rerun_finishes_failed_purge(fake_gcs, gcs):
    """A delete that keeps failing is reported failed; a second run finishes.

    The adapter returns 503 for one object's delete, as an overloaded
    service does; fake-gcs-server deletes the rest.
    """
    name = unique("rerun")
    bucket = gcs.create_bucket(name)
    for key in ("p/a", "p/b", "p/c"):
        bucket.blob(key).upload_from_string(b"v")
    adapter = RecordingAdapter()
    adapter.deny = lambda method, url: (
        503 if method == "DELETE" and "p/b" in url else None
    )

    first = run_plugin(
        plugin_class(fake_gcs, adapter), f"gs://{name}/p/", {"retry_deadline": 1}
    )
    second = run_plugin(plugin_class(fake_gcs), f"gs://{name}/p/")

    statuses = {key.split("#")[0]: status for key, status in first.statuses().items()}
    assert statuses == {"p/a": "purged", "p/b": "failed", "p/c": "purged"}
    assert "the generation remains" in next(
        r.detail for r in first.results if r.status == "failed"
    )
    assert [entry.item.attributes["name"] for entry in second.planned] == ["p/b"]
    assert set(second.statuses().values()) == {"purged"}
    assert all_generations(gcs, name) == []


def test_deletes_sent_in_batches(fake_gcs, gcs):
    """Deletes go out as JSON API batch requests of at most 100 calls.

    fake-gcs-server behaviour: serves the batch endpoint, responds to each call
    that carries a Content-ID and deletes the live objects of an unversioned
    bucket.
    """
    name = unique("batch")
    bucket = gcs.create_bucket(name)
    for index in range(250):
        bucket.blob(f"p/{index:03d}").upload_from_string(b"v")
    adapter = RecordingAdapter()

    run = run_plugin(plugin_class(fake_gcs, adapter), f"gs://{name}/p/")

    assert set(run.statuses().values()) == {"purged"}
    assert all_generations(gcs, name) == []
    assert run.unverified() == []
    assert adapter.single_deletes() == 0
    assert len(adapter.batch_calls) == 250
    batches = adapter.sent("POST", "/batch/storage/v1")
    assert 3 <= len(batches) <= 250 // 10


def test_batch_answers_by_position(soft_delete_gcs, soft_gcs):
    """Batch responses without Content-ID are matched to calls by position.

    gcp-storage-emulator behaviour: responds to batch deletes in order, with no
    Content-ID and no blank line after each part's headers, and keeps
    soft-deleted copies for the bucket's 7-day retention.
    """
    name = unique("sbatch")
    bucket = soft_gcs.create_bucket(name)
    for index in range(30):
        bucket.blob(f"p/{index:02d}").upload_from_string(b"v")
    adapter = RecordingAdapter()

    run = run_plugin(plugin_class(soft_delete_gcs, adapter), f"gs://{name}/p/")

    assert set(run.statuses().values()) == {"purged"}
    assert all(result.detail == "" for result in run.results)
    assert adapter.single_deletes() == 0
    assert len(adapter.batch_calls) == 30
    assert list(soft_gcs.list_blobs(name)) == []
    assert run.unverified() == []


def test_worker_connections_kept(fake_gcs, gcs, caplog):
    """Without the batch endpoint, deletes go singly and no connection is discarded.

    fake-gcs-server behaviour: deletes live objects of an unversioned bucket.
    The adapter responds to the batch endpoint with 404, as an endpoint without
    it does. urllib3 logs "Connection pool is full" when it drops a
    connection.
    """
    name = unique("pool")
    bucket = gcs.create_bucket(name)
    for index in range(64):
        bucket.blob(f"p/{index}").upload_from_string(b"v")
    adapter = RecordingAdapter()
    adapter.deny = lambda method, url: 404 if "/batch/storage/v1" in url else None
    caplog.set_level("WARNING", logger="urllib3.connectionpool")

    run = run_plugin(
        plugin_class(fake_gcs, adapter), f"gs://{name}/p/", {"workers": 32}
    )

    assert set(run.statuses().values()) == {"purged"}
    assert all_generations(gcs, name) == []
    assert adapter.single_deletes() == 64
    # Only the batch requests already in flight when the first 404 came back.
    assert 1 <= len(adapter.sent("POST", "/batch/storage/v1")) <= BATCHES_IN_FLIGHT
    assert adapter._pool_maxsize == 32
    assert [r for r in caplog.records if "pool is full" in r.getMessage()] == []
