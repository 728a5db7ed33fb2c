"""Memory stays flat however many versions a prefix holds.

The moto server runs in a child process here, so tracemalloc in the test
process sees only the plugin's side. The same plugin calls run over 500 and
2,000 versions (plus 10% delete markers) in pages of 250; if items were held
instead of streamed, the peak would grow with the count.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from plugins.base import JobContext, PlannedItem, Target, chunked
from plugins.s3 import S3Plugin
from tests.helpers.moto_s3 import start_seeded_server, stop_seeded_server

SMALL, LARGE = 500, 2000
PAGE_SIZE = 250
#: Items per purge call in the streaming drive below.
DRIVE_BATCH = 250
#: Allowed growth of the peak from SMALL to LARGE.
ALLOWED_GROWTH = 512 * 1024


@pytest.fixture(scope="module")
def seeded_endpoint() -> Iterator[str]:
    process, ready = start_seeded_server(
        "warm=10", f"small={SMALL}+{SMALL // 10}", f"large={LARGE}+{LARGE // 10}"
    )
    endpoint = ready["endpoint"]
    try:
        yield endpoint
    finally:
        stop_seeded_server(process)


def drive_streaming(endpoint: str, bucket: str) -> tuple[int, int]:
    """Plan, purge and verify one bucket without keeping items; return counts."""
    options = {
        "endpoint_url": endpoint,
        "inspect_versions": False,
        "page_size": PAGE_SIZE,
    }
    plugin = S3Plugin(
        Target(f"s3://{bucket}/data/", options), JobContext(dry_run=False)
    )
    purged = verified = 0
    try:
        plugin.describe()
        planned = (
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        )
        for batch in chunked(planned, DRIVE_BATCH):
            purged += sum(r.status == "purged" for r in plugin.purge(batch))
        list(plugin.complete())
        # The snapshot taken at planning time streams the items a second time.
        for page in plugin._snapshot_pages():
            batch = []
            for entry in page:
                item = plugin._make_item(entry, None)
                batch.append(PlannedItem(item, plugin.plan_item(item)))
            verified += sum(e.verified for e in plugin.verify(batch))
    finally:
        plugin.close()
    return purged, verified


def peak_of(endpoint: str, bucket: str) -> tuple[int, int, int]:
    gc.collect()
    tracemalloc.reset_peak()
    purged, verified = drive_streaming(endpoint, bucket)
    return tracemalloc.get_traced_memory()[1], purged, verified


def test_memory_flat_over_versions(seeded_endpoint):
    tracemalloc.start()
    try:
        # The first run loads botocore's service models and warms caches.
        peak_of(seeded_endpoint, "warm")
        small_peak, small_purged, small_verified = peak_of(seeded_endpoint, "small")
        large_peak, large_purged, large_verified = peak_of(seeded_endpoint, "large")
    finally:
        tracemalloc.stop()

    assert small_purged == SMALL + SMALL // 10
    assert large_purged == LARGE + LARGE // 10
    assert small_verified == SMALL + SMALL // 10
    assert large_verified == LARGE + LARGE // 10
    assert large_peak - small_peak < ALLOWED_GROWTH, (small_peak, large_peak)
