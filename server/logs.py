"""Logging set-up: readable text by default, one JSON object per line with ``log_format=json``."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
import warnings

from server import tracing

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

#: The current gRPC call's request id (set by server.api.errors.grpc_method, applied at
#: registration), ``-`` outside a call.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` to every log record, and with tracing on ``trace_id`` and ``span_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        ids = tracing.current_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    """``{"time": ..., "level": ..., "logger": ..., "message": ..., **extra}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(
            {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        )
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


#: Control characters (line breaks first) a client could smuggle into a log line through a path,
#: a header or a model name: shown escaped, so that one record is one line (no forged records).
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


class TextFormatter(logging.Formatter):
    """``time level logger [request id]: message``, one line per record: control characters in the
    message are escaped (a traceback, when there is one, follows on its own lines, as always)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROL)
        return super().formatMessage(record)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("absl", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
