"""The portal's django-q2 schedules, registered idempotently by name.

``schedules_register()`` runs after every ``migrate`` (and from
``manage.py register_schedules``): it creates missing schedules and corrects changed
ones, without piling up duplicates. Catch-up is off cluster-wide (settings.Q_CLUSTER),
so a worker that was down does not replay missed runs on start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")


@dataclass(frozen=True)
class Planned:
    name: str
    func: str
    schedule_type: str
    at: time | None = None  # daily: time of day, Asia/Kolkata
    minutes: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _daily_time(value: str, setting: str) -> time:
    try:
        hours, minutes = (int(part) for part in value.split(":"))
        return time(hours, minutes)
    except ValueError:
        raise ValueError(f"{setting}={value!r} is not a time of day; use HH:MM (Asia/Kolkata)") from None


def planned_schedules() -> list[Planned]:
    from django_q.models import Schedule

    from oms.endofday import square_off_times

    return [
        Planned(
            name="instruments: daily sync",
            func="instruments.tasks.sync_instruments_task",
            schedule_type=Schedule.DAILY,
            at=_daily_time(settings.SYNC_DAILY_AT, "SYNC_DAILY_AT"),
            kwargs={"source": settings.SYNC_DAILY_SOURCE, "triggered_by": "schedule"},
        ),
        Planned(
            name="instruments: deactivate expired",
            func="instruments.tasks.deactivate_expired_task",
            schedule_type=Schedule.DAILY,
            at=_daily_time(settings.EXPIRED_DEACTIVATE_AT, "EXPIRED_DEACTIVATE_AT"),
        ),
        # The ingestion runs the risk monitor every OMS_RISK_MONITOR_SECONDS (it has the
        # ticks); this is the backstop while it does not run (django-q2 fires a schedule at
        # most about once a minute).
        Planned(
            name="oms: risk monitor",
            func="oms.tasks.risk_monitor_task",
            schedule_type=Schedule.MINUTES,
            minutes=1,
        ),
        Planned(
            name="alerts: retry",
            func="alerts.tasks.alerts_retry_task",
            schedule_type=Schedule.MINUTES,
            minutes=1,
        ),
        # Every RECONCILE_SECONDS: django-q2 fires a schedule at most once a minute, so the
        # task runs the minute's runs that far apart (oms.reconciliation.reconciliation_scheduled).
        Planned(
            name="oms: reconciliation",
            func="oms.tasks.reconciliation_task",
            schedule_type=Schedule.MINUTES,
            minutes=max(1, settings.RECONCILE_SECONDS // 60),
        ),
        # After the close, on weekdays (the task skips the rest): each strategy's day closed.
        Planned(
            name="oms: end of day",
            func="oms.tasks.end_of_day_task",
            schedule_type=Schedule.DAILY,
            at=_daily_time(settings.EOD_STATS_AT, "EOD_STATS_AT"),
        ),
        # One per distinct square-off time; each pass squares off every exchange due by then.
        *(
            Planned(
                name=f"oms: MIS square-off {at:%H:%M}",
                func="oms.tasks.mis_square_off_task",
                schedule_type=Schedule.DAILY,
                at=at,
            )
            for at in square_off_times()
        ),
    ]


def _next_daily(at: time, now: datetime) -> datetime:
    local_now = now.astimezone(IST)
    candidate = datetime.combine(local_now.date(), at, tzinfo=IST)
    if candidate <= local_now:
        candidate += timedelta(days=1)
    return candidate


def schedules_cluster() -> str | None:
    """The cluster the schedules are for. django-q2 runs a schedule without a cluster only in
    a cluster that keeps its default name; one named by ``Q_CLUSTER_NAME`` (a queue of its own
    on a shared Redis) runs only the schedules that name it, so they are registered for it."""
    from django_q.conf import Conf

    return None if Conf.CLUSTER_NAME == Conf.PREFIX else Conf.CLUSTER_NAME


def schedules_register(*, now: datetime | None = None, dry_run: bool = False) -> dict[str, str]:
    """Create or correct every planned schedule; returns {name: created|updated|unchanged}.

    With ``dry_run`` nothing is written: the outcome says what a real run would do.
    """
    from django_q.models import Schedule

    now = now or timezone.now()
    cluster = schedules_cluster()
    outcome: dict[str, str] = {}
    with transaction.atomic():
        for plan in planned_schedules():
            kwargs = repr(plan.kwargs) if plan.kwargs else ""
            wanted: dict[str, Any] = {
                "func": plan.func,
                "schedule_type": plan.schedule_type,
                "minutes": plan.minutes,
                "kwargs": kwargs,
                "repeats": -1,
                "cluster": cluster,
            }
            existing = Schedule.objects.filter(name=plan.name).order_by("id")
            schedule = existing.first()
            if schedule is None:
                if not dry_run:
                    next_run = _next_daily(plan.at, now) if plan.at else now
                    Schedule.objects.create(name=plan.name, next_run=next_run, **wanted)
                outcome[plan.name] = "created"
                continue
            duplicates = existing.exclude(pk=schedule.pk)  # from older, careless registrations
            changed = [k for k, v in wanted.items() if getattr(schedule, k) != v]
            for key in changed:
                setattr(schedule, key, wanted[key])
            if plan.at and (schedule.next_run is None or schedule.next_run.astimezone(IST).time() != plan.at):
                schedule.next_run = _next_daily(plan.at, now)
                changed.append("next_run")
            outcome[plan.name] = "updated" if changed or duplicates.exists() else "unchanged"
            if dry_run:
                continue
            duplicates.delete()
            if changed:
                schedule.save(update_fields=changed)
                logger.info("schedule %r updated: %s", plan.name, ", ".join(changed))
    return outcome
