"""Benchmark the S3 plugin against boto3's own versioned delete, on moto's server.

Two measurements, each against a moto server that runs in a child process
and is seeded straight through its backend:

* speed: Lethe (describe, plan, purge, sweep, verify with rescan and HEAD
  sample) against ``bucket.object_versions.delete()`` from boto3's resource
  API, repeated until a listing of the bucket is empty, which is that tool's
  only way to verify. Each works on its own bucket of the same size. A third
  bucket of that size is only listed, page by page, with nothing else done:
  that time is the least any tool pays that lists the whole prefix before it
  deletes anything, as a plan shown before the purge requires.
* memory: peak RSS of a child process that runs the same Lethe purge over a
  small and a large bucket.

    python benchmarks/s3_purge.py --versions 10000 --rss-sizes 1000,50000

moto's ListObjectVersions copies every version in the bucket on each call,
so listing time grows with the square of the bucket size on moto (not on
S3), and both tools pay it. boto3's tool deletes each page before it lists
the next, so its later listings copy a smaller bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)

from plugins.base import JobContext, PlannedItem, Target, chunked
from plugins.s3 import S3Plugin
from tests.helpers.moto_s3 import start_seeded_server, stop_seeded_server


def lethe_purge(endpoint: str, bucket: str, inspect: object) -> dict[str, float]:
    """Run one Lethe job the way the agent does, streaming; return counts.

    describe() lists the whole prefix before anything is deleted, as the
    agent's plan does. Items are then planned and purged a batch at a time
    from that listing, so memory keeps one batch, as with the agent's journal.
    """
    options = {"endpoint_url": endpoint, "inspect_versions": inspect}
    plugin = S3Plugin(
        Target(f"s3://{bucket}/data/", options), JobContext(dry_run=False)
    )
    counts: dict[str, float] = {"purged": 0, "verified": 0, "failed": 0}
    clock = Phases(counts)
    try:
        plugin.describe()
        clock.lap("describe_seconds")
        planned = (
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        )
        for batch in chunked(planned, S3Plugin.batch_size):
            for result in plugin.purge(batch):
                counts["purged" if result.status == "purged" else "failed"] += 1
        clock.lap("plan_and_purge_seconds")
        for step in plugin.complete():
            if step.status != "purged":
                counts["failed"] += 1
        clock.lap("sweep_seconds")
        # The agent verifies in batches of batch_size, as it purges.
        entries = (e for page in plugin._snapshot_pages() for e in page)
        for chunk in chunked(entries, S3Plugin.batch_size):
            batch = []
            for entry in chunk:
                item = plugin._make_item(entry, None)
                batch.append(PlannedItem(item, plugin.plan_item(item)))
            counts["verified"] += sum(e.verified for e in plugin.verify(batch))
        clock.lap("verify_seconds")
    finally:
        plugin.close()
    return counts


class Phases:
    """Store the seconds since the previous lap under a name in ``counts``."""

    def __init__(self, counts: dict[str, float]) -> None:
        self.counts = counts
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.counts[name] = round(now - self.last, 1)
        self.last = now


def bare_listing(endpoint: str, bucket: str) -> dict[str, int]:
    """List every version and marker under the prefix and do nothing else."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    entries = pages = 0
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix="data/"):
        pages += 1
        entries += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return {"pages": pages, "entries": entries}


def boto3_purge(endpoint: str, bucket: str) -> dict[str, int]:
    """Delete with the resource API until a listing comes back empty."""
    import boto3

    resource_api = boto3.resource("s3", endpoint_url=endpoint)
    target = resource_api.Bucket(bucket)
    rounds = 0
    while True:
        target.object_versions.filter(Prefix="data/").delete()
        rounds += 1
        if not list(target.object_versions.filter(Prefix="data/").limit(1)):
            return {"rounds": rounds}


def timed(function, *arguments):
    started = time.perf_counter()
    outcome = function(*arguments)
    return time.perf_counter() - started, outcome


