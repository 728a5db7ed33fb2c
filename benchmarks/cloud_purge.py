"""Benchmark the gs and az plugins against the vendors' simplest Python recipe.

For each emulator (fake-gcs-server, gcp-storage-emulator, Azurite), started
here on a free loopback port, the script seeds two containers of the same
size and purges one with each tool, in the same run:

* reference: the recipe from the vendors' samples, list with versions
  (GCS) or with snapshots and versions (Azure) and delete one item per
  request, in one thread;
* Lethe: the plugin through the contract (describe, discover, plan, purge,
  complete, verify with a fresh listing), as the agent drives it.

Then it checks both containers are empty and prints the times and the ratio.

For the Cloud Storage emulators it also times the emulator's own cost: a
third bucket of the same size emptied with one bare HTTP DELETE per object
over one kept-alive connection, with no SDK. Each delete costs the emulator
time that grows with the objects in the bucket, and any client pays it, so
reference time divided by this floor bounds the speed-up any client can
reach there. It also counts the HTTP requests Lethe sends, per object.

    python benchmarks/cloud_purge.py --objects 2000
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Same safety rails as the test suite: no credentials, no metadata server.
os.environ.update(
    {
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "GOOGLE_CLOUD_PROJECT": "lethe-bench",
    }
)
for _name in (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "AZURE_STORAGE_CONNECTION_STRING",
    "STORAGE_EMULATOR_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
):
    os.environ.pop(_name, None)

import structlog  # noqa: E402

from plugins.azure import AzurePlugin  # noqa: E402
from tests.cloud.conftest import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    _fake_gcs_binary,
    _stop,
    _wait_for,
    free_port,
)
from tests.cloud.gcs_support import client as gcs_client  # noqa: E402
from tests.cloud.gcs_support import plugin_class as gcs_plugin_class  # noqa: E402
from tests.helpers.driver import run_plugin  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


@contextmanager
def started(
    command: list[str], probe: str, ok: tuple[int, ...] = (200,)
) -> Iterator[None]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(probe, process, command[0], ok=ok)
        yield
    finally:
        _stop(process)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def seed(upload: Callable[[str], object], count: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, (f"data/{index:05d}" for index in range(count))))


# -- Cloud Storage --------------------------------------------------------------


class CountingAdapter(requests.adapters.HTTPAdapter):
    """Count the requests the SDK sends, by method, without touching them."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        self.counts[request.method or ""] += 1
        return super().send(request, **kwargs)


def bare_deletes(
    endpoint: str, bucket: str, generations: list[tuple[str, int]]
) -> None:
    """Delete each generation with one bare HTTP request, no SDK, one connection."""
    address = urlsplit(endpoint)
    connection = http.client.HTTPConnection(address.hostname, address.port)
    try:
        for name, generation in generations:
            connection.request(
                "DELETE",
                f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}?generation={generation}",
            )
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 204), response.status
    finally:
        connection.close()


def bench_gcs(label: str, endpoint: str, count: int) -> dict[str, float]:
    gcs = gcs_client(endpoint)
    reference_bucket = gcs.create_bucket(f"ref-{time.time_ns()}")
    lethe_bucket = gcs.create_bucket(f"lethe-{time.time_ns()}")
    floor_bucket = gcs.create_bucket(f"floor-{time.time_ns()}")
    buckets = (reference_bucket, lethe_bucket, floor_bucket)
    for bucket in buckets:
        seed(lambda name, b=bucket: b.blob(name).upload_from_string(b"x" * 64), count)
    adapter = CountingAdapter()

    def reference() -> None:
        for blob in gcs.list_blobs(reference_bucket, versions=True):
            reference_bucket.delete_blob(blob.name, generation=blob.generation)

    def lethe() -> None:
        plugin = gcs_plugin_class(endpoint, adapter)
        run = run_plugin(plugin, f"gs://{lethe_bucket.name}/data/")
        assert len(run.results) == count, len(run.results)
        assert not run.unverified(), run.unverified()[:3]

    def floor() -> None:
        listed = [
            (blob.name, blob.generation)
            for blob in gcs.list_blobs(floor_bucket, versions="true")
        ]
        bare_deletes(endpoint, floor_bucket.name, listed)

    reference_time, lethe_time, floor_time = (
        timed(reference),
        timed(lethe),
        timed(floor),
    )
    for bucket in buckets:
        left = list(gcs.list_blobs(bucket, versions="true"))
        assert left == [], f"{label}: {len(left)} objects left in {bucket.name}"
    return {
        "reference": reference_time,
        "lethe": lethe_time,
        "floor": floor_time,
        "deletes_per_object": adapter.counts["DELETE"] / count,
        "other_requests": sum(adapter.counts.values()) - adapter.counts["DELETE"],
    }


