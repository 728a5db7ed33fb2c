"""Bad input: every SDK error becomes a plugin error naming the bucket and the fix."""

from __future__ import annotations

import socket

import pytest
from botocore.stub import Stubber

from plugins.base import JobContext, PlannedItem, Target
from plugins.errors import (
    AccessDenied,
    InvalidTarget,
    TargetNotFound,
    TargetUnreachable,
)
from plugins.s3 import S3Plugin, _Entry


def stubbed_plugin(moto_endpoint: str, url: str = "s3://guarded/p/") -> S3Plugin:
    target = Target(url, {"endpoint_url": moto_endpoint, "max_attempts": 1})
    return S3Plugin(target, JobContext(dry_run=False))


def test_missing_bucket_names_bucket(run_s3):
    with pytest.raises(TargetNotFound) as raised:
        run_s3("s3://no-such-bucket-lethe/p/")
    assert "'no-such-bucket-lethe'" in str(raised.value)
    assert "check the bucket name" in str(raised.value)


def test_unreachable_endpoint(run_s3):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{closed_port}"

    with pytest.raises(TargetUnreachable) as raised:
        run_s3("s3://somewhere/p/", endpoint_url=endpoint, max_attempts=1)

    assert endpoint in str(raised.value)
    assert "'somewhere'" in str(raised.value)


def test_empty_prefix_needs_whole_bucket(run_s3):
    with pytest.raises(InvalidTarget) as raised:
        run_s3("s3://some-bucket")
    assert "whole_bucket: true" in str(raised.value)


def test_slash_only_prefix_needs_whole_bucket(run_s3):
    with pytest.raises(InvalidTarget, match="whole_bucket: true"):
        run_s3("s3://some-bucket/")


def test_unknown_option_rejected(run_s3):
    with pytest.raises(InvalidTarget, match="unknown option"):
        run_s3("s3://some-bucket/p/", bypass_compliance=True)


def test_pending_window_out_of_range(run_s3):
    with pytest.raises(InvalidTarget, match="7 to 30"):
        run_s3("s3://some-bucket/p/", kms_pending_days=3)


def test_inspect_versions_value_checked(run_s3):
    with pytest.raises(InvalidTarget, match="expected sample, true or false"):
        run_s3("s3://some-bucket/p/", inspect_versions="yes")


def test_access_denied_on_list(moto_endpoint):
    """Contract test: moto does not enforce bucket policies without IAM set-up."""
    plugin = stubbed_plugin(moto_endpoint)
    with Stubber(plugin._client()) as stub:
        stub.add_client_error(
            "get_bucket_versioning", "AccessDenied", "Access Denied", 403
        )
        with pytest.raises(AccessDenied) as raised:
            plugin.describe()
    plugin.close()
    assert "'guarded'" in str(raised.value)
    assert "grant the credentials" in str(raised.value)


def test_access_denied_on_delete(moto_endpoint):
    """Contract test: a DeleteObjects request refused as a whole stops the target."""
    plugin = stubbed_plugin(moto_endpoint)
    item = plugin._make_item(_Entry(kind="version", key="p/a", ident="v1"), {})
    batch = [PlannedItem(item, plugin.plan_item(item))]
    with Stubber(plugin._client()) as stub:
        stub.add_client_error("delete_objects", "AccessDenied", "Access Denied", 403)
        with pytest.raises(AccessDenied) as raised:
            list(plugin.purge(batch))
    plugin.close()
    assert "DeleteObjects" in str(raised.value)
    assert "'guarded'" in str(raised.value)


def test_wrong_region_names_region(moto_endpoint):
    """Contract test: botocore follows most redirects itself; a stub forces one."""
    plugin = stubbed_plugin(moto_endpoint)
    with Stubber(plugin._client()) as stub:
        stub.add_client_error(
            "get_bucket_versioning",
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the "
            "specified endpoint.",
            301,
            response_meta={"HTTPHeaders": {"x-amz-bucket-region": "eu-west-1"}},
        )
        with pytest.raises(InvalidTarget) as raised:
            plugin.describe()
    plugin.close()
    assert "eu-west-1" in str(raised.value)
    assert "region: eu-west-1" in str(raised.value)


def test_partial_delete_error_fails_item(moto_endpoint):
    """Contract test: an item S3 lists under Errors is failed, never purged."""
    plugin = stubbed_plugin(moto_endpoint)
    entries = [
        _Entry(kind="version", key="p/a", ident="v1"),
        _Entry(kind="version", key="p/b", ident="v2"),
    ]
    batch = []
    for entry in entries:
        item = plugin._make_item(entry, {})
        batch.append(PlannedItem(item, plugin.plan_item(item)))
    with Stubber(plugin._client()) as stub:
        stub.add_response(
            "delete_objects",
            {
                "Errors": [
                    {
                        "Key": "p/b",
                        "VersionId": "v2",
                        "Code": "InternalError",
                        "Message": "try again",
                    }
                ]
            },
        )
        stub.add_response(
            "delete_objects",
            {
                "Errors": [
                    {
                        "Key": "p/b",
                        "VersionId": "v2",
                        "Code": "NotImplemented",
                        "Message": "nope",
                    }
                ]
            },
        )
        results = {result.key: result.status for result in plugin.purge(batch)}
    plugin.close()
    assert results == {"version:v1:p/a": "purged", "version:v2:p/b": "failed"}


def test_retry_mode_from_options(moto_endpoint):
    target = Target(
        "s3://any/p/",
        {"endpoint_url": moto_endpoint, "retry_mode": "adaptive", "max_attempts": 7},
    )
    plugin = S3Plugin(target, JobContext())
    retries = plugin._client().meta.config.retries
    plugin.close()
    assert retries["mode"] == "adaptive"
    assert retries["total_max_attempts"] == 7
