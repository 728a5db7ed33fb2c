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
reach there. Each Cloud Storage purge runs on a fresh emulator process, for
``--rounds`` rounds in rotating order, and the script prints the medians,
the CPU time of the client and of the emulator, and the HTTP requests
Lethe sends per object.

    python benchmarks/cloud_purge.py --objects 2000
"""

from __future__ import annotations

import argparse
import collections
import functools
import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager as ContextManager
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
from google.cloud import storage  # noqa: E402

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
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(probe, process, command[0], ok=ok)
        yield process
    finally:
        _stop(process)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def seed(upload: Callable[[str], object], count: int, workers: int = 8) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
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


def upload(bucket: storage.Bucket, name: str) -> None:
    bucket.blob(name).upload_from_string(b"x" * 64)


def purge_reference(gcs: storage.Client, bucket: storage.Bucket) -> None:
    """Purge with the vendor's recipe: list every generation, delete each in turn."""
    for blob in gcs.list_blobs(bucket, versions=True):
        bucket.delete_blob(blob.name, generation=blob.generation)


def purge_lethe(
    endpoint: str, bucket: storage.Bucket, count: int, adapter: CountingAdapter
) -> None:
    plugin = gcs_plugin_class(endpoint, adapter)
    run = run_plugin(plugin, f"gs://{bucket.name}/data/")
    assert len(run.results) == count, len(run.results)
    assert not run.unverified(), run.unverified()[:3]


def purge_floor(endpoint: str, gcs: storage.Client, bucket: storage.Bucket) -> None:
    listed = [
        (blob.name, blob.generation) for blob in gcs.list_blobs(bucket, versions="true")
    ]
    bare_deletes(endpoint, bucket.name, listed)


def bench_gcs(
    label: str,
    start: Callable[[], ContextManager[tuple[str, int]]],
    count: int,
    rounds: int,
) -> dict[str, float]:
    """Time the three purges, each on a fresh emulator, for ``rounds`` rounds.

    A fresh emulator per purge keeps the purges apart: gcp-storage-emulator
    rewrites the metadata of every bucket on each delete, so a bucket
    seeded for a later purge would slow an earlier one.
    """
    tools = ("reference", "lethe", "floor")
    wall: dict[str, list[float]] = {tool: [] for tool in tools}
    server_cpu: dict[str, list[float]] = {tool: [] for tool in tools}
    client_cpu: dict[str, list[float]] = {tool: [] for tool in tools}
    adapter = CountingAdapter()
    for round_index in range(rounds):
        # Rotate the order each round so a load change hits every tool alike.
        order = tools[round_index % 3 :] + tools[: round_index % 3]
        for tool in order:
            with start() as (endpoint, pid):
                gcs = gcs_client(endpoint)
                bucket = gcs.create_bucket(f"{tool}-{time.time_ns()}")
                # gcp-storage-emulator serves one connection at a time and
                # keeps a listen backlog of 5, so more uploaders time out.
                seed(functools.partial(upload, bucket), count, workers=2)
                actions = {
                    "reference": functools.partial(purge_reference, gcs, bucket),
                    "lethe": functools.partial(
                        purge_lethe, endpoint, bucket, count, adapter
                    ),
                    "floor": functools.partial(purge_floor, endpoint, gcs, bucket),
                }
                server_before, client_before = cpu_seconds(pid), time.process_time()
                wall[tool].append(timed(actions[tool]))
                server_cpu[tool].append(cpu_seconds(pid) - server_before)
                client_cpu[tool].append(time.process_time() - client_before)
                left = list(gcs.list_blobs(bucket, versions="true"))
                assert left == [], f"{label}: {len(left)} objects left after {tool}"
    ratios = [
        reference / lethe
        for reference, lethe in zip(wall["reference"], wall["lethe"], strict=True)
    ]
    figures = {f"{tool}": statistics.median(wall[tool]) for tool in tools}
    figures.update(
        {
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "deletes_per_object": adapter.counts["DELETE"] / (count * rounds),
            "batches_per_object": adapter.counts["POST"] / (count * rounds),
            "other_requests": (
                sum(adapter.counts.values())
                - adapter.counts["DELETE"]
                - adapter.counts["POST"]
            )
            / rounds,
        }
    )
    for tool in tools:
        figures[f"{tool}_server_cpu"] = statistics.median(server_cpu[tool])
        figures[f"{tool}_client_cpu"] = statistics.median(client_cpu[tool])
    return figures


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


@contextmanager
def fake_gcs_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
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
    ]
    with started(command, f"http://127.0.0.1:{port}/storage/v1/b") as process:
        yield f"http://127.0.0.1:{port}", process.pid


@contextmanager
def gcp_storage_emulator() -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
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
    ]
    probe = f"http://127.0.0.1:{port}/storage/v1/b?project=lethe-bench"
    with started(command, probe) as process:
        yield f"http://127.0.0.1:{port}", process.pid


def run_fake_gcs(count: int, rounds: int) -> dict[str, float]:
    return bench_gcs("fake-gcs-server", fake_gcs_server, count, rounds)


def run_gcp_storage_emulator(count: int, rounds: int) -> dict[str, float]:
    return bench_gcs("gcp-storage-emulator", gcp_storage_emulator, count, rounds)


def run_azurite(count: int, rounds: int) -> dict[str, float]:
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
        "--rounds",
        type=int,
        default=3,
        help="Cloud Storage rounds; each times every purge once on a fresh emulator",
    )
    parser.add_argument(
        "--emulators",
        default=",".join(EMULATORS),
        help=f"comma-separated emulators to run, from {', '.join(EMULATORS)}",
    )
    args = parser.parse_args()
    print(f"{args.objects} objects per bucket; Lethe time includes verification")
    for name in args.emulators.split(","):
        figures = EMULATORS[name](args.objects, args.rounds)
        reference_time, lethe_time = figures["reference"], figures["lethe"]
        if "floor" not in figures:
            print(
                f"{name}: reference {reference_time:.2f} s, Lethe {lethe_time:.2f} s, "
                f"speed-up {reference_time / lethe_time:.1f}x",
                flush=True,
            )
            continue
        print(
            f"{name}, median of {args.rounds} rounds (wall s / client CPU s / "
            "emulator CPU s):",
            flush=True,
        )
        for tool in ("reference", "lethe", "floor"):
            print(
                f"  {tool:<10}{figures[tool]:>8.2f}"
                f"{figures[f'{tool}_client_cpu']:>8.2f}"
                f"{figures[f'{tool}_server_cpu']:>8.2f}"
            )
        print(
            f"  speed-up {figures['ratio']:.2f}x (rounds {figures['ratio_min']:.2f}x "
            f"to {figures['ratio_max']:.2f}x); ceiling, reference / floor: "
            f"{reference_time / figures['floor']:.2f}x\n"
            f"  Lethe requests per object: {figures['deletes_per_object']:.2f} DELETE, "
            f"{figures['batches_per_object']:.3f} batch POST; "
            f"{figures['other_requests']:.0f} other requests per purge",
            flush=True,
        )


if __name__ == "__main__":
    main()
