"""``--log-format json``: one JSON object per log line, for log shippers.

Keys: ``time`` (ISO 8601, UTC), ``level``, ``event`` (the message), then ``connection``,
``tube`` and ``job`` when the call passed them (``log.info(..., extra={"connection": fd})``),
and ``error`` with the traceback of a logged exception. Only the standard library: it is
configured before the server is imported."""

from __future__ import annotations

import json
import logging
import time

CONTEXT_KEYS = ("connection", "tube", "job")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value.decode(errors="replace") if isinstance(value, bytes) else value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
