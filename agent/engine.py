"""The engine: runs one job through discover, plan, purge, verify and certify.

Every item state change is committed to the journal before the engine takes
the next step, in this order per item: ``planned`` -> ``purging`` (before the
plugin is called) -> ``purged``, ``blocked`` or ``failed`` (after it returns)
-> ``verified`` or ``failed`` (after the independent rescan). Only
``verified`` items count as destroyed. After :meth:`Engine.request_stop`
(SIGTERM), the plugin finishes the item in flight and the engine stops
between batches, marking the job ``interrupted``. ``purge --resume`` then
rescans the items left ``purging`` before it purges anything again.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import certificate, hooks, keys
from agent import plan as plan_module
from agent.audit import AuditLog
from agent.config import Config
from agent.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, JobStopped, UsageError
from agent.joblock import JobLock, TargetLock
from agent.journal import (
    Checkpoints,
    ItemRow,
    Journal,
    StateChange,
    TargetRow,
    display_text,
    encode_digests,
    refusal_to_json,
)
from agent.render import plural, printable
from agent.log import get_logger
from agent.policy import Policy
from agent.progress import NullProgress, Progress
from agent.registry import Registry
from plugins.base import (
    Decision,
    Evidence,
    Item,
    JobContext,
    Plugin,
    PurgeResult,
    Refusal,
    Target,
    plugin_batches,
    start_side_thread,
)
from plugins.errors import ItemChanged, PluginError, TargetNotFound
from plugins.scan import fingerprint_digests

#: Item states that still owe work; a job with any of them is not finished.
UNFINISHED = ("planned", "purging", "purged")


@dataclass
class JobOutcome:
    """The result of a finished or stopped job, for the CLI and the hooks."""

    job_id: str
    state: str
    exit_code: int
    counts: Mapping[str, int]
    plan_hash: str | None
    certificate: Path | None = None
    messages: list[str] = field(default_factory=list)
    #: Items a repeated rescan (``lethe verify``) checked and found back.
    rescan: Mapping[str, int] | None = None

    def summary(self) -> dict[str, Any]:
        summary = {
            "job_id": self.job_id,
            "state": self.state,
            "exit_code": self.exit_code,
            "plan_hash": self.plan_hash,
            "counts": dict(self.counts),
            "certificate": str(self.certificate) if self.certificate else None,
            "messages": list(self.messages),
        }
        if self.rescan is not None:
            summary["rescan"] = dict(self.rescan)
        return summary


#: The job the engine last planned or ran in this process, which an error
#: message can name when the command fails before it reports the job.
last_job_id: str | None = None


def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


class Engine:
    """A job runner bound to one state directory (journal, audit log, signing key)."""

    def __init__(
        self,
        config: Config,
        state_dir: Path,
        registry: Registry | None = None,
        policy: Policy | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.registry = registry or Registry.from_entry_points()
        self.policy = policy or Policy.from_config(config.sections.get("policy"))
        self.progress = progress or NullProgress()
        self.journal = Journal.open(state_dir)
        self.checkpoints = Checkpoints(self.journal.path)
        self.audit = AuditLog.open(state_dir)
        self._stop_requested = False
        #: Extra stop condition polled with the SIGTERM flag (set by daemons).
        self.stop_condition: Callable[[], bool] = lambda: False
        self._plugins: dict[int, Plugin] = {}
        #: Fingerprints by (target position, item key), in memory for this job only.
        self._fingerprints: dict[tuple[int, str], Sequence[bytes]] = {}
        #: Their digests, computed in a thread while the plugins compact.
        self._digests: concurrent.futures.Future[_Digests] | None = None
        #: Messages of target-wide steps that failed in this run.
        self._failed_steps: list[str] = []
        #: Items whose destroy step ran in this process, by (target position, key).
        self._purged_here: set[tuple[int, str]] = set()
        #: Set by :meth:`resume`: the planning process and its fingerprints are gone.
        self._resuming = False
        self._lock: JobLock | None = None
        self._target_lock: TargetLock | None = None
        self._log = get_logger(__name__)

    def request_stop(self) -> None:
        """Ask the job to stop after the item in flight (SIGTERM handler)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested or self.stop_condition()

    def close(self) -> None:
        for plugin in self._plugins.values():
            try:
                plugin.close()
            except PluginError as error:
                self._log.warning(
                    "plugin close failed", plugin=plugin.name, error=str(error)
                )
        self._plugins.clear()
        self.checkpoints.close()
        self.journal.close()
        if self._target_lock is not None:
            self._target_lock.release()
            self._target_lock = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # Planning

    def plan(
        self,
        targets: Sequence[Target],
        settings: Mapping[str, Any],
        dry_run: bool,
        source_plan: str | None = None,
    ) -> str:
        """Discover and plan every target into a new journaled job; return its id."""
        if not targets:
            raise UsageError(
                "no targets given; name a target on the command line or under targets: in the config"
            )
        job_id = new_job_id()
        _note_job(job_id)
        self._log = get_logger(__name__, job=job_id)
        merged = self._merge_targets(targets)
        self._take_lock(job_id)
        if not dry_run:
            self._take_target_locks(job_id, [target for target, _ in merged])
        self.journal.create_job(
            job_id, dry_run, settings, self.config.digest, source_plan
        )
        try:
            for position, (target, overlaps) in enumerate(merged):
                plugin = self._open_plugin(job_id, position, target, settings, dry_run)
                info = plugin.describe()
                if overlaps:
                    info = replace(info, notes=(*info.notes, *overlaps))
                self.journal.add_target(job_id, position, target, plugin.name, info)
                self.journal.add_items(
                    job_id, self._plan_target(job_id, position, target, plugin)
                )
                self._check_stop(job_id)
        except (JobStopped, KeyboardInterrupt):
            self.journal.update_job(job_id, state="cancelled")
            raise
        except BaseException as error:
            # The summary of a failed plan stores the reason, for lethe status.
            reason = str(error) or type(error).__name__
            self.journal.update_job(
                job_id, state="plan-failed", summary={"error": reason}
            )
            raise
        plan_hash = plan_module.plan_hash(self.journal, job_id)
        self.journal.set_plan_hash(job_id, plan_hash)
        self.journal.update_job(
            job_id, state="planned", summary=plan_module.summarize(self.journal, job_id)
        )
        self._log.info("plan ready", plan_hash=plan_hash)
        return job_id

    def _merge_targets(
        self, targets: Sequence[Target]
    ) -> list[tuple[Target, list[str]]]:
        """Canonicalise the targets and plan each selection only once.

        A target that another target covers (the same path twice, a
        directory below another, a file in a directory given too) is dropped,
        and a note of the covering target names it. Targets that overlap with
        different options are rejected, because one set of options would
        silently win. Returns each kept target with its notes.
        """
        canonical = []
        for requested in targets:
            plugin_class = self.registry.plugin_for(requested)
            canonical.append((plugin_class, plugin_class.canonical_target(requested)))

        def covered_by(inner: int, outer: int, options: bool = True) -> bool:
            plugin_class, inner_target = canonical[inner]
            outer_target = canonical[outer][1]
            if outer_target.scheme != inner_target.scheme:
                return False
            if not options:
                inner_target = Target(inner_target.url, outer_target.options)
            return plugin_class.covers(outer_target, inner_target)

        indexes = range(len(canonical))
        for first in indexes:
            for second in indexes[first + 1 :]:
                if covered_by(first, second) or covered_by(second, first):
                    continue
                if covered_by(first, second, False) or covered_by(second, first, False):
                    raise UsageError(
                        f"targets {canonical[first][1].url} and {canonical[second][1].url} "
                        "overlap but have different options; give one of them, or "
                        "the same options to both"
                    )
        # Of targets that cover each other (the same target twice), the
        # first one given is kept.
        dropped = {
            inner
            for inner in indexes
            for outer in indexes
            if outer != inner
            and covered_by(inner, outer)
            and not (outer > inner and covered_by(outer, inner))
        }
        notes: dict[int, list[str]] = {index: [] for index in indexes}
        for inner in sorted(dropped):
            outer = next(
                index
                for index in indexes
                if index not in dropped and covered_by(inner, index)
            )
            url = canonical[inner][1].url
            if url == canonical[outer][1].url:
                note = f"{url} was given more than once; it is planned once"
            else:
                note = (
                    f"{url} was also given as a target; it lies within this "
                    "target, so its items are planned once, here"
                )
            if note not in notes[outer]:
                notes[outer].append(note)
        return [
            (canonical[index][1], notes[index])
            for index in indexes
            if index not in dropped
        ]

    def _check_stop(self, job_id: str) -> None:
        """Raise JobStopped when SIGTERM or Ctrl-C arrived while the job was planned.

        Only :meth:`request_stop` counts here. A daemon's ``stop_condition``
        lets planning finish, and the daemon then cancels the job itself or
        leaves it for its next start.
        """
        if self._stop_requested:
            raise JobStopped(
                f"stopped while planning job {job_id}; nothing was destroyed, "
                "and the job is marked cancelled"
            )

    def _take_target_locks(self, job_id: str, targets: Sequence[Target]) -> None:
        """Lock the job's targets against other jobs until :meth:`close`."""
        if self._target_lock is not None:
            self._target_lock.release()
        self._target_lock = TargetLock.acquire(
            self.state_dir, job_id, [target.url for target in targets]
        )

    def _take_lock(self, job_id: str) -> None:
        """Take the job's lock and keep it until :meth:`close`, so a dead owner shows."""
        if self._lock is not None:
            self._lock.release()
        self._lock = JobLock.acquire(self.state_dir, job_id)

    def _open_plugin(
        self,
        job_id: str,
        position: int,
        target: Target,
        settings: Mapping[str, Any],
        dry_run: bool,
    ) -> Plugin:
        plugin_class = self.registry.plugin_for(target)
        if target.scheme == "key":
            from agent import keystore

            target = keystore.with_store_options(target, self.config, self.state_dir)
        context = JobContext(
            job_id=job_id,
            dry_run=dry_run,
            settings=dict(settings),
            progress=self.progress.advance_bytes,
            should_stop=lambda: self.stop_requested,
            checkpoints=self.checkpoints.for_target(job_id, position),
            protected=(os.path.realpath(self.state_dir),),
        )
        plugin = plugin_class(target, context)
        self._plugins[position] = plugin
        return plugin

    def _plan_target(
        self, job_id: str, position: int, target: Target, plugin: Plugin
    ) -> Iterator[ItemRow]:
        log = self._log.bind(plugin=plugin.name, target=target.url)
        self.policy.check_target_columns(plugin)
        for item in plugin.discover():
            self._check_stop(job_id)
            assessment = self.policy.assess(target, item)
            try:
                decision = self._decide(
                    plugin, item, assessment.refusal, assessment.mask
                )
            except ItemChanged as error:
                log.info(
                    "item vanished before planning", key=item.key, error=str(error)
                )
                continue
            if decision.refusal is not None:
                log.warning(
                    "item refused",
                    key=item.key,
                    reason=decision.refusal.reason,
                    detail=decision.refusal.detail,
                )
            else:
                self._fingerprints[(position, item.key)] = decision.fingerprints
            yield _row(position, item, decision, assessment.classification)

    @staticmethod
    def _decide(
        plugin: Plugin, item: Item, hold: Refusal | None, mask: Mapping[str, Any] | None
    ) -> Decision:
        if hold is not None:
            return Decision(refusal=hold)
        if mask is None:
            return plugin.plan_item(item)
        return plugin.plan_mask(item, dict(mask))

    # Purging

    def purge(self, job_id: str) -> JobOutcome:
        """Purge, complete, verify and certify a planned job."""
        _note_job(job_id)
        job = self.journal.job(job_id)
        self._log = get_logger(__name__, job=job_id)
        # A signing key that cannot be read must stop the job before anything
        # is destroyed, not leave destroyed data without a certificate.
        keys.load_or_create(self.state_dir)
        self._record_config_change()
        self.audit.append(
            "job-started",
            job_id=job_id,
            targets=[row.target.url for row in self.journal.targets(job_id)],
        )
        self.audit.append(
            "plan", job_id=job_id, plan_hash=job.plan_hash, source_plan=job.source_plan
        )
        self.journal.update_job(job_id, state="purging", dry_run=0)
        for plugin in self._plugins.values():
            plugin.context.dry_run = False
        return self._run(job_id)

    def resume(self, job_id: str) -> JobOutcome:
        """Continue an interrupted job, rescanning the items left in flight first."""
        _note_job(job_id)
        job = self.journal.job(job_id)
        self._log = get_logger(__name__, job=job_id)
        if job.state in ("done", "failed") and not self._count(job_id, UNFINISHED):
            raise UsageError(
                f"job {job_id} is already finished ({job.state}); nothing to resume"
            )
        # A job still "planned" was never confirmed: purge() marks a job
        # "purging" before it destroys anything.
        if job.dry_run or job.state in (
            "planning",
            "plan-failed",
            "planned",
            "mismatch",
            "cancelled",
        ):
            raise UsageError(
                f"job {job_id} was never started ({job.state}); run lethe purge again"
            )
        self._take_lock(job_id)
        self._resuming = True
        rows = self.journal.targets(job_id)
        self._take_target_locks(job_id, [row.target for row in rows])
        for row in rows:
            plugin = self._open_plugin(
                job_id, row.position, row.target, job.settings, dry_run=False
            )
            plugin.describe()
        self.audit.append("job-resumed", job_id=job_id, plan_hash=job.plan_hash)
        self.journal.update_job(job_id, state="purging")
        return self._run(job_id)

    def _run(self, job_id: str) -> JobOutcome:
        try:
            return self._run_steps(job_id)
        except BaseException:
            # Item states are already journaled; the job can be resumed.
            self.progress.finish()
            self.journal.update_job(job_id, state="interrupted")
            self._store_digests_after_error(job_id)
            raise

    def _run_steps(self, job_id: str) -> JobOutcome:
        targets = self.journal.targets(job_id)
        self._start_progress(job_id)
        for row in targets:
            self._rescan_in_flight(job_id, row)
        for row in targets:
            if self.stop_requested:
                break
            self._purge_target(job_id, row)
        if self.stop_requested:
            return self._interrupted(job_id)
        self._start_digests()
        for row in targets:
            self._complete_target(job_id, row)
        for row in targets:
            self._verify_target(job_id, row)
        self._store_digests(job_id)
        self.progress.finish()
        return self._finish(job_id)

    def _start_digests(self) -> None:
        """Start computing the digests of the planned fingerprints in a thread.

        The digests go to the journal and the certificate's count only, so
        planning does not wait for them. The thread runs while the plugins
        compact, when the database engine does the work and the GIL is free.
        """
        if self._digests is not None or not self._fingerprints:
            return
        planned = list(self._fingerprints.items())

        def compute() -> _Digests:
            encoded = []
            for (target, key), fingerprints in planned:
                digests = fingerprint_digests(fingerprints)
                if digests:
                    encoded.append((target, key, encode_digests(digests)))
            return encoded

        self._digests = start_side_thread(compute, "lethe-digests", yield_cpu=True)

    def _store_digests(self, job_id: str) -> None:
        """Record the digests taken by :meth:`_start_digests` in the journal.

        Starts computing them first if no thread has, because a stopped or
        failed job is resumed by a process that has no fingerprints.
        """
        # NOTE: a process killed by SIGKILL or a power loss records none, so
        # the certificate of its resumed job counts no fingerprint digests.
        self._start_digests()
        future, self._digests = self._digests, None
        if future is not None:
            self.journal.add_fingerprint_digests(job_id, future.result())

    def _store_digests_after_error(self, job_id: str) -> None:
        """Record the digests of a job that an exception ends, logging a failure."""
        try:
            self._store_digests(job_id)
        except Exception as error:  # noqa: BLE001 - the job's own error is raised
            self._log.error("fingerprint digests not recorded", error=str(error))

    def _start_progress(self, job_id: str) -> None:
        rows = self.journal.query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS total FROM items WHERE job_id = ? AND state IN ('planned', 'purging')",
            (job_id,),
        )
        self.progress.start("purging", rows[0]["n"], rows[0]["total"])

    def _rescan_in_flight(self, job_id: str, row: TargetRow) -> None:
        """Verify items left ``purging`` by a crash; requeue the ones still present.

        Fingerprints were lost with the crashed process, so the raw scan does
        not run for these items, and their evidence records that.
        """
        plugin = self._plugins[row.position]
        log = self._log.bind(plugin=plugin.name, target=row.target.url)
        in_flight = self.journal.items(job_id, target=row.position, states=("purging",))
        for batch in plugin_batches(in_flight, plugin):
            evidence = self._collect_evidence(job_id, plugin, batch, row)
            verified = [
                _evidence_change(item, evidence[item.key], resumed=True)
                for item in batch
                if item.key in evidence and evidence[item.key].verified
            ]
            self._commit(job_id, verified, log)
            done = {change.key for change in verified}
            for item in batch:
                if item.key not in done:
                    detail = "in flight at interruption; purged again"
                    self.journal.requeue(job_id, item.target, item.key, detail)
                    log.info("item state", key=item.key, state="planned", resumed=True)

    def _purge_target(self, job_id: str, row: TargetRow) -> None:
        plugin = self._plugins[row.position]
        log = self._log.bind(plugin=plugin.name, target=row.target.url)
        for batch in plugin_batches(
            self.journal.items(
                job_id, target=row.position, states=("planned",), fingerprints=False
            ),
            plugin,
        ):
            if self.stop_requested:
                return
            keys_ = [item.key for item in batch]
            self.journal.set_states(job_id, row.position, keys_, "purging")
            for item in batch:
                log.info("item state", key=item.key, state="purging")
            try:
                self._purge_batch(job_id, plugin, batch, log)
            except PluginError as error:
                log.error("target failed during purge", error=str(error))
                self._add_step(job_id, row.position, "purge", "failed", str(error))
                return
            _pause_point(len(batch), lambda: self.stop_requested)

    def _purge_batch(
        self, job_id: str, plugin: Plugin, batch: list[ItemRow], log: Any
    ) -> None:
        """Purge one batch and record its outcomes in one transaction.

        Items whose destroy step finished but whose outcome is not committed
        yet stay ``purging``, which a resume rescans before anything else.
        """
        by_key = {item.key: item for item in batch}
        planned = [item.planned_item(self._fingerprints_for(item)) for item in batch]
        changes: list[StateChange] = []
        try:
            for result in plugin.purge(planned):
                _crash_point()
                item = by_key.pop(result.key, None)
                if item is None:
                    log.error(
                        "plugin returned a result for an item not in the batch",
                        key=result.key,
                    )
                    continue
                changes.append(_result_change(item, result))
                self._purged_here.add((item.target, item.key))
                self.progress.advance_items(1)
        finally:
            self._commit(job_id, changes, log)
        if by_key and self.stop_requested:
            # The contract has the plugin finish or roll back the item in
            # flight, or save a checkpoint that the next purge continues from,
            # so an item without a result can be purged again.
            untouched = [
                StateChange(
                    item.target,
                    item.key,
                    "planned",
                    "not finished before the stop; a resume purges it",
                )
                for item in by_key.values()
            ]
            self._commit(job_id, untouched, log)
        elif by_key:
            for item in by_key.values():
                log.error("plugin returned no result for item", key=item.key)

    def _fingerprints_for(self, item: ItemRow) -> Sequence[bytes]:
        return self._fingerprints.get((item.target, item.key), ())

    def _complete_target(self, job_id: str, row: TargetRow) -> None:
        plugin = self._plugins[row.position]
        log = self._log.bind(plugin=plugin.name, target=row.target.url)
        try:
            for result in plugin.complete():
                self._add_step(
                    job_id, row.position, result.key, result.status, result.detail
                )
                level = log.info if result.status == "purged" else log.error
                level(
                    "target step",
                    step=result.key,
                    status=result.status,
                    detail=result.detail,
                )
        except PluginError as error:
            log.error("target step failed", error=str(error))
            self._add_step(job_id, row.position, "complete", "failed", str(error))

    def _verify_target(self, job_id: str, row: TargetRow) -> None:
        plugin = self._plugins[row.position]
        log = self._log.bind(plugin=plugin.name, target=row.target.url)
        purged = self._count(job_id, ("purged",), row.position)
        size = self.journal.query(
            "SELECT COALESCE(SUM(size), 0) AS total FROM items WHERE job_id = ? AND target = ? AND state = 'purged'",
            (job_id, row.position),
        )[0]["total"]
        self.progress.start("verifying", purged, plugin.verify_read_bytes(size))
        rows = self.journal.items(
            job_id, target=row.position, states=("purged",), fingerprints=False
        )
        for batch in plugin_batches(rows, plugin):
            evidence = self._collect_evidence(job_id, plugin, batch, row)
            changes = []
            for item in batch:
                found = evidence.get(item.key)
                if found is None:
                    # Stays ``purged``: not destroyed until a rescan agrees.
                    log.error("no verification evidence for item", key=item.key)
                    continue
                resumed = (
                    self._resuming or (item.target, item.key) not in self._purged_here
                )
                changes.append(_evidence_change(item, found, resumed))
            self._commit(job_id, changes, log)
            self.progress.advance_items(len(changes))

    def _collect_evidence(
        self,
        job_id: str,
        plugin: Plugin,
        batch: list[ItemRow],
        row: TargetRow,
        recheck: bool = False,
    ) -> dict[str, Evidence]:
        """Run the plugin's verification of one batch, keyed by item key.

        Items this process did not purge carry ``params["resumed"]`` (after a
        restart) or ``params["recheck"]`` (``lethe verify``), so the plugin
        reports checks it cannot repeat, such as a read-back, as not run.
        """
        planned = []
        for item in batch:
            flags = {}
            if recheck:
                flags["recheck"] = True
            elif (item.target, item.key) not in self._purged_here:
                flags["resumed"] = True
            planned.append(item.planned_item(self._fingerprints_for(item), flags))
        try:
            return {evidence.key: evidence for evidence in plugin.verify(planned)}
        except PluginError as error:
            self._log.error(
                "verification could not run",
                plugin=plugin.name,
                target=row.target.url,
                error=str(error),
            )
            self._add_step(job_id, row.position, "verify", "failed", str(error))
            return {}

    def _commit(self, job_id: str, changes: list[StateChange], log: Any) -> None:
        """Write state changes in one transaction, then log each of them."""
        if not changes:
            return
        self.journal.apply(job_id, changes)
        for change in changes:
            if change.state == "failed":
                log.error(
                    "item failed",
                    key=change.key,
                    state=change.state,
                    detail=change.detail,
                )
            elif change.state == "blocked":
                log.warning(
                    "item blocked",
                    key=change.key,
                    state=change.state,
                    detail=change.detail,
                )
            else:
                log.info("item state", key=change.key, state=change.state)

    def _count(
        self, job_id: str, states: Sequence[str], target: int | None = None
    ) -> int:
        sql = f"SELECT COUNT(*) AS n FROM items WHERE job_id = ? AND state IN ({', '.join('?' for _ in states)})"
        parameters: list[Any] = [job_id, *states]
        if target is not None:
            sql += " AND target = ?"
            parameters.append(target)
        return self.journal.query(sql, parameters)[0]["n"]

    # Finishing

    def _interrupted(self, job_id: str) -> JobOutcome:
        self.progress.finish()
        self._store_digests(job_id)
        counts = self.journal.count_states(job_id)
        self.journal.update_job(job_id, state="interrupted")
        self.audit.append("job-interrupted", job_id=job_id, counts=counts)
        self._log.warning("job interrupted", counts=counts)
        outcome = JobOutcome(
            job_id,
            "interrupted",
            EXIT_FAILED,
            counts,
            self.journal.job(job_id).plan_hash,
            messages=[
                f"job stopped before the end; continue it with: lethe purge --resume {job_id}"
            ],
        )
        hooks.after_job({**outcome.summary(), "state_dir": str(self.state_dir)})
        return outcome

    def _add_step(
        self, job_id: str, position: int, name: str, status: str, detail: str
    ) -> None:
        """Journal a target-wide step; a failed one fails this run of the job."""
        self.journal.add_step(job_id, position, name, status, detail)
        if status == "failed":
            self._failed_steps.append(f"target step {name} failed: {detail}")

    def _finish(self, job_id: str) -> JobOutcome:
        job = self.journal.job(job_id)
        counts = self.journal.count_states(job_id)
        messages = list(self._failed_steps)
        unchecked = self._unchecked_after_resume(job_id)
        state, exit_code = _final_state(
            counts, bool(self._failed_steps), bool(unchecked)
        )
        if state == "failed":
            messages.extend(self._failed_item_messages(job_id, counts.get("failed", 0)))
            messages.append(
                "no certificate was issued because not every item was destroyed and verified"
            )
        elif unchecked:
            messages.append(
                f"{plural(unchecked['items'], 'item')} passed verification after a "
                f"resume without these checks: {', '.join(unchecked['checks'])}. "
                "What they need (fingerprints, read-back results) ended with the "
                "interrupted process; the certificate lists them as not run"
            )

        self.audit.append(
            "job-finished",
            job_id=job_id,
            state=state,
            plan_hash=job.plan_hash,
            counts=counts,
        )
        path = self._certify(job_id) if state == "done" else None
        self.journal.update_job(
            job_id, state=state, certificate=str(path) if path else None
        )
        # Checkpoints only serve a resume, and a finished job has none.
        self.checkpoints.clear(job_id)

        outcome = JobOutcome(
            job_id, state, exit_code, counts, job.plan_hash, path, messages
        )
        self._log.info("job finished", state=state, counts=counts)
        hooks.after_job({**outcome.summary(), "state_dir": str(self.state_dir)})
        return outcome

    def _unchecked_after_resume(self, job_id: str) -> dict[str, Any] | None:
        """Count verified items whose evidence, taken after a resume, has checks not run.

        Plugins word a check that could not run as a passed check whose
        detail starts with "not run" (a check a setting turned off starts
        with "off:" and is not counted). The item's evidence carries
        ``resumed`` when it was taken in a resumed run or by another process
        than the one that destroyed the item.
        """
        not_run = (
            " FROM items, json_each(items.evidence, '$.checks') AS checks"
            " WHERE items.job_id = ? AND items.state = 'verified'"
            " AND json_extract(items.evidence, '$.resumed')"
            " AND json_extract(checks.value, '$.detail') LIKE 'not run%'"
        )
        counted = self.journal.query(
            f"SELECT COUNT(DISTINCT items.rowid) AS n{not_run}", (job_id,)
        )[0]["n"]
        if not counted:
            return None
        names = self.journal.query(
            "SELECT DISTINCT json_extract(checks.value, '$.name') AS name"
            f"{not_run} ORDER BY name",
            (job_id,),
        )
        return {"items": counted, "checks": [row["name"] for row in names]}

    def _failed_item_messages(self, job_id: str, total: int) -> list[str]:
        """Name the first failed items and why, so the summary shows what to fix."""
        shown: list[str] = []
        for row in self.journal.items(job_id, states=("failed",)):
            if len(shown) == FAILED_ITEMS_SHOWN:
                break
            label = printable(display_text(row.label or row.key))
            shown.append(f"failed: {label}: {row.detail}")
        if total > len(shown):
            shown.append(f"... and {plural(total - len(shown), 'more failed item')}")
        return shown

    def _certify(self, job_id: str) -> Path:
        key = keys.load_or_create(self.state_dir)
        with self.audit.writer() as writer:
            document = certificate.build(
                self.journal, job_id, self.config.operator, writer.next_seq
            )
            # The entry records the content, and the signed certificate then
            # records the entry's hash, so each names the other.
            position = writer.append(
                "certificate",
                job_id=job_id,
                certificate_id=document["certificate_id"],
                content_digest=certificate.content_digest(document),
                signing_key=keys.fingerprint(key.public_key()),
            )
            document["audit"]["hash"] = position.hash
            signed = certificate.sign(document, key)
        path = certificate.write(signed, self.state_dir)
        self._log.info("certificate issued", path=str(path))
        return path

    def _record_config_change(self) -> None:
        if self.config.digest is None:
            return
        last = self.audit.last_of_kind("config")
        if last is None or last.get("digest") != self.config.digest:
            self.audit.append(
                "config", path=self.config.path, digest=self.config.digest
            )

    # Re-verification

    def reverify(self, job_id: str) -> JobOutcome:
        """Repeat the rescan of a job's destroyed items without fingerprints."""
        job = self.journal.job(job_id)
        self._log = get_logger(__name__, job=job_id)
        if job.dry_run or job.state in (
            "planning",
            "plan-failed",
            "planned",
            "mismatch",
            "cancelled",
        ):
            raise UsageError(
                f"job {job_id} destroyed nothing ({job.state}), so there is nothing to verify"
            )
        checked = disagreements = 0
        for row in self.journal.targets(job_id):
            plugin = self._open_plugin(
                job_id, row.position, row.target, job.settings, dry_run=True
            )
            try:
                plugin.describe()
            except TargetNotFound as error:
                # The job may have removed the target itself (a bucket it
                # deleted). The plugin's verification decides whether its
                # items count as gone, and fails them when it cannot tell.
                self._log.warning(
                    "target not found; rechecking its items without it",
                    target=row.target.url,
                    error=str(error),
                )
            target_checked, target_disagreements = self._recheck_target(
                job_id, row, plugin
            )
            checked += target_checked
            disagreements += target_disagreements
        counts = self.journal.count_states(job_id)
        exit_code = EXIT_FAILED if disagreements or counts.get("failed") else EXIT_OK
        self.audit.append(
            "job-reverified", job_id=job_id, disagreements=disagreements, counts=counts
        )
        messages = (
            [f"{plural(disagreements, 'item')} failed the repeated rescan"]
            if disagreements
            else []
        )
        if counts.get("failed"):
            messages.append(
                f"{plural(counts['failed'], 'item')} failed during the purge and "
                "cannot be rechecked, so the job stays failed; run the purge again "
                "to destroy what they left"
            )
        issued = Path(job.certificate) if job.certificate else None
        return JobOutcome(
            job_id,
            job.state,
            exit_code,
            counts,
            job.plan_hash,
            issued,
            messages,
            rescan={"checked": checked, "came_back": disagreements},
        )

    def _recheck_target(
        self, job_id: str, row: TargetRow, plugin: Plugin
    ) -> tuple[int, int]:
        """Rescan one target's destroyed items; return (checked, came back)."""
        checked = disagreements = 0
        rows = self.journal.items(
            job_id, target=row.position, states=("verified", "purged"), fingerprints=False
        )
        for batch in plugin_batches(rows, plugin):
            evidence = self._collect_evidence(job_id, plugin, batch, row, recheck=True)
            for item in batch:
                checked += 1
                found = evidence.get(item.key)
                verified = found is not None and found.verified
                self.journal.add_recheck(
                    job_id,
                    item.target,
                    item.key,
                    verified,
                    _evidence_json(found) if found else None,
                )
                if not verified:
                    disagreements += 1
                    self._log.error(
                        "repeated rescan disagrees",
                        key=item.key,
                        detail=_failed_checks(found) if found else "no evidence",
                    )
        return checked, disagreements


