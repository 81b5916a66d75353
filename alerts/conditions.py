"""The conditions the desk is alerted about, each worded once: what it is about (the
strategy, the order, the instrument, the rule) and the admin page that shows it.

Each ``alert_<condition>`` takes the OMS or feed object it is about, builds the alert and
calls ``alert_raise``; like it, none of them ever raises (a bad object is logged and
returns None). Call them after the change they report has committed (in
``transaction.on_commit``), so an alert is only ever about what really happened.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ParamSpec
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, Kind, Severity
from alerts.services import alert_raise

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
P = ParamSpec("P")


def _never_raises(func: Callable[P, Alert | None]) -> Callable[P, Alert | None]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Alert | None:
        try:
            return func(*args, **kwargs)
        except Exception:  # noqa: BLE001 - an alert must never break the caller's path
            logger.exception("%s: could not build the alert", func.__name__)
            return None

    return wrapper


def admin_path(obj: Any) -> str:
    """The admin page of a saved model instance (``/admin/oms/order/12/change/``), or ""."""
    try:
        meta = obj._meta
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    except Exception:  # noqa: BLE001 - no admin page for it: the alert goes without a link
        return ""


def admin_list_path(name: str, **query: Any) -> str:
    """An admin list (``name`` as ``app_model``), filtered by ``query``, or ""."""
    try:
        path = reverse(f"admin:{name}_changelist")
    except Exception:  # noqa: BLE001
        return ""
    return f"{path}?{urlencode(query)}" if query else path


def _ist(moment: datetime) -> str:
    return timezone.localtime(moment, IST).strftime("%H:%M:%S IST")


def _instrument(obj: Any) -> str:
    return f"{obj.exchange}:{obj.tradingsymbol}"


@_never_raises
def alert_kill_switch_engaged(*, event: Any) -> Alert | None:
    """The kill switch was engaged (HALTED or REDUCING), by a person or by a risk rule.
    ``event``: the ``oms.KillSwitchEvent``. A release (ACTIVE) is not alerted."""
    if event.state == "ACTIVE":
        return None
    strategy = event.strategy
    scope = f"strategy {strategy.name}" if strategy is not None else "the whole desk"
    if event.automatic:
        who = f"automatically by rule {event.rule}" if event.rule else "automatically"
    else:
        who = f"by {event.by.get_username()}" if event.by is not None else "by the system"
    effect = "no new orders" if event.state == "HALTED" else "only orders that reduce a position"
    lines = [f"Kill switch {event.state} for {scope} {who} at {_ist(event.at)}: {effect}."]
    if event.reason:
        lines.append(f"Reason: {event.reason}")
    also = [name for name, on in (("open orders cancelled", event.cancel_open), ("positions squared off", event.square_off)) if on]  # fmt: skip
    if also:
        lines.append("Also: " + ", ".join(also) + ".")
    return alert_raise(
        kind=Kind.KILL_SWITCH,
        key=f"{strategy.name if strategy is not None else 'desk'}:{event.state}:{event.rule or 'manual'}",
        subject=f"Kill switch {event.state} for {scope} ({'rule ' + event.rule if event.rule else who})",
        body="\n".join(lines),
        link=admin_path(event),
        severity=Severity.CRITICAL,
    )


@_never_raises
def alert_order_rejected(*, order: Any) -> Alert | None:
    """The broker rejected a LIVE order (``oms.Order`` with status REJECTED). Paper orders
    are not alerted (they never reach an exchange)."""
    if order.broker == "paper":
        return None
    what = f"{order.transaction_type} {order.quantity} {_instrument(order)}"
    lines = [
        f"LIVE order {order.pk} ({what}, {order.product} {order.order_type}) of strategy {order.strategy.name} "
        f"was rejected by {order.broker}.",
        f"Broker's reason: {order.status_message or 'none given'}",
    ]
    if order.broker_order_id:
        lines.append(f"Broker order id: {order.broker_order_id}")
    return alert_raise(
        kind=Kind.ORDER_REJECTED,
        key=f"order:{order.pk}",
        subject=f"LIVE order {order.pk} REJECTED: {what} ({order.strategy.name})",
        body="\n".join(lines),
        link=admin_path(order),
    )


@_never_raises
def alert_reconciliation_issue(*, issue: Any) -> Alert | None:
    """Reconciliation found a difference with the broker that waits for a person
    (``oms.ReconciliationIssue``: kind, exchange, tradingsymbol, ours, broker)."""
    instrument = _instrument(issue) if getattr(issue, "tradingsymbol", "") else "the account"
    lines = [
        f"Reconciliation found {issue.kind} on {instrument}; it waits for a person in the admin.",
        f"Ours: {issue.ours}",
        f"Broker: {issue.broker}",
    ]
    return alert_raise(
        kind=Kind.RECONCILIATION,
        key=f"{issue.kind}:{instrument}",
        subject=f"Reconciliation: {issue.kind} on {instrument}",
        body="\n".join(lines),
        link=admin_path(issue),
    )


@_never_raises
def alert_kite_login_needed(*, detail: str = "", order: Any = None) -> Alert | None:
    """Kite refused the access token (it expires every morning): LIVE orders and the Kite
    feed stop until someone logs in. ``order``: the order it was found on, if any."""
    lines = ["The Kite access token expired or Kite refused it (it expires every morning around 06:00 IST)."]
    if order is not None:
        lines.append(
            f"Found on LIVE order {order.pk} ({_instrument(order)}, strategy {order.strategy.name})."
        )
        order_page = admin_path(order)
        if order_page:
            lines.append(f"The order: {settings.PORTAL_BASE_URL}{order_page}")
    if detail:
        lines.append(f"Kite said: {detail}")
    login = reverse("kite-login")
    lines.append(
        "LIVE orders are rejected and the Kite feed stays down until someone logs in to Kite: open "
        f'{settings.PORTAL_BASE_URL}{login} ("Log in to Kite" in the admin and on the dashboard; it needs the '
        'permission "Can log in to Kite for the desk"). The feed and the broker pick up the new session '
        "without a restart. Desks that script their login may instead write today's token to the bootstrap "
        "file, KITE_ACCESS_TOKEN_FILE."
    )
    return alert_raise(
        kind=Kind.KITE_LOGIN,
        key="kite",
        subject="Kite login needed: the access token was refused",
        body="\n".join(lines),
        link=login,
        severity=Severity.CRITICAL,
        repeat_since=_kite_outage_since(),
    )


def _kite_outage_since() -> datetime | None:
    """Since when "Kite login needed" has been one outage: the last login saved at the portal
    or the last newly refused bootstrap token (a new token was in use before it), whichever is
    later. Until then the alert is sent once, however long nobody logs in."""
    from django.db.models import Max

    from kitesession.models import KiteSession, RefusedToken

    try:
        moments = [
            KiteSession.objects.aggregate(at=Max("created_at"))["at"],
            RefusedToken.objects.aggregate(at=Max("refused_at"))["at"],
        ]
    except Exception:  # noqa: BLE001 - the alert still goes, with the usual repeat window
        logger.exception("could not read the Kite sessions for the login-needed alert")
        return None
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def streamed_exchanges() -> list[str]:
    """The exchanges of the instruments the feed streams (NSE when none is active)."""
    from instruments.selectors import active_instruments

    exchanges = sorted(set(active_instruments().values_list("exchange", flat=True)))
    return exchanges or ["NSE"]


def market_hours(now: datetime, *, exchanges: Iterable[str] | None = None) -> bool:
    """Whether any of ``exchanges`` (default: those streamed) trades at ``now``, by the
    market calendar (``markets.calendar``: hours, weekends, holidays, MCX's sessions)."""
    from markets.calendar import market_open

    return any(market_open(exchange=exchange, at=now) for exchange in exchanges or streamed_exchanges())


@_never_raises
def alert_feed_down(
    *,
    state: str,
    down_since: datetime,
    error: str = "",
    now: datetime | None = None,
    exchanges: Iterable[str] | None = None,
) -> Alert | None:
    """The market feed has not been streaming since ``down_since`` (its ``state``:
    disconnected, auth_failed, ...). Alerted once it has been down for
    ``ALERT_FEED_DOWN_SECONDS`` while a streamed exchange trades (``market_hours``); call
    it as often as you like while it is down (repeats are counted, not sent)."""
    now = now or timezone.now()
    down_for = (now - down_since).total_seconds()
    if down_for < settings.ALERT_FEED_DOWN_SECONDS or not market_hours(now, exchanges=exchanges):
        return None
    minutes = max(1, int(down_for // 60))
    lines = [
        f"The market feed is {state} since {_ist(down_since)} ({minutes} min), inside market hours.",
        "Prices on the dashboard, the paper matcher and the risk checks are stale until it is back.",
    ]
    if error:
        lines.append(f"Last error: {error}")
    return alert_raise(
        kind=Kind.FEED_DOWN,
        key="feed",
        subject=f"Market feed down for {minutes} min ({state})",
        body="\n".join(lines),
        link=admin_list_path("instruments_instrument"),  # the list shows the feed's state
        severity=Severity.CRITICAL,
    )


@_never_raises
def alert_square_off_failed(*, position: Any, reason: str) -> Alert | None:
    """A position could not be squared off (MIS square-off, the kill switch)."""
    what = f"{position.quantity} {position.product} {_instrument(position)}"
    return alert_raise(
        kind=Kind.SQUARE_OFF,
        key=f"position:{position.pk}",
        subject=f"Square-off failed: {what} ({position.strategy.name})",
        body=f"The position {what} of strategy {position.strategy.name} is still open.\nReason: {reason}",
        link=admin_path(position),
        severity=Severity.CRITICAL,
    )