def measure_speed(versions: int, markers: int, inspect: object) -> None:
    spec = f"{versions}+{markers}"
    process, ready = start_seeded_server(
        f"lethe-bench={spec}", f"boto-bench={spec}", f"list-bench={spec}"
    )
    endpoint = ready["endpoint"]
    try:
        lethe_seconds, lethe_counts = timed(
            lethe_purge, endpoint, "lethe-bench", inspect
        )
        boto_seconds, boto_counts = timed(boto3_purge, endpoint, "boto-bench")
        floor_seconds, floor_counts = timed(bare_listing, endpoint, "list-bench")
    finally:
        stop_seeded_server(process)
    print(
        json.dumps(
            {
                "measure": "speed",
                "versions": versions,
                "markers": markers,
                "inspect_versions": inspect,
                "lethe_seconds": round(lethe_seconds, 1),
                "lethe": lethe_counts,
                "boto3_seconds": round(boto_seconds, 1),
                "boto3": boto_counts,
                "listing_floor_seconds": round(floor_seconds, 1),
                "listing_floor": floor_counts,
                "speedup": round(boto_seconds / lethe_seconds, 2),
                "ceiling": round(boto_seconds / floor_seconds, 2),
            }
        ),
        flush=True,
    )


def measure_one(tool: str, versions: int, markers: int, inspect: object) -> None:
    """Seed a server with one bucket and run one tool on it, for whole-process timing."""
    process, ready = start_seeded_server(f"one-bench={versions}+{markers}")
    try:
        if tool == "lethe":
            seconds, counts = timed(
                lethe_purge, ready["endpoint"], "one-bench", inspect
            )
        elif tool == "boto3":
            seconds, counts = timed(boto3_purge, ready["endpoint"], "one-bench")
        else:
            seconds, counts = timed(bare_listing, ready["endpoint"], "one-bench")
    finally:
        stop_seeded_server(process)
    report = {"measure": tool, "seconds": round(seconds, 1), **counts}
    print(json.dumps(report), flush=True)


def measure_rss(size: int, inspect: str, shallow: bool) -> dict[str, object]:
    process, ready = start_seeded_server(
        f"rss-bench={size}+{size // 10}", shallow_listing=shallow
    )
    endpoint = ready["endpoint"]
    try:
        started = time.perf_counter()
        child = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--inspect",
                inspect,
                "--child",
                endpoint,
                "rss-bench",
            ],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-4000:])
            child.check_returncode()
        seconds = time.perf_counter() - started
    finally:
        stop_seeded_server(process)
    report = json.loads(child.stdout.strip().splitlines()[-1])
    report.update(measure="rss", versions=size, seconds=round(seconds, 1))
    print(json.dumps(report), flush=True)
    return report


def child_purge(endpoint: str, bucket: str, inspect: object) -> None:
    counts = lethe_purge(endpoint, bucket, inspect)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), **counts}))


INSPECT_VALUES = {"sample": "sample", "true": True, "false": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10000)
    parser.add_argument(
        "--markers", type=int, default=-1, help="delete markers (default: a tenth)"
    )
    parser.add_argument("--rss-sizes", default="1000,50000")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--inspect",
        choices=("sample", "true", "false"),
        default="sample",
        help="Lethe's inspect_versions option (default: sample, its default)",
    )
    parser.add_argument(
        "--tool",
        choices=("lethe", "boto3", "listing"),
        help="run only this one on its own seeded server, for timing whole processes",
    )
    parser.add_argument(
        "--shallow-listing",
        action="store_true",
        help="memory runs only: serve listings from shallow copies of the "
        "versions, so a large bucket lists in minutes (the client is unchanged)",
    )
    parser.add_argument("--child", nargs=2, metavar=("ENDPOINT", "BUCKET"))
    arguments = parser.parse_args()
    inspect = INSPECT_VALUES[arguments.inspect]
    if arguments.child:
        child_purge(*arguments.child, inspect)
        return
    markers = arguments.markers if arguments.markers >= 0 else arguments.versions // 10
    if arguments.tool:
        measure_one(arguments.tool, arguments.versions, markers, inspect)
        return
    if not arguments.skip_speed:
        measure_speed(arguments.versions, markers, inspect)
    if not arguments.skip_rss:
        small, large = (int(size) for size in arguments.rss_sizes.split(","))
        shallow = arguments.shallow_listing
        low = measure_rss(small, arguments.inspect, shallow)
        high = measure_rss(large, arguments.inspect, shallow)
        growth = high["peak_rss_mib"] - low["peak_rss_mib"]
        print(json.dumps({"measure": "rss_growth_mib", "growth": round(growth, 1)}))


if __name__ == "__main__":
    main()
