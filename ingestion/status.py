"""The ingestion's heartbeat: written to the cache every second by the running feed,
read by ``/healthz``, the admin, the dashboard and (next) the OMS.

``LoopHealth`` is how each of the ingestion's loops (publish, store, status, follow,
listen) reports its failures: logged through ``RepeatedFailure`` (one traceback, then a
count at most once a minute, then "works again"), counted in the heartbeat's
``failures``, and named in ``failing`` while it has not worked since; a failing loop
turns a ``connected`` state into ``degraded``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact

STATUS_KEY = "ingestion:status"
STATUS_TTL = 30
# A heartbeat older than this means no ingestion is running.
RUNNING_WITHIN_SECONDS = 10
ERROR_LENGTH = 300


class LoopHealth:
    """One loop's failures: logged without flooding, counted, described for the status."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = RepeatedFailure(logger, what)
        self.error = ""

    def failed(self, exc: BaseException) -> None:
        self._log.failed(exc)
        self.error = redact(f"{type(exc).__name__}: {exc}")[:ERROR_LENGTH]

    def succeeded(self) -> None:
        self._log.succeeded()
        self.error = ""

    @property
    def failing(self) -> bool:
        """True from a failure until the loop works again."""
        return self._log.count > 0

    @property
    def total(self) -> int:
        """Failures since the ingestion started."""
        return self._log.total


def status_store(status: dict[str, Any]) -> None:
    cache.set(STATUS_KEY, status, timeout=STATUS_TTL)


def feed_status() -> dict[str, Any] | None:
    """The ingestion's last heartbeat, or None if no ingestion has reported recently."""
    try:
        status = cache.get(STATUS_KEY)
    except Exception:  # noqa: BLE001 - the cache being down is reported by /healthz itself
        return None
    if not status:
        return None
    updated = datetime.fromisoformat(status["updated_at"])
    status["heartbeat_age"] = round((timezone.now() - updated).total_seconds(), 1)
    status["running"] = status.get("state") != "stopped" and status["heartbeat_age"] < RUNNING_WITHIN_SECONDS
    return status
