"""Benchmark the S3 plugin against boto3's own versioned delete, on moto's server.

Two measurements, each against a moto server that runs in a child process
and is seeded straight through its backend:

* speed: Lethe (describe, plan, purge, sweep, verify with rescan and HEAD
  sample) against ``bucket.object_versions.delete()`` from boto3's resource
  API, repeated until a listing of the bucket is empty, which is that tool's
  only way to verify. Each works on its own bucket of the same size.
* memory: peak RSS of a child process that runs the same Lethe purge over a
  small and a large bucket.

    python benchmarks/s3_purge.py --versions 10000 --rss-sizes 1000,50000

moto's ListObjectVersions copies every version in the bucket on each call,
so listing time grows with the square of the bucket size on moto (not on
S3), and both tools pay it.
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


def lethe_purge(endpoint: str, bucket: str, inspect: bool) -> dict[str, float]:
    """Run one Lethe job the way the agent does, streaming; return counts."""
    options = {"endpoint_url": endpoint, "inspect_versions": inspect}
    plugin = S3Plugin(
        Target(f"s3://{bucket}/data/", options), JobContext(dry_run=False)
    )
    counts: dict[str, float] = {"purged": 0, "verified": 0, "failed": 0}
    started = time.perf_counter()
    try:
        plugin.describe()
        counts["describe_seconds"] = round(time.perf_counter() - started, 1)
        planned = (
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        )
        for batch in chunked(planned, S3Plugin.batch_size):
            for result in plugin.purge(batch):
                counts["purged" if result.status == "purged" else "failed"] += 1
        for step in plugin.complete():
            if step.status != "purged":
                counts["failed"] += 1
        counts["plan_purge_sweep_seconds"] = round(time.perf_counter() - started, 1)
        for page in plugin._snapshot_pages():
            batch = []
            for entry in page:
                item = plugin._make_item(entry, None)
                batch.append(PlannedItem(item, plugin.plan_item(item)))
            counts["verified"] += sum(e.verified for e in plugin.verify(batch))
    finally:
        plugin.close()
    return counts


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


def measure_speed(versions: int, markers: int, inspect: bool) -> None:
    spec = f"{versions}+{markers}"
    process, ready = start_seeded_server(f"lethe-bench={spec}", f"boto-bench={spec}")
    endpoint = ready["endpoint"]
    try:
        lethe_seconds, lethe_counts = timed(
            lethe_purge, endpoint, "lethe-bench", inspect
        )
        boto_seconds, boto_counts = timed(boto3_purge, endpoint, "boto-bench")
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
                "speedup": round(boto_seconds / lethe_seconds, 2),
            }
        ),
        flush=True,
    )


def measure_rss(size: int) -> dict[str, object]:
    process, ready = start_seeded_server(f"rss-bench={size}+{size // 10}")
    endpoint = ready["endpoint"]
    try:
        started = time.perf_counter()
        child = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                endpoint,
                "rss-bench",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
    finally:
        stop_seeded_server(process)
    report = json.loads(child.stdout.strip().splitlines()[-1])
    report.update(measure="rss", versions=size, seconds=round(seconds, 1))
    print(json.dumps(report), flush=True)
    return report


def child_purge(endpoint: str, bucket: str) -> None:
    counts = lethe_purge(endpoint, bucket, inspect=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), **counts}))


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
        action="store_true",
        help="let Lethe send a HEAD per version, as with inspect_versions: true",
    )
    parser.add_argument("--child", nargs=2, metavar=("ENDPOINT", "BUCKET"))
    arguments = parser.parse_args()
    if arguments.child:
        child_purge(*arguments.child)
        return
    markers = arguments.markers if arguments.markers >= 0 else arguments.versions // 10
    if not arguments.skip_speed:
        measure_speed(arguments.versions, markers, arguments.inspect)
    if not arguments.skip_rss:
        small, large = (int(size) for size in arguments.rss_sizes.split(","))
        low, high = measure_rss(small), measure_rss(large)
        growth = high["peak_rss_mib"] - low["peak_rss_mib"]
        print(json.dumps({"measure": "rss_growth_mib", "growth": round(growth, 1)}))


if __name__ == "__main__":
    main()
