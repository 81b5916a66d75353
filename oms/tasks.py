"""django-q2 tasks of the OMS: thin callers of the services."""

from __future__ import annotations

from typing import Any

from oms.endofday import end_of_day_run, mis_square_off
from oms.monitor import risk_monitor_run
from oms.reconciliation import reconciliation_scheduled


def risk_monitor_task() -> dict[str, Any]:
    """The once-a-minute backstop of the risk monitor (the ingestion runs it every few seconds)."""
    return risk_monitor_run()


def end_of_day_task() -> dict[str, Any]:
    """Close the trading day's statistics per strategy (the schedule at EOD_STATS_AT)."""
    return end_of_day_run()


def mis_square_off_task() -> dict[str, Any]:
    """Square off the open MIS positions of the exchanges due (the schedules at MIS_SQUARE_OFF_AT
    and MIS_SQUARE_OFF_TIMES)."""
    return mis_square_off()


def reconciliation_task() -> list[dict[str, Any]]:
    """Reconcile with Kite every RECONCILE_SECONDS: the minute's runs, that far apart (see
    ``oms.reconciliation.reconciliation_scheduled``)."""
    return reconciliation_scheduled()
