"""Paging: many versions of one key, and listings restarted after deletes."""

from __future__ import annotations

from typing import Any

from tests.helpers.moto_s3 import seed_versions
from tests.s3.conftest import all_entries


def test_1200_versions_of_one_key(s3, make_bucket, run_s3, sdk_calls):
    bucket = make_bucket()
    seed_versions(bucket, versions=1200, keys=1, prefix="big/")

    run = run_s3(f"s3://{bucket}/big/", inspect_versions=False)

    assert len(run.planned) == 1200
    assert set(run.statuses().values()) == {"purged"}
    assert all_entries(s3, bucket) == []
    sizes = [
        len(params["Delete"]["Objects"])
        for name, params in sdk_calls
        if name == "DeleteObjects"
    ]
    # The first two requests carry the purge and any later one is the sweep.
    # moto needs the sweep here: with concurrent DeleteObjects requests on one
    # key, some versions stay listed (none do with one worker).
    assert sorted(sizes[:2]) == [200, 1000]
    assert max(sizes) <= 1000
    assert run.unverified() == []


def drop_last_object(params: dict[str, Any], **kwargs: Any) -> None:
    """Remove one key from each DeleteObjects request before it is sent.

    The server then never sees that key but replies success, which is the
    case of a batch reply that must not be trusted.
    """
    objects = params["Delete"]["Objects"]
    if len(objects) > 1:
        objects.pop()


def test_listing_restarts_after_deletes(
    s3, make_bucket, run_s3, sdk_calls, monkeypatch
):
    """Contract test of the requests sent, because moto's paging differs from S3.

    When the version named by a page marker has been deleted, S3 and moto
    disagree on where the next page starts, so a test that only checked the
    end state could pass on moto alone. This one checks that every listing
    sent after a delete starts from scratch (no key or version marker), and
    then that nothing is left.
    """
    from plugins.s3 import S3Plugin

    bucket = make_bucket()
    for key in ("k/a", "k/b", "k/c"):
        for number in range(3):
            s3.put_object(Bucket=bucket, Key=key, Body=b"%d" % number)
    original = S3Plugin._make_client

    def make_client(self, service, endpoint_url):
        client = original(self, service, endpoint_url)
        client.meta.events.register(
            "before-parameter-build.s3.DeleteObjects", drop_last_object
        )
        return client

    monkeypatch.setattr(S3Plugin, "_make_client", make_client)

    run = run_s3(f"s3://{bucket}/k/", page_size=2)

    sweep = next(result for result in run.completion if result.key == "rescan")
    assert sweep.status == "purged"
    assert sweep.facts["redeleted"] >= 1
    first_delete = next(
        index for index, (name, _) in enumerate(sdk_calls) if name == "DeleteObjects"
    )
    listings_after = [
        params
        for name, params in sdk_calls[first_delete:]
        if name == "ListObjectVersions"
    ]
    restarts = [params for params in listings_after if "KeyMarker" not in params]
    assert len(restarts) >= 2
    previous = None
    for name, params in sdk_calls[first_delete:]:
        if name == "ListObjectVersions" and previous == "DeleteObjects":
            assert "KeyMarker" not in params
            assert "VersionIdMarker" not in params
        previous = name
    assert all(
        params["MaxKeys"] == 2 for params in listings_after if "MaxKeys" in params
    )
    assert all_entries(s3, bucket) == []
    assert run.unverified() == []


def test_failed_request_then_rerun_finishes(s3, make_bucket, run_s3, monkeypatch):
    """A DeleteObjects request that fails whole leaves failed items; a re-run ends it."""
    from botocore.exceptions import ClientError

    from plugins.s3 import S3Plugin

    bucket = make_bucket()
    seed_versions(bucket, versions=1100, prefix="r/")
    original = S3Plugin._make_client
    sent = []

    def fail_first_delete(params: dict[str, Any], **kwargs: Any) -> None:
        sent.append(len(params["Delete"]["Objects"]))
        if len(sent) == 1:
            error = {"Error": {"Code": "InternalError", "Message": "injected"}}
            raise ClientError(error, "DeleteObjects")

    def make_client(self, service, endpoint_url):
        client = original(self, service, endpoint_url)
        client.meta.events.register(
            "before-parameter-build.s3.DeleteObjects", fail_first_delete
        )
        return client

    monkeypatch.setattr(S3Plugin, "_make_client", make_client)
    first = run_s3(f"s3://{bucket}/r/", inspect_versions=False, workers=1)
    monkeypatch.setattr(S3Plugin, "_make_client", original)

    statuses = list(first.statuses().values())
    assert statuses.count("failed") == sent[0]
    assert statuses.count("purged") == 1100 - sent[0]
    assert len(all_entries(s3, bucket)) == sent[0]

    second = run_s3(f"s3://{bucket}/r/", inspect_versions=False)

    assert len(second.planned) == sent[0]
    assert set(second.statuses().values()) == {"purged"}
    assert all_entries(s3, bucket) == []
