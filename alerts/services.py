"""Alerts: record a condition once per repeat window, send it from the worker, send again.

``alert_raise`` is called from hot paths (placement, the order update service, the risk
monitor, the feed). It never raises and never waits on the network: it writes one row (or
counts a repeat on the existing one) and queues the sending for after the commit. The
worker's ``alert_send`` then tries each channel once and records its outcome; a channel
that failed is tried again by ``alerts_retry`` (a schedule) with a growing pause, and an
operator can send an alert again from the admin.

The sending task gets only the alert's id: task arguments are shown on django-q2's pages,
and nothing secret is ever written to the row (subject, body and errors are redacted).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from alerts.channels import ChannelFailed, ChannelSkipped, email_send, telegram_send
from alerts.models import CHANNELS, Alert, Kind, Outcome, Severity
from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")

SEND_TASK = "alerts.tasks.alert_send_task"
KEY_LENGTH = 200
SUBJECT_LENGTH = 200
BODY_LENGTH = 10_000
LINK_LENGTH = 500
# A send that started this long ago and never finished (its worker was killed) may be taken over.
CLAIM_STALE = timedelta(minutes=5)
# How long alert_raise waits for another raise of the same condition (PostgreSQL) before it
# records its own row anyway: a rare duplicate is better than a stalled order path.
LOCK_WAIT_SECONDS = 1.0
RETRY_FIRST_AFTER = timedelta(minutes=1)  # doubled after every failed attempt
RETRY_MAX_AGE = timedelta(hours=24)
RETRY_BATCH = 50

_failures: dict[str, RepeatedFailure] = {}


def _failed(what: str, exc: BaseException) -> None:
    if what not in _failures:
        _failures[what] = RepeatedFailure(logger, what)
    _failures[what].failed(exc)


def _succeeded(what: str) -> None:
    if what in _failures:
        _failures[what].succeeded()


# --- raising ----------------------------------------------------------------------------


def alert_raise(
    *,
    kind: str,
    key: str,
    subject: str,
    body: str,
    link: str = "",
    severity: str = Severity.WARNING,
    now: datetime | None = None,
    repeat_since: datetime | None = None,
) -> Alert | None:
    """Record the condition ``(kind, key)`` and queue its sending on the worker, or, when
    the same condition was raised less than ``ALERT_REPEAT_MINUTES`` ago, count this as a
    repeat on that alert (not sent again). Returns the alert (new, or the one repeated),
    or None when it could not be recorded: any failure is logged, never raised.

    ``link``: the admin page that shows what the alert is about, as a path
    (``/admin/oms/order/12/change/``); made absolute with ``PORTAL_BASE_URL`` when set.
    ``repeat_since``: a condition that lasts until someone acts (a Kite login needed) is a
    repeat of the same alert raised since that moment, however long ago, instead of within
    ``ALERT_REPEAT_MINUTES``. ``now``: the clock (tests, replays). Inside the caller's
    transaction the alert is written in a savepoint (a failure leaves the caller's
    transaction usable) and is sent only if that transaction commits; async code calls it
    through ``sync_to_async``.
    """
    what = f"recording a {kind} alert"
    try:
        alert = _raise(kind=str(kind), key=str(key), subject=str(subject), body=str(body), link=str(link or ""),
                       severity=str(severity), now=now or timezone.now(), repeat_since=repeat_since)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - an alert must never break the caller's path
        _failed(what, exc)
        return None
    _succeeded(what)
    return alert


def _raise(
    *, kind: str, key: str, subject: str, body: str, link: str, severity: str, now: datetime,
    repeat_since: datetime | None = None,
) -> Alert:  # fmt: skip
    if kind not in Kind.values:
        logger.warning("alert kind %r is not one of %s; recorded anyway", kind, ", ".join(Kind.values))
    if severity not in Severity.values:
        logger.warning(
            "alert severity %r is not one of %s; recorded as warning", severity, ", ".join(Severity.values)
        )
        severity = Severity.WARNING
    key = _key(key)
    since = now - timedelta(minutes=settings.ALERT_REPEAT_MINUTES) if repeat_since is None else repeat_since
    with transaction.atomic():
        _condition_lock(kind, key)
        existing = (
            Alert.objects.filter(kind=kind, key=key, created_at__gt=since).order_by("-created_at").first()
        )
        if existing is not None:
            Alert.objects.filter(pk=existing.pk).update(repeats=F("repeats") + 1, last_raised_at=now)
            existing.repeats += 1
            existing.last_raised_at = now
            logger.info("alert %s repeated (%s): %s %s", existing.pk, existing.repeats, kind, key)
            return existing
        alert = Alert.objects.create(
            kind=kind, key=key, severity=severity, subject=_subject(subject, kind), body=redact(body)[:BODY_LENGTH],
            link=_link(link), created_at=now, last_raised_at=now,
        )  # fmt: skip
        alert_id = alert.pk
        transaction.on_commit(partial(_enqueue, alert_id))
    logger.warning("alert %s raised: %s %s", alert.pk, kind, key)
    return alert


def _key(key: str) -> str:
    key = redact(key.strip())
    if len(key) <= KEY_LENGTH:
        return key
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    return f"{key[: KEY_LENGTH - len(digest) - 1]}~{digest}"


def _subject(subject: str, kind: str) -> str:
    """One line (an email header must be), redacted, within the column."""
    line = " ".join(redact(subject).split())
    if not line:
        line = Kind(kind).label if kind in Kind.values else kind
    return line if len(line) <= SUBJECT_LENGTH else line[: SUBJECT_LENGTH - 1] + "…"


def _link(link: str) -> str:
    """A path on this portal, made absolute with ``PORTAL_BASE_URL``; or an http(s) URL.
    Anything else is dropped (logged): an alert is still worth more without its link."""
    link = link.strip()
    if not link:
        return ""
    if link.startswith("/") and not link.startswith("//"):
        link = f"{settings.PORTAL_BASE_URL}{link}"
    elif urlsplit(link).scheme not in ("http", "https"):
        logger.warning("alert link dropped: not a path or an http(s) URL")
        return ""
    if len(link) > LINK_LENGTH:
        logger.warning("alert link dropped: longer than %s characters", LINK_LENGTH)
        return ""
    return redact(link)


def _lock_id(kind: str, key: str) -> int:
    digest = hashlib.blake2b(f"alert:{kind}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _condition_lock(kind: str, key: str) -> None:
    """Serialise raises of one condition until this transaction ends, so two processes
    raising it together record one alert. SQLite needs nothing: its transactions take the
    write lock at BEGIN (settings: ``transaction_mode`` IMMEDIATE). PostgreSQL: an advisory
    transaction lock, waited for at most ``LOCK_WAIT_SECONDS`` (``lock_timeout``, put back
    as it was afterwards: the caller's transaction may go on)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('lock_timeout')")
        previous = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(LOCK_WAIT_SECONDS * 1000)}ms"])
        try:
            with transaction.atomic():
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(kind, key)])
        except OperationalError:
            logger.warning(
                "alert %s %s: another raise holds the condition; recorded without waiting", kind, key
            )
        finally:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])


