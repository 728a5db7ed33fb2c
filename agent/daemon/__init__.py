"""The ``daemon`` config section: schedules, the spool and metrics.

Importing this package registers the section's validator, so a config
file with a ``daemon:`` section is checked when it is loaded, by
``lethe daemon`` and by ``lethe submit`` alike. The service itself lives in
:mod:`agent.daemon.service`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.config import Node, register_section
from agent.errors import ConfigError
from agent.targets import target_contains
from agent.targets import targets_overlap as targets_overlap
from plugins.base import Target

DEFAULT_MAX_JOBS = 1
DEFAULT_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Schedule:
    """A policy run on a cron schedule: which targets, and when."""

    name: str
    cron: str
    targets: tuple[Target, ...]

    def next_run(self, after: datetime) -> datetime:
        """Return the first time after ``after`` that the cron expression matches."""
        from croniter import croniter

        return croniter(self.cron, after).get_next(datetime)


@dataclass(frozen=True)
class Metrics:
    """Destinations of the Prometheus metrics; with both None, none are exported."""

    textfile: str | None = None
    #: TCP port of an HTTP listener bound to 127.0.0.1.
    listen_port: int | None = None


@dataclass(frozen=True)
class DaemonConfig:
    """The validated ``daemon`` section."""

    #: None means ``<state_dir>/spool``.
    spool_dir: str | None = None
    max_jobs: int = DEFAULT_MAX_JOBS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    #: Target URLs or paths that submitted plans may name (and anything below).
    allowed_targets: tuple[str, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    metrics: Metrics = field(default_factory=Metrics)

    def allows(self, url: str) -> bool:
        """Tell whether a submitted plan may name the target ``url``."""
        return any(target_contains(allowed, url) for allowed in self.allowed_targets)


def validate(node: Node) -> DaemonConfig:
    """Validate the ``daemon`` section (an absent section gives the defaults)."""
    node = node.mapping(
        {
            "spool_dir",
            "max_jobs",
            "poll_seconds",
            "allowed_targets",
            "schedules",
            "metrics",
        }
    )
    spool_dir = node.string("spool_dir")
    if spool_dir is not None and not spool_dir.startswith("/"):
        raise node.error("an absolute path", "spool_dir")
    return DaemonConfig(
        spool_dir=spool_dir,
        max_jobs=node.integer("max_jobs", DEFAULT_MAX_JOBS, minimum=1),
        poll_seconds=_seconds(node.child("poll_seconds")),
        allowed_targets=node.strings("allowed_targets"),
        schedules=_schedules(node.child("schedules")),
        metrics=_metrics(node.child("metrics")),
    )


def _seconds(node: Node) -> float:
    if node.value is None:
        return DEFAULT_POLL_SECONDS
    valid = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if not valid or not 0.05 <= node.value <= 3600:
        raise node.error("a number of seconds between 0.05 and 3600")
    return float(node.value)


def _schedules(node: Node) -> tuple[Schedule, ...]:
    schedules = []
    names: set[str] = set()
    for element in node.elements():
        element = element.mapping({"name", "cron", "targets"})
        name = element.string("name", required=True)
        if name in names:
            raise element.error(
                f"a schedule name used once, {name!r} is repeated", "name"
            )
        names.add(name)
        cron = element.string("cron", required=True)
        _check_cron(element, cron)
        targets = _schedule_targets(element.child("targets"))
        if not targets:
            raise element.error("a non-empty list of targets", "targets")
        schedules.append(Schedule(name, cron, targets))
    return tuple(schedules)


def _check_cron(element: Node, cron: str) -> None:
    try:
        from croniter import croniter
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"{element.file}:{element.line}: daemon.schedules needs the croniter "
            "package; install it with: pip install 'lethe[daemon]'"
        ) from error
    if not croniter.is_valid(cron):
        raise element.error(
            'a cron expression such as "0 3 * * *" (five fields, or six with seconds last)',
            "cron",
        )


def _schedule_targets(node: Node) -> tuple[Target, ...]:
    targets = []
    for element in node.elements():
        if isinstance(element.value, str):
            targets.append(Target(element.value))
            continue
        element = element.mapping({"url", "options"})
        url = element.string("url", required=True)
        options = element.child("options").mapping()
        targets.append(Target(url, _plain(options.value)))
    return tuple(targets)


def _metrics(node: Node) -> Metrics:
    node = node.mapping({"textfile", "listen_port"})
    textfile = node.string("textfile")
    if textfile is not None and not textfile.startswith("/"):
        raise node.error("an absolute path", "textfile")
    port = node.integer("listen_port", None, minimum=1)
    if port is not None and port > 65535:
        raise node.error("a TCP port between 1 and 65535", "listen_port")
    return Metrics(textfile=textfile, listen_port=port)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_plain(child) for child in value]
    return value


register_section("daemon", validate)
