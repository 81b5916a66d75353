"""The ingestion's heartbeat: written to the cache every second by the running feed,
read by ``/healthz``, the admin, the dashboard and (next) the OMS."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

STATUS_KEY = "ingestion:status"
STATUS_TTL = 30
# A heartbeat older than this means no ingestion is running.
RUNNING_WITHIN_SECONDS = 10


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