def _enqueue(alert_id: int) -> None:
    """Queue the sending (after the commit). The queue being down (Redis) is logged and
    noted on the alert; ``alerts_retry`` sends it once the worker runs again."""
    try:
        async_task(SEND_TASK, alert_id=alert_id, task_name=f"alert {alert_id}", group="alerts")
    except Exception as exc:  # noqa: BLE001 - the caller's path goes on; the row says it waits
        _failed("queueing an alert for sending", exc)
        note = redact(f"not queued ({type(exc).__name__}); the retry schedule sends it")[:500]
        try:
            Alert.objects.filter(pk=alert_id).update(telegram_error=note, email_error=note)
        except Exception:  # noqa: BLE001 - the database is away too: the log line above says it all
            logger.warning("alert %s: could not note that it was not queued", alert_id)
        return
    _succeeded("queueing an alert for sending")


# --- sending (the worker) -------------------------------------------------------------------


def alert_text(alert: Alert) -> str:
    """The message as Telegram shows it: severity and subject, body, link, time."""
    raised = timezone.localtime(alert.created_at, IST).strftime("%d %b %H:%M:%S IST")
    parts = [
        f"[{alert.severity.upper()}] {alert.subject}",
        alert.body.strip(),
        alert.link,
        f"Raised {raised}.",
    ]
    return "\n\n".join(part for part in parts if part)


def _deliver(channel: str, alert: Alert) -> tuple[str, str]:
    try:
        if channel == "telegram":
            telegram_send(text=alert_text(alert))
        else:
            subject = f"[{alert.severity}] {alert.subject}"
            email_send(subject=subject, body=alert_text(alert))
    except ChannelSkipped as skipped:
        return Outcome.SKIPPED, str(skipped)
    except ChannelFailed as failed:
        return Outcome.FAILED, str(failed)
    except Exception as exc:  # noqa: BLE001 - recorded like any failure; the traceback goes to the log
        logger.exception("alert %s: sending on %s failed unexpectedly", alert.pk, channel)
        return Outcome.FAILED, redact(f"{type(exc).__name__}: {exc}")[:500]
    return Outcome.SENT, ""