# -- Azure Blob -------------------------------------------------------------------


def bench_azure(connection: str, count: int) -> dict[str, float]:
    from azure.storage.blob import BlobServiceClient

    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = connection
    service = BlobServiceClient.from_connection_string(connection)
    reference_container = service.create_container(f"ref{time.time_ns()}")
    lethe_container = service.create_container(f"lethe{time.time_ns()}")
    for container in (reference_container, lethe_container):
        seed(lambda name, c=container: c.upload_blob(name, b"x" * 64), count)

    def reference() -> None:
        for blob in reference_container.list_blobs(include=["snapshots", "versions"]):
            if blob.snapshot:
                reference_container.get_blob_client(
                    blob.name, snapshot=blob.snapshot
                ).delete_blob()
            else:
                reference_container.delete_blob(blob.name, delete_snapshots="include")

    def lethe() -> None:
        url = f"az://{AZURITE_ACCOUNT}/{lethe_container.container_name}/data/"
        run = run_plugin(AzurePlugin, url)
        assert len(run.results) == count, len(run.results)
        assert not run.unverified(), run.unverified()[:3]

    reference_time, lethe_time = timed(reference), timed(lethe)
    for container in (reference_container, lethe_container):
        left = list(container.list_blobs(include=["snapshots"]))
        assert left == [], (
            f"azurite: {len(left)} blobs left in {container.container_name}"
        )
    return {"reference": reference_time, "lethe": lethe_time}


def run_fake_gcs(count: int) -> dict[str, float]:
    port = free_port()
    with started(
        [
            str(_fake_gcs_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-log-level",
            "error",
        ],
        f"http://127.0.0.1:{port}/storage/v1/b",
    ):
        return bench_gcs("fake-gcs-server", f"http://127.0.0.1:{port}", count)


def run_gcp_storage_emulator(count: int) -> dict[str, float]:
    port = free_port()
    with started(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ],
        f"http://127.0.0.1:{port}/storage/v1/b?project=lethe-bench",
    ):
        return bench_gcs("gcp-storage-emulator", f"http://127.0.0.1:{port}", count)


def run_azurite(count: int) -> dict[str, float]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    with started(
        [
            str(REPO / "node_modules" / ".bin" / "azurite-blob"),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        f"{endpoint}?comp=list",
        ok=(200, 400, 403),
    ):
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )
        return bench_azure(connection, count)


EMULATORS = {
    "fake-gcs-server": run_fake_gcs,
    "gcp-storage-emulator": run_gcp_storage_emulator,
    "azurite": run_azurite,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000, help="objects per bucket")
    parser.add_argument(
        "--emulators",
        default=",".join(EMULATORS),
        help=f"comma-separated emulators to run, from {', '.join(EMULATORS)}",
    )
    args = parser.parse_args()
    print(f"{args.objects} objects per bucket; Lethe time includes verification")
    print(
        f"{'emulator':<22}{'reference s':>13}{'Lethe s':>10}{'speed-up':>10}"
        f"{'floor s':>10}{'ceiling':>9}{'Lethe requests':>24}",
        flush=True,
    )
    for name in args.emulators.split(","):
        figures = EMULATORS[name](args.objects)
        reference_time, lethe_time = figures["reference"], figures["lethe"]
        line = (
            f"{name:<22}{reference_time:>13.2f}{lethe_time:>10.2f}"
            f"{reference_time / lethe_time:>9.1f}x"
        )
        if "floor" in figures:
            line += (
                f"{figures['floor']:>10.2f}{reference_time / figures['floor']:>8.1f}x"
                f"{figures['deletes_per_object']:>8.2f} DELETE/object"
                f" + {figures['other_requests']:.0f}"
            )
        print(line, flush=True)


if __name__ == "__main__":
    main()
