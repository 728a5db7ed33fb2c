"""The daemon: scheduled policies and spooled plans, run as crash-safe jobs.

One main thread owns the loop: it handles signals, reloads the config,
fires schedules, claims spooled plans, pings the systemd watchdog and starts
each job in a worker thread with its own engine (so its own SQLite
connection). At most ``max_jobs`` jobs run at once, and never two whose
targets overlap.

On start, every job the journal shows as started but unfinished
(``purging`` or ``interrupted``) is resumed first; the engine rescans the
items left in flight before it purges anything again. SIGTERM sets a stop
flag that the engines poll: each finishes the item in flight, journals it
and marks its job ``interrupted``, and the process exits 0. SIGHUP reloads
the config; an invalid file is logged and the old config stays.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent import config as config_module
from agent.daemon import DaemonConfig, Schedule
from agent.daemon.metrics import DaemonMetrics, JobTotals
from agent.daemon.notify import Notifier, watchdog_interval
from agent.daemon.spool import InvalidPlan, Spool, check_plan, spool_path
from agent.engine import Engine, JobOutcome
from agent.errors import LetheError
from agent.journal import Journal, dumps
from agent.log import get_logger
from agent.plan import DIFFERENCES_SHOWN, compare
from agent.state import state_dir as resolve_state_dir
from agent.targets import targets_overlap
from plugins.errors import PluginError

#: Job states that mean the purge started and has not finished.
RESUMABLE = ("purging", "interrupted")
#: Prefix of ``source_plan`` for jobs started by a schedule.
SCHEDULE_SOURCE = "schedule:"
#: Job states in which nothing was destroyed yet.
NOT_STARTED = ("planning", "planned", "cancelled", "plan-failed")
STATUS_FILE = "daemon-status.json"
#: Maximum sleep of the main loop, so signals and the watchdog stay prompt.
MAX_TICK_SECONDS = 1.0


@dataclass
class Work:
    """A job waiting for a slot, or running in a worker thread."""

    source: str
    label: str
    targets: tuple[str, ...]
    run: Callable[[Engine], JobOutcome | None]
    job_id: str | None = None
    spool_file: Path | None = None
    thread: threading.Thread | None = None
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Daemon:
    """The ``lethe daemon`` process."""

    def __init__(self, config_path: str, state_dir_override: str | None) -> None:
        self.config_path = config_path
        self.config = config_module.load(config_path)
        self.state_dir = resolve_state_dir(self.config, state_dir_override)
        self.spool = Spool(spool_path(self.daemon_config, self.state_dir)).create()
        self.notifier = Notifier()
        self.metrics = DaemonMetrics(self.daemon_config.metrics)
        self.log = get_logger(__name__)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[Work] = deque()
        self._running: list[Work] = []
        self._next_runs: dict[str, datetime] = {}
        self._finished = 0
        self._failed = 0
        self._rejected = 0
        self._last_status = ""

    @property
    def daemon_config(self) -> DaemonConfig:
        return self.config.sections.get("daemon") or DaemonConfig()

    # Main loop

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; return the exit code (0)."""
        self._install_signals()
        # The daemon keeps a journal connection open for its whole life, so the
        # journal's WAL and shared-memory files exist while jobs run.
        self.journal = Journal.open(self.state_dir)
        self.metrics.start()
        self.log.info(
            "daemon starting",
            pid=os.getpid(),
            config=self.config_path,
            state_dir=str(self.state_dir),
            spool=str(self.spool.root),
            max_jobs=self.daemon_config.max_jobs,
        )
        self._queue_unfinished()
        self._plan_schedules(datetime.now(UTC))
        self.notifier.ready(self._status_line())
        self.log.info("daemon ready", queued=len(self._pending))
        watchdog = watchdog_interval()
        last_ping = 0.0
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            self._reap()
            self._fire_schedules(datetime.now(UTC))
            self._claim_incoming()
            self._start_pending()
            if watchdog and time.monotonic() - last_ping >= watchdog:
                self.notifier.watchdog()
                last_ping = time.monotonic()
            self._publish_status()
            self._wake.wait(self._tick(watchdog))
            self._wake.clear()
        return self._shut_down(watchdog)

    def _tick(self, watchdog: float | None) -> float:
        tick = min(self.daemon_config.poll_seconds, MAX_TICK_SECONDS)
        return min(tick, watchdog) if watchdog else tick

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop.set()
        self._wake.set()

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reload.set()
        self._wake.set()

    def _shut_down(self, watchdog: float | None) -> int:
        running = [work.label for work in self._running]
        self.log.info("daemon stopping", running=running, queued=len(self._pending))
        self.notifier.stopping(
            f"stopping: finishing the item in flight of {len(running)} job(s)"
        )
        for work in list(self._running):
            assert work.thread is not None
            while work.thread.is_alive():
                work.thread.join(watchdog or MAX_TICK_SECONDS)
                if watchdog:
                    self.notifier.watchdog()
        self._reap()
        self._publish_status(force=True)
        self.metrics.stop()
        self.journal.close()
        self.log.info("daemon stopped")
        self.notifier.close()
        return 0

    # Configuration

    def reload(self) -> None:
        """Load the config file again; keep the old config when it is invalid."""
        try:
            config = config_module.load(self.config_path)
        except LetheError as error:
            self.log.error(
                "config reload rejected; keeping the previous config",
                config=self.config_path,
                error=str(error),
            )
            self.notifier.status(f"config reload rejected: {error}")
            return
        old = self.daemon_config
        self.config = config
        new = self.daemon_config
        if (
            spool_path(new, self.state_dir) != self.spool.root
            or new.metrics != old.metrics
        ):
            # NOTE: the spool directory and the metrics outputs are set up at
            # start; a change to them takes effect on the next restart.
            self.log.warning(
                "spool_dir and metrics changes take effect after a restart"
            )
        self._next_runs.clear()
        self._plan_schedules(datetime.now(UTC))
        self.log.info(
            "config reloaded",
            config=self.config_path,
            digest=config.digest,
            schedules=[schedule.name for schedule in new.schedules],
            max_jobs=new.max_jobs,
        )

    # Start-up recovery

    def _queue_unfinished(self) -> None:
        """Queue every started, unfinished job, then settle leftovers in claimed/."""
        journal = self.journal
        claimed = {str(path): path for path in self.spool.claimed_plans()}
        latest: dict[str, Any] = {}
        # Creation order is the rowid's: created has whole seconds, and ids
        # made in one second end in random characters.
        for row in journal.query(
            "SELECT id, state, dry_run, source_plan FROM jobs"
            " WHERE dry_run = 0 ORDER BY created, rowid"
        ):
            source = row["source_plan"] or ""
            latest[source] = row
            if row["state"] in RESUMABLE:
                self._queue_resume(journal, row["id"], claimed.get(source))
            elif row["state"] in ("planning", "planned") and self._is_ours(source):
                # Nothing was destroyed yet; the plan runs again from the spool.
                journal.update_job(row["id"], state="cancelled")
                self.log.info("unstarted job cancelled", job=row["id"], source=source)
        for name, path in claimed.items():
            row = latest.get(name)
            if row is None or row["state"] in NOT_STARTED:
                self._queue_spooled(path)
            elif row["state"] not in RESUMABLE:
                self._settle_claimed(journal, row["id"], row["state"], path)

    def _is_ours(self, source: str) -> bool:
        return source.startswith((SCHEDULE_SOURCE, str(self.spool.claimed) + os.sep))

    def _queue_resume(
        self, journal: Journal, job_id: str, spool_file: Path | None
    ) -> None:
        targets = tuple(row.target.url for row in journal.targets(job_id))
        self.log.info("resuming unfinished job", job=job_id, targets=list(targets))
        work = Work(
            source="resume",
            label=f"resume {job_id}",
            targets=targets,
            run=lambda engine: engine.resume(job_id),
            job_id=job_id,
            spool_file=spool_file,
            extra={"purge_started": True},
        )
        self._pending.append(work)

    def _settle_claimed(
        self, journal: Journal, job_id: str, state: str, path: Path
    ) -> None:
        """Move a claimed plan whose job ended before a crash to done/ or rejected/."""
        if state == "mismatch":
            self._reject(path, f"the world no longer matches the plan (job {job_id})")
            return
        job = journal.job(job_id)
        result = {
            "job_id": job_id,
            "state": job.state,
            "plan_hash": job.plan_hash,
            "counts": journal.count_states(job_id),
            "certificate": job.certificate,
        }
        self.spool.finish(path, result)

    # Schedules

    def _plan_schedules(self, now: datetime) -> None:
        for schedule in self.daemon_config.schedules:
            if schedule.name not in self._next_runs:
                self._next_runs[schedule.name] = schedule.next_run(now)
                self.log.info(
                    "schedule armed",
                    schedule=schedule.name,
                    cron=schedule.cron,
                    next_run=self._next_runs[schedule.name].isoformat(),
                )

    def _fire_schedules(self, now: datetime) -> None:
        for schedule in self.daemon_config.schedules:
            due = self._next_runs.get(schedule.name)
            if due is None or now < due:
                continue
            self._next_runs[schedule.name] = schedule.next_run(now)
            label = f"schedule {schedule.name}"
            busy = [
                work for work in [*self._pending, *self._running] if work.label == label
            ]
            if busy:
                self.log.warning(
                    "schedule skipped: its previous run has not finished",
                    schedule=schedule.name,
                )
                continue
            self.log.info("schedule fired", schedule=schedule.name)
            self._pending.append(self._schedule_work(schedule, label))

    def _schedule_work(self, schedule: Schedule, label: str) -> Work:
        def run(engine: Engine) -> JobOutcome | None:
            settings = self.config.settings.as_plugin_settings()
            job_id = engine.plan(
                schedule.targets,
                settings,
                dry_run=False,
                source_plan=SCHEDULE_SOURCE + schedule.name,
            )
            self._set_job(work, job_id)
            if self._stop.is_set():
                engine.journal.update_job(job_id, state="cancelled")
                work.extra["state"] = "cancelled"
                return None
            work.extra["purge_started"] = True
            return engine.purge(job_id)

        work = Work(
            source="schedule",
            label=label,
            targets=tuple(target.url for target in schedule.targets),
            run=run,
        )
        return work

    # Spool

    def _claim_incoming(self) -> None:
        capacity = self.daemon_config.max_jobs - len(self._running) - len(self._pending)
        for path in self.spool.waiting()[: max(capacity, 0)]:
            claimed = self.spool.claim(path)
            if claimed is None:
                continue
            self.log.info("spooled plan claimed", spool_file=claimed.name)
            self._queue_spooled(claimed)

    def _queue_spooled(self, path: Path) -> None:
        try:
            checked = check_plan(path, self.daemon_config)
        except InvalidPlan as error:
            self._reject(path, str(error))
            return
        saved = checked.saved

        def run(engine: Engine) -> JobOutcome | None:
            job_id = engine.plan(
                saved.targets, saved.settings, dry_run=False, source_plan=str(path)
            )
            self._set_job(work, job_id)
            differences = list(compare(saved, engine.journal, job_id))
            if differences:
                engine.journal.update_job(job_id, state="mismatch")
                engine.audit.append(
                    "plan-mismatch",
                    job_id=job_id,
                    saved_plan_hash=saved.plan_hash,
                    differences=len(differences),
                )
                work.extra["state"] = "mismatch"
                shown = differences[:DIFFERENCES_SHOWN]
                self._reject(
                    path,
                    f"the world no longer matches the plan: {len(differences)} "
                    f"difference(s), nothing was destroyed: {dumps(shown)}",
                )
                return None
            if self._stop.is_set():
                engine.journal.update_job(job_id, state="cancelled")
                work.extra["state"] = "cancelled"
                return None
            work.extra["purge_started"] = True
            return engine.purge(job_id)

        work = Work(
            source="spool",
            label=f"spool {path.name}",
            targets=tuple(target.url for target in saved.targets),
            run=run,
            spool_file=path,
            extra={"plan_hash": saved.plan_hash},
        )
        self._pending.append(work)

    def _reject(self, path: Path, reason: str) -> None:
        self.log.error("spooled plan rejected", spool_file=path.name, reason=reason)
        try:
            self.spool.reject(path, reason)
        except OSError as error:
            self.log.error(
                "cannot move the rejected plan aside",
                spool_file=path.name,
                error=str(error),
            )
        self._rejected += 1
        self.metrics.record_rejected()

    # Workers

    def _start_pending(self) -> None:
        waiting: deque[Work] = deque()
        while self._pending:
            work = self._pending.popleft()
            if len(self._running) >= self.daemon_config.max_jobs or self._busy(work):
                waiting.append(work)
                continue
            work.started = time.monotonic()
            work.thread = threading.Thread(
                target=self._work_thread, args=(work,), name=work.label, daemon=True
            )
            self._running.append(work)
            self.log.info("job starting", work=work.label, targets=list(work.targets))
            work.thread.start()
        self._pending = waiting

    def _busy(self, work: Work) -> bool:
        return any(
            targets_overlap(mine, theirs)
            for running in self._running
            for mine in work.targets
            for theirs in running.targets
        )

    def _work_thread(self, work: Work) -> None:
        """Run one job in its own engine; every outcome is logged here."""
        outcome: JobOutcome | None = None
        engine: Engine | None = None
        before = JobTotals()
        try:
            engine = Engine(self.config, self.state_dir)
            engine.stop_condition = self._stop.is_set
            if work.job_id:
                before = JobTotals.read(engine.journal, work.job_id)
            outcome = work.run(engine)
        except (LetheError, PluginError) as error:
            self._work_failed(work, error)
        except Exception as error:
            self.log.exception("job crashed", work=work.label, error=repr(error))
            work.extra["error"] = repr(error)
        if outcome is not None and engine is not None:
            self._work_done(work, engine, outcome, before)
        if engine is not None:
            engine.close()
        self._wake.set()

    def _work_failed(self, work: Work, error: Exception) -> None:
        work.extra["error"] = str(error)
        if not work.extra.get("purge_started") and work.spool_file is not None:
            # The purge never started, so nothing was destroyed.
            work.extra["state"] = "rejected"
            self._reject(work.spool_file, f"the job could not be planned: {error}")
            return
        self.log.error(
            "job stopped by an error; the journal keeps its state and the daemon "
            "resumes it on the next start",
            work=work.label,
            job=work.job_id,
            error=str(error),
        )

    def _work_done(
        self, work: Work, engine: Engine, outcome: JobOutcome, before: JobTotals
    ) -> None:
        seconds = time.monotonic() - work.started
        after = JobTotals.read(engine.journal, outcome.job_id)
        self.metrics.record_run(before, after, outcome.state, work.source, seconds)
        work.extra["state"] = outcome.state
        self.log.info(
            "job run ended",
            work=work.label,
            job=outcome.job_id,
            state=outcome.state,
            exit_code=outcome.exit_code,
            counts=dict(outcome.counts),
            seconds=round(seconds, 3),
        )
        if work.spool_file is not None and outcome.state != "interrupted":
            self.spool.finish(work.spool_file, outcome.summary())

    def _set_job(self, work: Work, job_id: str) -> None:
        with self._lock:
            work.job_id = job_id

    def _reap(self) -> None:
        still = []
        for work in self._running:
            if work.thread is not None and work.thread.is_alive():
                still.append(work)
                continue
            state = work.extra.get("state")
            if state == "done":
                self._finished += 1
            elif state not in ("interrupted", "cancelled", "mismatch", "rejected"):
                self._failed += 1
        self._running = still

    # Status

    def _status_line(self) -> str:
        return (
            f"{len(self._running)} running, {len(self._pending)} queued, "
            f"{self._finished} finished, {self._failed} failed, "
            f"{self._rejected} rejected"
        )

    def _publish_status(self, force: bool = False) -> None:
        """Send STATUS= and write the status file when anything changed."""
        line = self._status_line()
        if line == self._last_status and not force:
            return
        self._last_status = line
        self.notifier.status(line)
        with self._lock:
            snapshot = {
                "pid": os.getpid(),
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "running": [_describe(work) for work in self._running],
                "queued": [_describe(work) for work in self._pending],
                "stopping": self._stop.is_set(),
            }
        _write_json_atomically(self.state_dir / STATUS_FILE, snapshot)


def _describe(work: Work) -> dict[str, Any]:
    return {
        "job_id": work.job_id,
        "source": work.source,
        "label": work.label,
        "targets": list(work.targets),
    }


def _write_json_atomically(path: Path, value: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        # The status file is informational; a full disk must not stop jobs.
        pass
