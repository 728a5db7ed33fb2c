"""Fixtures for the S3 plugin tests: moto's HTTP server on 127.0.0.1.

The server runs in a thread of the test process for the whole session. Each
test creates its own uniquely named buckets, so no test reads another's data.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from plugins.s3 import S3Plugin
from tests.helpers.driver import DriverRun, run_plugin


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client that sets up data and checks results independently."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def kms(moto_endpoint: str) -> Any:
    return boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1")


_counter = itertools.count()


@pytest.fixture
def make_bucket(s3: Any) -> Callable[..., str]:
    """Create a bucket with a unique name; ``versioning`` is Enabled, Suspended or None."""

    def create(versioning: str | None = "Enabled", object_lock: bool = False) -> str:
        name = f"lethe-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        if object_lock:
            s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            s3.create_bucket(Bucket=name)
        if versioning:
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": versioning}
            )
        return name

    return create


@pytest.fixture
def run_s3(moto_endpoint: str) -> Callable[..., DriverRun]:
    """Run the S3 plugin through the contract against the moto server."""

    def run(url: str, purge: bool = True, **options: Any) -> DriverRun:
        options.setdefault("endpoint_url", moto_endpoint)
        return run_plugin(S3Plugin, url, options=options, purge=purge)

    return run


def all_entries(s3: Any, bucket: str, prefix: str = "") -> list[tuple[str, str, str]]:
    """List (kind, key, id) of every version, marker and upload, with default paging."""
    entries = []
    for page in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        entries += [
            ("version", v["Key"], v["VersionId"]) for v in page.get("Versions", [])
        ]
        entries += [
            ("marker", m["Key"], m["VersionId"]) for m in page.get("DeleteMarkers", [])
        ]
    for page in s3.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        entries += [
            ("upload", u["Key"], u["UploadId"]) for u in page.get("Uploads", [])
        ]
    return entries


@pytest.fixture
def sdk_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Record every request the plugin's boto3 clients build: (operation, params).

    The hook sits on botocore's ``before-parameter-build`` event, so it sees
    the API parameters of each call exactly as the plugin passed them.
    """
    calls: list[tuple[str, dict[str, Any]]] = []
    original = S3Plugin._make_client

    def make_client(self: S3Plugin, service: str, endpoint_url: str | None) -> Any:
        client = original(self, service, endpoint_url)

        def record(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
            calls.append((model.name, copy.deepcopy(params)))

        client.meta.events.register("before-parameter-build", record)
        return client

    monkeypatch.setattr(S3Plugin, "_make_client", make_client)
    return calls


def operations(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in calls]
