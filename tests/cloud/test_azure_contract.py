"""AzurePlugin contract tests: versions, soft delete and immutability.

Azurite implements none of these, so these tests run the plugin against
FakeBlobTransport (tests/cloud/azure_support.py), which records each
request the SDK sends and responds from a model of the Blob service's rules.
Holds are enforced by the model, and the tests also assert that no delete
request named a held copy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.cloud.azure_support import (
    ACCOUNT,
    CONTAINER,
    Copy,
    FakeBlobTransport,
    plugin_class,
)
from tests.helpers.driver import run_plugin

URL = f"az://{ACCOUNT}/{CONTAINER}/p/"


def _versioned_blob():
    return [
        Copy("p/a", version_id="2026-01-01T00:00:01.0000000Z"),
        Copy("p/a", version_id="2026-01-01T00:00:02.0000000Z"),
        Copy("p/a", version_id="2026-01-01T00:00:03.0000000Z", current=True),
        Copy("p/a", snapshot="2026-01-01T00:00:04.0000000Z"),
        Copy("keep/x"),
    ]


def test_previous_versions_deleted():
    """C1 for Azure: every previous version by id, the blob and its snapshot."""
    fake = FakeBlobTransport(copies=_versioned_blob())

    run = run_plugin(plugin_class(fake), URL)

    assert set(run.statuses().values()) == {"purged"}
    assert [c.name for c in fake.copies] == ["keep/x"]
    deleted_versions = {
        url.split("versionid=")[1].split("&")[0]
        for url in fake.sent("DELETE", "versionid=")
    }
    assert len(deleted_versions) == 3
    assert fake.sent("POST", "comp=batch")
    assert run.unverified() == []


def test_soft_deleted_copies_removed_permanently():
    """Soft delete on, permanent delete allowed: nothing soft-deleted remains."""
    fake = FakeBlobTransport(
        copies=_versioned_blob(), soft_delete_days=7, allow_permanent_delete=True
    )

    run = run_plugin(plugin_class(fake), URL)

    assert [c.name for c in fake.copies] == ["keep/x"]
    assert len(fake.sent("DELETE", "deletetype=permanent")) == 4
    assert {r.key: r.status for r in run.completion}["soft-deleted-listing"] == "purged"
    assert run.unverified() == []


def test_soft_deleted_blob_reported_with_expiry():
    """Soft delete on without versions: the base blob stays soft-deleted, with a date."""
    fake = FakeBlobTransport(copies=[Copy("p/a")], soft_delete_days=7)

    run = run_plugin(plugin_class(fake), URL)

    assert run.info.media["soft_delete_days"] == 7
    assert any("7 days" in note for note in run.info.notes)
    remainder = {r.key: r for r in run.completion}["soft-deleted-listing"]
    assert remainder.status == "blocked"
    assert remainder.refusal.blocked_until > datetime.now(UTC) + timedelta(days=6)
    assert run.unverified() == []


def test_existing_soft_deleted_blob_refused():
    """A blob soft-deleted before the job is refused while soft delete is on."""
    fake = FakeBlobTransport(copies=[Copy("p/old", deleted=True)], soft_delete_days=5)

    run = run_plugin(plugin_class(fake), URL)

    assert list(run.refusal_reasons().values()) == ["soft-deleted"]
    assert run.refused[0].decision.refusal.blocked_until > datetime.now(
        UTC
    ) + timedelta(days=4)
    assert fake.sent("DELETE", "p/old") == []


def test_soft_deleted_blob_undeleted_and_deleted():
    """With soft delete now off, an old soft-deleted blob is undeleted and deleted."""
    fake = FakeBlobTransport(copies=[Copy("p/old", deleted=True)], soft_delete_days=0)

    run = run_plugin(plugin_class(fake), URL)

    methods = [
        verb for verb, url in fake.requests_sent if "p/old" in url and verb != "GET"
    ]
    assert methods == ["PUT", "DELETE"]
    assert fake.copies == []
    assert set(run.statuses().values()) == {"purged"}


def test_immutability_and_legal_hold_blocked():
    """Version-level WORM and legal holds are refused with dates; no delete is sent."""
    until = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
    fake = FakeBlobTransport(
        copies=[
            Copy("p/worm", immutable_until=until),
            Copy("p/held", legal_hold=True),
            Copy("p/free"),
        ]
    )

    run = run_plugin(plugin_class(fake), URL)

    reasons = run.refusal_reasons()
    assert reasons == {"p/worm": "hold", "p/held": "legal-hold"}
    worm = next(e for e in run.refused if e.item.key == "p/worm")
    assert worm.decision.refusal.blocked_until == until
    assert sorted(c.name for c in fake.copies) == ["p/held", "p/worm"]
    assert [
        url
        for verb, url in fake.requests_sent
        if verb == "DELETE" and ("worm" in url or "held" in url)
    ] == []


def test_locked_container_policy_blocked():
    """A container under a time-based immutability policy: every blob refused."""
    fake = FakeBlobTransport(copies=[Copy("p/a"), Copy("p/b")], container_policy=True)

    run = run_plugin(plugin_class(fake), URL)

    assert set(run.refusal_reasons().values()) == {"hold"}
    assert run.info.media["has_immutability_policy"] is True
    assert fake.sent("DELETE", "p/") == []
    assert len(fake.copies) == 2


def test_encryption_scope_reported():
    """The container's default encryption scope is in the media facts and residual."""
    fake = FakeBlobTransport(copies=[Copy("p/a")])

    run = run_plugin(plugin_class(fake), URL)

    assert run.info.media["default_encryption_scope"] == "cmk-scope"
    assert any("cmk-scope" in line for line in run.info.residual)


def test_busy_batch_part_retried():
    """A batch sub-request throttled with 503 is sent again on its own."""
    fake = FakeBlobTransport(copies=[Copy("p/a"), Copy("p/b")], busy_once={"p/b"})

    run = run_plugin(plugin_class(fake), URL)

    assert set(run.statuses().values()) == {"purged"}
    assert fake.copies == []
    assert len(fake.sent("DELETE", "/p/b")) == 2


def test_permanent_delete_not_allowed():
    """A soft-deleted snapshot is blocked with its expiry when permanent delete is off."""
    snapshot = Copy("p/a", snapshot="2026-01-01T00:00:04.0000000Z", deleted=True)
    fake = FakeBlobTransport(copies=[snapshot], soft_delete_days=3)

    run = run_plugin(plugin_class(fake), URL)

    result = run.results[0]
    assert result.status == "blocked"
    assert result.refusal.reason == "soft-deleted"
    assert result.refusal.blocked_until > datetime.now(UTC) + timedelta(days=2)
    assert len(fake.sent("DELETE", "deletetype=permanent")) >= 1
    assert fake.copies == [snapshot]
