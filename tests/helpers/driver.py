"""Drive one plugin through the contract without the agent, for plugin tests.

The agent's engine adds journal, policy and certificates on top of the same
call order; plugin tests use this to check the plugin alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plugins.base import (
    CheckpointStore,
    Evidence,
    JobContext,
    MemoryCheckpoints,
    PlannedItem,
    Plugin,
    PurgeResult,
    Target,
    TargetInfo,
    plugin_batches,
)


@dataclass
class DriverRun:
    """Everything one driven job produced."""

    info: TargetInfo
    planned: list[PlannedItem] = field(default_factory=list)
    results: list[PurgeResult] = field(default_factory=list)
    completion: list[PurgeResult] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def permitted(self) -> list[PlannedItem]:
        return [entry for entry in self.planned if entry.decision.permitted]

    @property
    def refused(self) -> list[PlannedItem]:
        return [entry for entry in self.planned if not entry.decision.permitted]

    def refusal_reasons(self) -> dict[str, str]:
        """Map each refused item's key to its refusal reason code."""
        return {
            entry.item.key: entry.decision.refusal.reason
            for entry in self.refused
            if entry.decision.refusal is not None
        }

    def statuses(self) -> dict[str, str]:
        return {result.key: result.status for result in self.results}

    def unverified(self) -> list[Evidence]:
        return [evidence for evidence in self.evidence if not evidence.verified]


def run_plugin(
    plugin_class: type[Plugin],
    url: str,
    options: dict | None = None,
    settings: dict | None = None,
    purge: bool = True,
    checkpoints: CheckpointStore | None = None,
) -> DriverRun:
    """Plan a target and, when ``purge`` is true, purge and verify it.

    Pass the ``checkpoints`` of an earlier run to drive a resumed job.
    """
    context = JobContext(
        job_id="test",
        dry_run=not purge,
        settings=settings or {},
        checkpoints=checkpoints or MemoryCheckpoints(),
    )
    plugin = plugin_class(Target(url, options or {}), context)
    try:
        run = DriverRun(info=plugin.describe())
        for item in plugin.discover():
            run.planned.append(PlannedItem(item, plugin.plan_item(item)))
        if not purge:
            return run
        for batch in plugin_batches(run.permitted, plugin):
            run.results.extend(plugin.purge(batch))
        run.completion.extend(plugin.complete())
        purged = {r.key for r in run.results if r.status == "purged"}
        to_verify = [entry for entry in run.permitted if entry.item.key in purged]
        for batch in plugin_batches(to_verify, plugin):
            run.evidence.extend(plugin.verify(batch))
        return run
    finally:
        plugin.close()
