"""Structured logging: one JSON object per line, secrets scrubbed before anything is written."""

import json
import logging
from datetime import UTC, datetime

from tradingportal.security import redact

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RedactSecretsFilter(logging.Filter):
    """Rewrites the record's message (and exception text) with secret values masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not drop the line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}``: what log shippers read."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


class RepeatedFailure:
    """Logs a failure that repeats (Redis down, the database away) without flooding.

    The first failure is logged with its traceback; while it keeps failing, one line with
    the count at most every ``every`` seconds; when it works again, one line saying so.
    ``count`` is the number of failures since the last success (for status pages).
    """

    def __init__(self, logger: logging.Logger, what: str, *, every: float = 60.0) -> None:
        self.logger, self.what, self.every = logger, what, every
        self.count = 0
        self.total = 0
        self._last_logged = 0.0

    def failed(self, exc: BaseException | None = None) -> None:
        import time

        self.count += 1
        self.total += 1
        now = time.monotonic()
        if self.count == 1:
            self.logger.error("%s failed", self.what, exc_info=exc if exc is not None else True)
            self._last_logged = now
        elif now - self._last_logged >= self.every:
            reason = f": {type(exc).__name__}: {exc}" if exc is not None else ""
            self.logger.error("%s still failing (%s times so far)%s", self.what, self.count, reason)
            self._last_logged = now

    def succeeded(self) -> None:
        if self.count:
            self.logger.info("%s works again after %s failures", self.what, self.count)
        self.count = 0
