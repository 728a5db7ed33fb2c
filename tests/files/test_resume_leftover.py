"""A purge interrupted between rename and unlink is finished on resume."""

from __future__ import annotations

import dataclasses
import os

from plugins.base import JobContext, PlannedItem, Target
from plugins.files import FilesPlugin, random_name


def _resumed(planned: PlannedItem) -> PlannedItem:
    params = {**planned.decision.params, "resumed": True}
    return PlannedItem(
        planned.item, dataclasses.replace(planned.decision, params=params)
    )


def _plugin(path) -> FilesPlugin:
    context = JobContext(job_id="test", dry_run=False, settings={"scan_device": False})
    return FilesPlugin(Target(str(path)), context)


def test_renamed_leftover_fails_then_finishes(tmp_path):
    target = tmp_path / "exports"
    target.mkdir()
    victim = target / "customers.csv"
    victim.write_bytes(b"Ada Lovelace,+44 7700 900123\n" * 100)
    plugin = _plugin(target)
    try:
        plugin.describe()
        planned = [
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        ]
    finally:
        plugin.close()
    file_entry = next(p for p in planned if p.item.kind == "file")
    # The state a crash leaves between the rename and the unlink.
    leftover = target / random_name(len(victim.name))
    os.rename(victim, leftover)

    plugin = _plugin(target)
    try:
        evidence = list(plugin.verify([_resumed(file_entry)]))
        checks = {check.name: check.passed for check in evidence[0].checks}
        assert checks["path-gone"] is True
        assert checks["no-leftover"] is False

        results = list(plugin.purge([_resumed(file_entry)]))
        assert [result.status for result in results] == ["purged"]
        assert not leftover.exists()
        assert os.listdir(target) == []

        evidence = list(plugin.verify([_resumed(file_entry)]))
        assert evidence[0].verified
    finally:
        plugin.close()


def test_unrelated_same_length_file_is_not_leftover(tmp_path):
    target = tmp_path / "exports"
    target.mkdir()
    victim = target / "customers.csv"
    victim.write_bytes(b"Grace Hopper,+44 7700 900456\n" * 100)
    plugin = _plugin(target)
    try:
        plugin.describe()
        planned = [
            PlannedItem(item, plugin.plan_item(item)) for item in plugin.discover()
        ]
    finally:
        plugin.close()
    file_entry = next(p for p in planned if p.item.kind == "file")
    victim.unlink()
    # Another file whose name could be random, but with another inode.
    other = target / random_name(len(victim.name))
    other.write_bytes(b"kept")

    plugin = _plugin(target)
    try:
        evidence = list(plugin.verify([_resumed(file_entry)]))
        checks = {check.name: check.passed for check in evidence[0].checks}
        assert checks["no-leftover"] is True
        results = list(plugin.purge([_resumed(file_entry)]))
        assert [result.status for result in results] == ["failed"]
        assert other.read_bytes() == b"kept"
    finally:
        plugin.close()
