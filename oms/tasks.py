"""django-q2 tasks of the OMS: thin callers of the services."""

from __future__ import annotations

from typing import Any

from oms.monitor import risk_monitor_run


def risk_monitor_task() -> dict[str, Any]:
    """The once-a-minute backstop of the risk monitor (the ingestion runs it every few seconds)."""
    return risk_monitor_run()