def alert_send(*, alert_id: int, now: datetime | None = None) -> Alert | None:
    """Try every channel of the alert still pending, once, and record each outcome as it
    is known. A send already under way elsewhere (the same task delivered twice, a retry
    racing the first try) is left to it: nothing is sent twice. Returns the alert, or None
    when it was not this call's to send."""
    now = now or timezone.now()
    claimed = (
        Alert.objects.filter(pk=alert_id)
        .filter(Q(sending_since__isnull=True) | Q(sending_since__lt=now - CLAIM_STALE))
        .update(sending_since=now, attempts=F("attempts") + 1, attempted_at=now)
    )
    if not claimed:
        logger.info("alert %s: not sent by this task (being sent elsewhere, or deleted)", alert_id)
        return None
    alert = Alert.objects.get(pk=alert_id)
    try:
        for channel in CHANNELS:
            if alert.outcome(channel) != Outcome.PENDING:
                continue
            outcome, error = _deliver(channel, alert)
            changes: dict[str, Any] = {f"{channel}_outcome": outcome, f"{channel}_error": error}
            if outcome == Outcome.SENT:
                changes["sent_at"] = timezone.now()
                logger.info("alert %s sent on %s", alert.pk, channel)
            elif outcome == Outcome.FAILED:
                logger.warning("alert %s not sent on %s: %s", alert.pk, channel, error)
            Alert.objects.filter(pk=alert.pk).update(**changes)  # at once: a crash later never re-sends it
            for name, value in changes.items():
                setattr(alert, name, value)
    finally:
        Alert.objects.filter(pk=alert.pk).update(sending_since=None)
        alert.sending_since = None
    return alert


@dataclass
class Resent:
    queued: int = 0
    delivered: int = 0  # already sent on every channel: nothing to send again
    busy: int = 0  # being sent right now


def alerts_resend(*, ids: list[int], by: Any, now: datetime | None = None) -> Resent:
    """Send the alerts again on every channel that did not deliver (failed, skipped or never
    tried), from the worker. An alert sent on every channel is left as it is."""
    now = now or timezone.now()
    result = Resent()
    queued: list[int] = []
    with transaction.atomic():
        for alert in Alert.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
            if alert.sending_since is not None and alert.sending_since >= now - CLAIM_STALE:
                result.busy += 1
                continue
            again = [channel for channel in CHANNELS if alert.outcome(channel) != Outcome.SENT]
            if not again:
                result.delivered += 1
                continue
            for channel in again:
                setattr(alert, f"{channel}_outcome", Outcome.PENDING)
                setattr(alert, f"{channel}_error", "")
            alert.save(
                update_fields=[f"{channel}_{field}" for channel in again for field in ("outcome", "error")]
            )
            queued.append(alert.pk)
        for alert_id in queued:
            transaction.on_commit(partial(_enqueue, alert_id))
    result.queued = len(queued)
    logger.info("%s alerts queued to send again by %s", result.queued, getattr(by, "pk", by))
    return result


def _retry_due(alert: Alert, now: datetime) -> bool:
    if alert.attempted_at is None:  # never tried: the task was not queued, or lost
        return alert.created_at <= now - RETRY_FIRST_AFTER
    return alert.attempted_at <= now - RETRY_FIRST_AFTER * 2 ** max(alert.attempts - 1, 0)


def alerts_retry(*, now: datetime | None = None) -> dict[str, int]:
    """The worker's catch-up (a schedule every minute): send alerts that were never tried
    (their task was not queued: Redis was away) and try failed channels again, after 1, 2,
    4, ... minutes, up to ``ALERT_SEND_ATTEMPTS`` tries in all, for a day."""
    now = now or timezone.now()
    undelivered = Q(telegram_outcome__in=[Outcome.PENDING, Outcome.FAILED]) | Q(
        email_outcome__in=[Outcome.PENDING, Outcome.FAILED]
    )
    candidates = (
        Alert.objects.filter(
            undelivered, created_at__gte=now - RETRY_MAX_AGE, attempts__lt=settings.ALERT_SEND_ATTEMPTS
        )
        .filter(Q(sending_since__isnull=True) | Q(sending_since__lt=now - CLAIM_STALE))
        .order_by("created_at")
    )
    due = [alert for alert in candidates[: RETRY_BATCH * 4] if _retry_due(alert, now)][:RETRY_BATCH]
    sent = 0
    for alert in due:
        again = [
            channel for channel in CHANNELS if alert.outcome(channel) in (Outcome.PENDING, Outcome.FAILED)
        ]
        Alert.objects.filter(pk=alert.pk).update(
            **{f"{channel}_outcome": Outcome.PENDING for channel in again}
        )
        done = alert_send(alert_id=alert.pk, now=now)
        if done is not None and any(done.outcome(channel) == Outcome.SENT for channel in again):
            sent += 1
    if due:
        logger.info("alert retry: %s tried, %s delivered", len(due), sent)
    return {"tried": len(due), "delivered": sent}
