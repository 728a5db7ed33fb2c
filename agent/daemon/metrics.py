"""Prometheus metrics of the daemon's jobs, as a textfile or on 127.0.0.1.

The counters move by what each run of a job changed in the journal, so a
job resumed after a crash does not count its earlier items twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.daemon import Metrics as MetricsConfig
from agent.journal import Journal
from agent.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class JobTotals:
    """Counts of one job's items by outcome, read from the journal."""

    verified: int = 0
    verified_bytes: int = 0
    failed: int = 0
    verification_failed: int = 0

    @classmethod
    def read(cls, journal: Journal, job_id: str) -> JobTotals:
        row = journal.query(
            "SELECT"
            " COALESCE(SUM(state = 'verified'), 0) AS verified,"
            " COALESCE(SUM(CASE WHEN state = 'verified' THEN size ELSE 0 END), 0) AS bytes,"
            " COALESCE(SUM(state = 'failed'), 0) AS failed,"
            " COALESCE(SUM(state = 'failed' AND evidence IS NOT NULL), 0) AS unverified"
            " FROM items WHERE job_id = ?",
            (job_id,),
        )[0]
        return cls(row["verified"], row["bytes"], row["failed"], row["unverified"])


class DaemonMetrics:
    """The daemon's metrics in their own registry."""

    def __init__(self, config: MetricsConfig) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.config = config
        self.registry = CollectorRegistry()
        self.items_purged = Counter(
            "lethe_items_purged",
            "Items destroyed and verified",
            registry=self.registry,
        )
        self.bytes_purged = Counter(
            "lethe_bytes_purged",
            "Bytes of items destroyed and verified",
            registry=self.registry,
        )
        self.item_failures = Counter(
            "lethe_item_failures",
            "Items whose destroy step or verification failed",
            registry=self.registry,
        )
        self.verifications = Counter(
            "lethe_verifications",
            "Verification results of items, by result",
            ["result"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "lethe_jobs",
            "Runs of jobs by final state and source (spool, schedule, resume)",
            ["state", "source"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "lethe_job_duration_seconds",
            "Wall-clock time of one run of a job",
            ["source"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=self.registry,
        )
        self.rejected = Counter(
            "lethe_spool_rejected",
            "Spooled plans rejected without running",
            registry=self.registry,
        )
        self._server: Any = None

    def start(self) -> None:
        """Start the HTTP listener on 127.0.0.1 when a port is configured."""
        if self.config.listen_port is None:
            return
        from prometheus_client import start_http_server

        self._server, _thread = start_http_server(
            self.config.listen_port, addr="127.0.0.1", registry=self.registry
        )
        log.info(
            "metrics listener started", address=f"127.0.0.1:{self.config.listen_port}"
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record_run(
        self,
        before: JobTotals,
        after: JobTotals,
        state: str,
        source: str,
        seconds: float,
    ) -> None:
        """Add what one run of a job changed, then write the textfile."""
        verified = after.verified - before.verified
        failed = after.failed - before.failed
        self.items_purged.inc(max(verified, 0))
        self.bytes_purged.inc(max(after.verified_bytes - before.verified_bytes, 0))
        self.item_failures.inc(max(failed, 0))
        self.verifications.labels("passed").inc(max(verified, 0))
        self.verifications.labels("failed").inc(
            max(after.verification_failed - before.verification_failed, 0)
        )
        self.jobs.labels(state, source).inc()
        self.job_duration.labels(source).observe(seconds)
        self.write()

    def record_rejected(self) -> None:
        self.rejected.inc()
        self.write()

    def write(self) -> None:
        """Write the textfile atomically (temp file and rename), if configured."""
        if self.config.textfile is None:
            return
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(self.config.textfile, self.registry)
        except OSError as error:
            log.error(
                "cannot write the metrics textfile",
                path=self.config.textfile,
                error=str(error),
            )
