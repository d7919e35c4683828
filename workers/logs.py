"""structlog, configured once: pretty console on a TTY, JSON otherwise; stdlib records (Temporal's
`workflow.logger` and `activity.logger`) are rendered through the same processors."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    use_json = (fmt == "json") if fmt else not sys.stderr.isatty()
    shared: list = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _temporal_ids,
    ]
    if use_json:
        shared.append(structlog.processors.format_exc_info)
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
    ]))  # fmt: skip
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "werkzeug", "cmdstanpy", "prophet", "darts"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _temporal_ids(_logger: object, _name: str, event: dict) -> dict:
    """Lifts the workflow/activity ids Temporal attaches to its log records into top-level keys."""
    record = event.get("_record")
    details = getattr(record, "temporal_workflow", None) or getattr(record, "temporal_activity", None)
    if isinstance(details, dict):
        for key in ("workflow_id", "workflow_type", "activity_type", "attempt"):
            if key in details:
                event.setdefault(key, details[key])
    return event
