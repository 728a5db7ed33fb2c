"""Overwrite and read-back of whole loop devices."""

from __future__ import annotations

import os

from plugins.base import JobContext, Method, PlannedItem
from plugins.block import BlockPlugin
from tests.block.conftest import CANARY, raw_count
from tests.conftest import require_tool
from tests.helpers.driver import run_plugin


def test_overwrite_removes_canaries(loop_device):
    device = loop_device(16)
    assert raw_count(device) == 16  # control: the canaries are on the device

    run = run_plugin(BlockPlugin, f"block://{device}")

    assert run.statuses() == {device: "purged"}
    assert run.results[0].method is Method.CLEAR_OVERWRITE
    assert run.results[0].facts["method_used"] == "overwrite"
    assert run.unverified() == []
    assert raw_count(device) == 0


def test_plan_records_chain_and_hidden_areas(loop_device):
    device = loop_device(8)

    run = run_plugin(BlockPlugin, f"block://{device}", purge=False)

    decision = run.planned[0].decision
    assert decision.method is Method.CLEAR_OVERWRITE
    assert decision.params["chain"] == ["overwrite"]
    assert decision.params["hidden_areas"]["hpa"] == "undetermined"
    assert "not applicable to loop devices" in decision.params["hidden_areas"]["detail"]
    assert raw_count(device) == 16  # planning wrote nothing


def test_dry_run_context_writes_nothing(loop_device):
    device = loop_device(8)
    plugin = BlockPlugin(
        context_run_target(device), JobContext(job_id="test", dry_run=True)
    )
    item = next(plugin.discover())
    planned = [PlannedItem(item, plugin.plan_item(item))]

    results = list(plugin.purge(planned))

    assert results[0].status == "blocked"
    assert raw_count(device) == 16


def test_final_zero_pass_leaves_zeros(loop_device):
    device = loop_device(8)

    run = run_plugin(
        BlockPlugin, f"block://{device}", settings={"passes": 2, "final_zero": True}
    )

    passes = run.results[0].facts["passes"]
    assert [entry["pattern"] for entry in passes] == ["random", "random", "zero"]
    assert run.unverified() == []
    with open(device, "rb") as handle:
        assert handle.read() == bytes(8 * 1024 * 1024)


def test_sampled_readback_states_fraction(loop_device):
    device = loop_device(16)

    run = run_plugin(BlockPlugin, f"block://{device}", settings={"readback": 0.25})

    detail = run.evidence[0].checks[-1].detail
    assert run.unverified() == []
    assert "sampled read-back of 25.00% of the device" in detail
    assert "seed" in detail


def test_readback_counts_mismatched_sectors(loop_device):
    device = loop_device(8)
    context_run = run_plugin(BlockPlugin, f"block://{device}", purge=False)
    plugin = BlockPlugin(context_run_target(device), _context())
    planned = context_run.planned
    results = list(plugin.purge(planned))
    assert results[0].status == "purged"
    # A leftover copy appears after the pass: two sectors that no longer
    # hold the pattern.
    with open(device, "r+b") as handle:
        for offset in (0x10000, 0x300000):
            handle.seek(offset)
            handle.write(CANARY)
        handle.flush()
        os.fsync(handle.fileno())

    evidence = list(plugin.verify(planned))

    check = evidence[0].checks[-1]
    assert not evidence[0].verified
    assert "2 mismatched" in check.detail
    assert "0x10000" in check.detail
    assert "0x300000" in check.detail
    plugin.close()


def test_readback_fail_fast_stops_at_first_mismatch(loop_device):
    # The I/O threads take chunks in device order, so the second mismatch
    # sits in the last chunk, well past the chunks in flight at the first.
    device = loop_device(128)
    context_run = run_plugin(BlockPlugin, f"block://{device}", purge=False)
    plugin = BlockPlugin(context_run_target(device, fail_fast=True), _context())
    list(plugin.purge(context_run.planned))
    with open(device, "r+b") as handle:
        for offset in (0x1000, 0x7F00000):
            handle.seek(offset)
            handle.write(CANARY)
        os.fsync(handle.fileno())

    evidence = list(plugin.verify(context_run.planned))

    check = evidence[0].checks[-1]
    assert not evidence[0].verified
    assert "1 mismatched" in check.detail
    assert "stopped at the first mismatch" in check.detail
    plugin.close()


def test_devices_run_in_parallel(loop_device):
    first = loop_device(16, name="first")
    second = loop_device(16, name="second")

    run = run_plugin(BlockPlugin, f"block://{first}", options={"devices": [second]})

    assert run.statuses() == {first: "purged", second: "purged"}
    workers = {result.facts["worker"] for result in run.results}
    assert len(workers) == 2
    spans = sorted((r.facts["started"], r.facts["finished"]) for r in run.results)
    assert spans[1][0] < spans[0][1]  # the second started before the first finished
    assert run.unverified() == []
    assert raw_count(first) == 0
    assert raw_count(second) == 0


def context_run_target(device: str, **options):
    from plugins.base import Target

    return Target(f"block://{device}", options)


def _context():
    from plugins.base import JobContext

    return JobContext(job_id="test", dry_run=False)


def test_discard_verified_by_raw_scan(loop_device):
    # Loop devices implement discard by punching holes in the image, so the
    # discarded range reads back as zeros and the fingerprint scan passes.
    require_tool("blkdiscard")
    device = loop_device(16)

    run = run_plugin(BlockPlugin, f"block://{device}", options={"method": "discard"})

    decision = run.planned[0].decision
    checks = {check.name: check for check in run.evidence[0].checks}
    assert decision.params["chain"] == ["blkdiscard"]
    assert len(decision.fingerprints) > 0
    assert run.results[0].facts["method_used"] == "blkdiscard"
    assert checks["raw-scan"].passed
    assert raw_count(device) == 0
