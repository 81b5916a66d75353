"""The portal's logging: secrets scrubbed before anything is written, one JSON object per
line for files and services or plain lines for a person at a terminal (``LOG_FORMAT``), and
uvicorn's own loggers (its access log included) routed through the same handler."""

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

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


# Extras that only repeat the message for a colour terminal (uvicorn's).
_DROPPED_EXTRAS = {"color_message"}


def _extra_value(value: object) -> object:
    """An extra as JSON: numbers and flags as they are, lists and dicts item by item,
    anything else as redacted text (Django's ``request`` extra prints the URL with its
    query string)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _extra_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extra_value(v) for v in value]
    return redact(value if isinstance(value, str) else str(value))


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
            if key not in _STANDARD_ATTRS and key not in _DROPPED_EXTRAS and not key.startswith("_"):
                payload[key] = _extra_value(value)
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


class QuietHeartbeat(logging.Filter):
    """Drops django-q2's per-task INFO lines for the worker heartbeat (one every few seconds)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        try:
            from tradingportal.worker import HEARTBEAT_FUNC

            return HEARTBEAT_FUNC not in record.getMessage()
        except Exception:  # noqa: BLE001 - apps not ready yet, or a bad format string: keep the line
            return True


def configure(config: dict[str, Any]) -> None:
    """Django's ``LOGGING_CONFIG``: apply ``LOGGING``, which routes uvicorn's loggers to the
    portal's handler, keeping an access log that uvicorn was told not to write
    (``--no-access-log``) switched off."""
    access = logging.getLogger("uvicorn.access")
    access_off = not access.propagate and not access.handlers  # what `uvicorn --no-access-log` leaves
    logging.config.dictConfig(config)
    if access_off:
        access.handlers = []
        access.propagate = False