def run_job(
    config: Config,
    state_dir: Path,
    targets: Sequence[Target],
    settings: Mapping[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> JobOutcome:
    """Plan and purge targets without confirmation (daemon and scheduled jobs).

    ``settings`` defaults to the config's settings. ``should_stop`` is polled
    between batches and by the plugins, so a daemon's SIGTERM stops the job
    after the item in flight.
    """
    engine = Engine(config, state_dir)
    if should_stop is not None:
        engine.stop_condition = should_stop
    try:
        chosen = (
            settings if settings is not None else config.settings.as_plugin_settings()
        )
        job_id = engine.plan(targets, chosen, dry_run=False)
        return engine.purge(job_id)
    finally:
        engine.close()


#: (target position, item key, encoded fingerprint digests) of planned items.
_Digests = list[tuple[int, str, str]]


def _row(position: int, item: Item, decision: Decision, classification: str) -> ItemRow:
    return ItemRow(
        target=position,
        key=item.key,
        kind=item.kind,
        size=item.size,
        label=item.label,
        identity=dict(item.identity),
        attributes=dict(item.attributes),
        classification=classification,
        method=decision.method.value if decision.method else None,
        params=dict(decision.params),
        refusal=refusal_to_json(decision.refusal),
        residual=tuple(decision.residual),
        state="planned" if decision.permitted else "refused",
    )


def _final_state(
    counts: Mapping[str, int], step_failed: bool, checks_not_run: bool = False
) -> tuple[str, int]:
    """Return the job state and exit code for the final item counts.

    ``checks_not_run`` means some item was verified after a resume with a
    check that could not run, so the job is not fully verified and cannot
    exit 0.
    """
    unfinished = sum(counts.get(state, 0) for state in UNFINISHED)
    if counts.get("failed") or unfinished or step_failed:
        return "failed", EXIT_FAILED
    if counts.get("refused") or counts.get("blocked") or checks_not_run:
        return "done", EXIT_REFUSED
    return "done", EXIT_OK


def _result_change(item: ItemRow, result: PurgeResult) -> StateChange:
    if result.status == "purged":
        return StateChange(item.target, item.key, "purged", result.detail, result.bytes)
    if result.status == "blocked":
        refusal = refusal_to_json(result.refusal) or {
            "reason": "blocked",
            "detail": result.detail,
        }
        return StateChange(
            item.target, item.key, "blocked", result.detail, refusal=refusal
        )
    return StateChange(item.target, item.key, "failed", result.detail, result.bytes)


def _evidence_change(
    item: ItemRow, evidence: Evidence, resumed: bool = False
) -> StateChange:
    """Return the item's state change for its evidence.

    ``resumed`` marks evidence taken after a resume, or by another process
    than the one that destroyed the item; :meth:`Engine._finish` counts such
    items whose checks did not all run. A verified item keeps its purge
    detail, which states what was done, such as the passes a stop cut short.
    """
    recorded = _evidence_json(evidence)
    if resumed:
        recorded["resumed"] = True
    if evidence.verified:
        return StateChange(
            item.target, item.key, "verified", item.detail, evidence=recorded
        )
    return StateChange(
        item.target,
        item.key,
        "failed",
        _failed_checks(evidence),
        evidence=recorded,
    )


def _evidence_json(evidence: Evidence) -> dict[str, Any]:
    return {
        "checks": [
            {"name": check.name, "passed": check.passed, "detail": check.detail}
            for check in evidence.checks
        ]
    }


def _failed_checks(evidence: Evidence) -> str:
    failed = [
        f"{check.name}: {check.detail}" for check in evidence.checks if not check.passed
    ]
    return (
        "verification failed: " + "; ".join(failed)
        if failed
        else "verification returned no checks"
    )


#: Failed items named in a job's closing messages; the journal has them all.
FAILED_ITEMS_SHOWN = 10

_crash_countdown = int(os.environ.get("LETHE_CRASH_AFTER_ITEMS", "0") or 0)


def _note_job(job_id: str) -> None:
    global last_job_id
    last_job_id = job_id


def _crash_point() -> None:
    """Kill the process with SIGKILL after the configured number of destroyed items.

    Crash tests set ``LETHE_CRASH_AFTER_ITEMS=N`` so the crash lands after the
    N-th item's destroy step and before its outcome is committed, the window a
    resume must handle. Unset or 0 disables it.
    """
    global _crash_countdown
    if _crash_countdown <= 0:
        return
    _crash_countdown -= 1
    if _crash_countdown == 0:
        os.kill(os.getpid(), signal.SIGKILL)


_pause_countdown = int(os.environ.get("LETHE_PAUSE_AFTER_ITEMS", "0") or 0)

#: Maximum seconds a test pause waits for its stop request.
PAUSE_LIMIT_SECONDS = 60.0


def _pause_point(committed: int, stopped: Callable[[], bool]) -> None:
    """Wait for a stop request once the configured number of items is committed.

    Stop tests set ``LETHE_PAUSE_AFTER_ITEMS=N`` so a SIGTERM sent after the
    N-th committed outcome lands between batches however fast the machine
    is. Unset or 0 disables it.
    """
    global _pause_countdown
    if _pause_countdown <= 0:
        return
    _pause_countdown -= committed
    if _pause_countdown > 0:
        return
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.05)
