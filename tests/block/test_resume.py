"""Overwrites interrupted by a stop request or a crash, then resumed and verified."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import Config
from agent.engine import Engine
from agent.errors import EXIT_OK
from agent.progress import NullProgress
from agent.registry import Registry
from plugins._overwrite import covered_bytes
from plugins.base import JobContext, MemoryCheckpoints, PlannedItem, Target
from plugins.block import BlockPlugin
from plugins.errors import InvalidTarget
from tests.block.conftest import raw_count

REPO = Path(__file__).resolve().parents[2]
LETHE = Path(sys.executable).with_name("lethe")
MIB = 1024 * 1024
#: Size of the devices the stop tests use: 16 chunks, so that the stop
#: request lands while the I/O threads still have chunks to take.
STOP_MIB = 128


def _plugin(device: str, store: MemoryCheckpoints, **context: object) -> BlockPlugin:
    return BlockPlugin(
        Target(f"block://{device}"),
        JobContext(job_id="test", dry_run=False, checkpoints=store, **context),
    )


def _plan(plugin: BlockPlugin) -> list[PlannedItem]:
    item = next(plugin.discover())
    return [PlannedItem(item, plugin.plan_item(item))]


def _stop_after_first_chunk(device: str, store: MemoryCheckpoints) -> list[PlannedItem]:
    """Plan the device and run a purge that a stop request ends after one chunk."""
    chunks: list[int] = []
    stopping = _plugin(
        device, store, progress=chunks.append, should_stop=lambda: len(chunks) >= 1
    )
    planned = _plan(stopping)
    list(stopping.purge(planned))
    stopping.close()
    return planned


def test_stop_request_saves_checkpoint(loop_device):
    device = loop_device(STOP_MIB)
    store = MemoryCheckpoints()
    chunks: list[int] = []
    stopping = _plugin(
        device, store, progress=chunks.append, should_stop=lambda: len(chunks) >= 1
    )
    planned = _plan(stopping)

    results = list(stopping.purge(planned))
    stopping.close()

    # No result: the engine puts the device back in the queue.
    assert results == []
    saved = store.load(device)
    assert saved is not None
    assert saved["pass"] == 0
    written = covered_bytes(saved["written"])
    assert 0 < written < STOP_MIB * MIB


def test_resumed_pass_writes_only_the_rest(loop_device):
    device = loop_device(STOP_MIB)
    store = MemoryCheckpoints()
    planned = _stop_after_first_chunk(device, store)
    written = covered_bytes(store.load(device)["written"])

    resumed = _plugin(device, store)
    results = list(resumed.purge(planned))
    resumed.close()

    assert [result.status for result in results] == ["purged"]
    first_pass = results[0].facts["passes"][0]
    assert first_pass["bytes_already_written"] == written
    assert first_pass["bytes"] == STOP_MIB * MIB - written
    assert results[0].facts["resumed_at"]["pass"] == 1
    assert raw_count(device) == 0


def test_progress_counts_each_device_once(loop_device):
    device = loop_device(16)
    chunks: list[int] = []
    plugin = _plugin(
        device, MemoryCheckpoints(), progress=chunks.append, settings={"passes": 3}
    )
    results = list(plugin.purge(_plan(plugin)))
    plugin.close()

    assert [result.status for result in results] == ["purged"]
    assert len(results[0].facts["passes"]) == 3
    assert sum(chunks) == 16 * MIB


def test_resumed_progress_ends_at_device_size(loop_device):
    device = loop_device(STOP_MIB)
    store = MemoryCheckpoints()
    planned = _stop_after_first_chunk(device, store)

    resumed_chunks: list[int] = []
    resumed = _plugin(device, store, progress=resumed_chunks.append)
    results = list(resumed.purge(planned))
    resumed.close()

    assert [result.status for result in results] == ["purged"]
    assert sum(resumed_chunks) == STOP_MIB * MIB


def test_verify_from_checkpoint_alone(loop_device):
    # The plugin that verifies never ran the overwrite, as after a crash
    # between the last write and the commit of the result.
    device = loop_device(16)
    store = MemoryCheckpoints()
    writer = _plugin(device, store)
    planned = _plan(writer)
    assert [result.status for result in writer.purge(planned)] == ["purged"]
    writer.close()

    verifier = _plugin(device, store)
    evidence = list(verifier.verify(planned))
    verifier.close()

    check = evidence[0].checks[-1]
    assert evidence[0].verified
    assert "full read-back of 16777216 bytes matched" in check.detail
    assert "regenerated from the job's checkpoint" in check.detail


def test_verify_from_checkpoint_finds_mismatch(loop_device):
    device = loop_device(16)
    store = MemoryCheckpoints()
    writer = _plugin(device, store)
    planned = _plan(writer)
    list(writer.purge(planned))
    writer.close()
    with open(device, "r+b") as handle:
        handle.seek(0x20000)
        handle.write(b"left behind")
        os.fsync(handle.fileno())

    verifier = _plugin(device, store)
    evidence = list(verifier.verify(planned))
    verifier.close()

    assert not evidence[0].verified
    assert "1 mismatched" in evidence[0].checks[-1].detail
    assert "0x20000" in evidence[0].checks[-1].detail


def test_verify_reports_unfinished_pass(loop_device):
    device = loop_device(STOP_MIB)
    store = MemoryCheckpoints()
    planned = _stop_after_first_chunk(device, store)

    verifier = _plugin(device, store)
    evidence = list(verifier.verify(planned))
    verifier.close()

    assert not evidence[0].verified
    assert "stopped in pass 1 of 1" in evidence[0].checks[-1].detail


def test_finished_checkpoint_starts_new_overwrite(loop_device):
    # The engine purges an item again only when verification could not
    # confirm it, so a finished overwrite is repeated with new keys.
    device = loop_device(16)
    store = MemoryCheckpoints()
    first = _plugin(device, store)
    planned = _plan(first)
    list(first.purge(planned))
    first.close()
    old_key = store.load(device)["passes"][0]["key"]

    second = _plugin(device, store)
    results = list(second.purge(planned))
    second.close()

    assert results[0].facts["passes"][0]["bytes"] == 16 * MIB
    assert "resumed_at" not in results[0].facts
    assert store.load(device)["passes"][0]["key"] != old_key


def test_checkpoint_of_other_device_ignored(loop_device):
    device = loop_device(16)
    store = MemoryCheckpoints()
    first = _plugin(device, store)
    planned = _plan(first)
    store.save(
        device,
        {
            "version": 1,
            "identity": {"devno": "7:999", "size": 16 * MIB},
            "passes": [{"pattern": "random", "key": "00" * 16, "counter": "0" * 32}],
            "pass": 0,
            "written": [[0, 8 * MIB]],
            "reports": [],
        },
    )

    results = list(first.purge(planned))
    first.close()

    assert results[0].facts["passes"][0]["bytes"] == 16 * MIB
    assert store.load(device)["passes"][0]["key"] != "00" * 16


# Through the CLI: a real crash, the journal left behind, and the resume.


def _config(tmp_path: Path, state_dir: Path, device: str) -> Path:
    # A checkpoint after every chunk, so the crash point below decides
    # how much the journal lists, not the clock.
    path = tmp_path / "lethe.yaml"
    path.write_text(
        "operator:\n"
        "  name: Test Operator\n"
        "  organization:\n"
        "    name: Test Org\n"
        f"state_dir: {state_dir}\n"
        "targets:\n"
        f"  - url: block://{device}\n"
        "    options:\n"
        "      checkpoint_seconds: 0\n"
    )
    return path


def _lethe(
    state_dir: Path, *args: str, **environment: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LETHE), *args],
        check=False,
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            PYTHONPATH=str(REPO),
            LETHE_STATE_DIR=str(state_dir),
            **environment,
        ),
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def _journal(state_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        return db.execute(sql).fetchall()


def _events(stderr: str, name: str) -> list[dict]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                events.append(event)
    return events


def test_crash_mid_pass_then_resume(loop_device, tmp_path):
    size = 128 * MIB
    device = loop_device(size // MIB)
    assert raw_count(device) == 16  # control: the canaries are on the device
    state_dir = tmp_path / "state"
    config = _config(tmp_path, state_dir, device)

    crashed = _lethe(
        state_dir,
        "purge",
        "--yes",
        "-c",
        str(config),
        LETHE_CRASH_AFTER_BYTES=str(80 * MIB),
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    [(job_id, state)] = _journal(state_dir, "SELECT id, state FROM jobs")
    assert state == "purging"
    [(data,)] = _journal(state_dir, "SELECT data FROM checkpoints")
    saved = json.loads(data)
    written = covered_bytes(saved["written"])
    assert saved["pass"] == 0
    assert saved["written"][0][0] == 0
    assert 0 < written < size
    assert len(saved["passes"][0]["key"]) == 32

    resumed = _lethe(state_dir, "purge", "--resume", job_id, "-c", str(config))

    assert resumed.returncode == 0, resumed.stderr
    [event] = _events(resumed.stderr, "overwrite.resumed")
    assert event["bytes_already_written"] == written
    [finished] = _events(resumed.stderr, "pass.finished")
    assert finished["bytes"] == size - written
    assert _journal(state_dir, "SELECT state FROM items") == [("verified",)]
    # The finished job keeps no keystream keys.
    assert _journal(state_dir, "SELECT COUNT(*) FROM checkpoints") == [(0,)]
    assert (state_dir / "certificates" / f"{job_id}.json").exists()
    assert raw_count(device) == 0


def test_crash_before_result_commit_then_resume(loop_device, tmp_path):
    # The whole pass is written, but the process dies before the engine
    # commits the result, so the device is still "purging" in the journal.
    device = loop_device(64)
    state_dir = tmp_path / "state"
    config = _config(tmp_path, state_dir, device)

    crashed = _lethe(
        state_dir,
        "purge",
        "--yes",
        "-c",
        str(config),
        LETHE_CRASH_AFTER_ITEMS="1",
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    [(job_id,)] = _journal(state_dir, "SELECT id FROM jobs")
    assert _journal(state_dir, "SELECT state FROM items") == [("purging",)]

    resumed = _lethe(state_dir, "purge", "--resume", job_id, "-c", str(config))

    assert resumed.returncode == 0, resumed.stderr
    # Verified by the read-back against the checkpoint, not purged again.
    assert _events(resumed.stderr, "step.start") == []
    [(evidence,)] = _journal(state_dir, "SELECT evidence FROM items")
    checks = {check["name"]: check for check in json.loads(evidence)["checks"]}
    assert checks["read-back"]["passed"]
    assert "regenerated from the job's checkpoint" in checks["read-back"]["detail"]
    assert raw_count(device) == 0


def test_checkpoint_seconds_must_be_number():
    for value in ("10", -1, True):
        target = Target("block:///dev/loop0", {"checkpoint_seconds": value})
        with pytest.raises(InvalidTarget, match="checkpoint_seconds"):
            BlockPlugin(target, JobContext())


class _CountingProgress(NullProgress):
    def __init__(self) -> None:
        self.bytes_done = 0

    def advance_bytes(self, count: int) -> None:
        self.bytes_done += count


def test_engine_stop_mid_pass_then_resume(loop_device, tmp_path):
    device = loop_device(STOP_MIB)
    registry = Registry()
    registry.add(BlockPlugin)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    progress = _CountingProgress()
    engine = Engine(Config(), state_dir, registry=registry, progress=progress)
    engine.stop_condition = lambda: progress.bytes_done > 0
    target = Target(f"block://{device}", {"checkpoint_seconds": 0})
    job_id = engine.plan([target], {"passes": 1}, dry_run=False)

    stopped = engine.purge(job_id)
    [row] = engine.journal.items(job_id)
    saved = engine.checkpoints.load(job_id, 0, device)
    engine.close()

    assert stopped.state == "interrupted"
    assert row.state == "planned"
    assert "a resume purges it" in row.detail
    written = covered_bytes(saved["written"])
    assert 0 < written < STOP_MIB * MIB

    resumed_engine = Engine(Config(), state_dir, registry=registry)
    resumed = resumed_engine.resume(job_id)
    resumed_engine.close()

    assert resumed.exit_code == EXIT_OK
    assert resumed.counts == {"verified": 1}
    assert raw_count(device) == 0


class _PhaseProgress(NullProgress):
    """Bytes totals and bytes done per phase, as the engine reports them."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self._phase = ""

    def start(self, phase: str, items: int, total_bytes: int) -> None:
        self._phase = phase
        self.totals[phase] = total_bytes
        self.done.setdefault(phase, 0)

    def advance_bytes(self, count: int) -> None:
        self.done[self._phase] += count


def test_engine_progress_counts_readback(loop_device, tmp_path):
    device = loop_device(16)
    registry = Registry()
    registry.add(BlockPlugin)
    progress = _PhaseProgress()
    engine = Engine(Config(), tmp_path, registry=registry, progress=progress)
    job_id = engine.plan([Target(f"block://{device}")], {"passes": 2}, dry_run=False)

    outcome = engine.purge(job_id)
    engine.close()

    assert outcome.exit_code == EXIT_OK
    assert progress.totals["purging"] == 16 * MIB
    assert progress.done["purging"] == 16 * MIB
    assert progress.totals["verifying"] == 16 * MIB
    assert progress.done["verifying"] == 16 * MIB
