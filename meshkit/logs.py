"""JSON structured logging with request id and trace id on every line."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import orjson
from opentelemetry import trace

from meshkit.context import request_id_var

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:  # orjson: ~4x cheaper per line, and every request writes an access line at INFO
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # what orjson refuses (an int past 64 bits, say) json still prints
            return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON lines. Called once by bootstrap."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "opensearch", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_log_level(level: str) -> None:
    """Raise or lower verbosity at runtime (the /debug switch)."""
    logging.getLogger().setLevel(level.upper())


def log_event(logger: logging.Logger, event: str, **fields: Any) -> None:
    """A structured business event, e.g. log_event(log, "expired_reservations", released=12)."""
    logger.info(event, extra={"event": event, **fields})
