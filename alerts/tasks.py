"""django-q2 tasks of the alerts: thin callers of the services.

The sending task gets the alert's id only (task arguments are shown on django-q2's pages);
``alerts_retry_task`` is meant to run every minute (see README, Alerts).
"""

from __future__ import annotations

from alerts.services import alert_send, alerts_retry


def alert_send_task(*, alert_id: int) -> dict[str, str] | None:
    alert = alert_send(alert_id=alert_id)
    if alert is None:
        return None
    return {"telegram": alert.telegram_outcome, "email": alert.email_outcome}


def alerts_retry_task() -> dict[str, int]:
    return alerts_retry()
