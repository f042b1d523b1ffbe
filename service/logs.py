"""Structured logging: one JSON object per line (or plain text for a terminal)."""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: The id of the request being served (set by the request-log middleware), for logs and audit.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

#: OpenRosa clients carry their bearer token in the path (``/openrosa/{token}/…``).
_PATH_TOKEN = re.compile(r"(/openrosa/)[^/]+")


def loggable_path(path: str) -> str:
    """``path`` with any bearer token in it replaced by ``***``: the only form that is logged."""
    return _PATH_TOKEN.sub(r"\1***", path)


class JsonFormatter(logging.Formatter):
    """Formats a record as a JSON line with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if "request_id" not in entry and (current := request_id.get()) is not None:
            entry["request_id"] = current
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(*, level: str, fmt: str) -> None:
    """Route every logger to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our request log replaces uvicorn's access log (it adds duration and request id).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
