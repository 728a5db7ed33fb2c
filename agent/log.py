"""Structured logging for the agent and the plugins it drives.

Events go to stderr: JSON lines when stderr is not a terminal (journald,
CI, pipes), a readable console rendering otherwise. Callers bind ``job``,
``plugin`` and ``target`` and pass values as key-value pairs; no event
carries a secret or the content of the data being destroyed.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str | None = None, json_output: bool | None = None) -> None:
    """Route structlog to stderr with the renderer that suits the stream.

    Without a ``level``, JSON logs include INFO (one event per item state
    change) and console logs start at WARNING.
    """
    if json_output is None:
        json_output = not sys.stderr.isatty()
    if level is None:
        level = "INFO" if json_output else "WARNING"
    renderer: structlog.typing.Processor
    if json_output:
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **context: object) -> structlog.typing.FilteringBoundLogger:
    """Return a logger for a module with ``context`` bound to every event."""
    return structlog.get_logger(name).bind(**context)
