"""The end of the trading day: each strategy's day closed into ``DailyStats``, and MIS
positions squared off before the broker does it (and charges for it).

Trading days come from the market calendar (``trading_day``, ``markets.calendar``): a day
on which no exchange trades (a weekend, a holiday closed everywhere) runs neither the
statistics nor the square-off, and a pass squares off only on the exchanges trading that
day (MCX's evening session on an NSE holiday is one). Times are Asia/Kolkata.

**Closing a day** (``daily_stats_close``; the schedule *oms: end of day* at ``EOD_STATS_AT``
runs ``end_of_day_run``). During the day the update service and the risk monitor keep
running counters on the strategy's ``DailyStats`` row; closing recomputes the day from the
orders and trades themselves (a counter that drifted is corrected, and logged):

- ``orders``: placed that day (IST), ``rejected``: of those, refused by a risk rule or the
  broker; ``trades``, ``turnover`` (quantity x price) and ``realised``: the day's fills;
- ``unrealised``: the open positions as last marked (a past day keeps what it had);
- ``charges``: Zerodha's charges on the day's trades (``oms.charges.charges_for_day``), each
  component in ``charges_detail``. A trade the schedule cannot charge leaves ``charges``
  null with the reason logged and in ``charges_detail["error"]``, never 0;
- ``net_pnl`` (realised + unrealised - charges) and ``order_to_trade_ratio`` follow from
  these; ``closed_at`` is when the figures were written.

Closing is idempotent: a second run that finds the same figures writes nothing. Each run
also closes the days of the last week that were never closed (the worker was down: catch-up
is off) or changed after their close (a fill after ``EOD_STATS_AT``).

**MIS square-off** (``mis_square_off``; a schedule at each distinct time of
``MIS_SQUARE_OFF_AT`` and ``MIS_SQUARE_OFF_TIMES``). An exchange is due once its time has
passed on a trading day; for every due exchange a pass

1. cancels the working MIS orders that would open a position (an entry filled after the
   square-off would reopen intraday exposure); an open position's own orders (its stop) are
   cancelled by its square-off just before the market order, after-market orders for the
   next session are left alone;
2. squares off each open MIS position, of every strategy, by a market order through the
   normal path (``oms.killswitch.position_square_off``: risk-checked by the rules a
   square-off passes, audited as source ``mis_square_off``). A risk refusal is retried for
   up to ``MIS_SQUARE_OFF_RETRY_SECONDS``: the order rate the next second (the others wait
   with it), anything else (no live price yet) every ``SQUARE_OFF_RETRY_SECONDS``; an order
   the broker rejected is not sent again. A position that could not be squared off raises
   ``alert_square_off_failed`` at once (the desk has minutes), or, held back by the order
   rate only, when the retries run out;
3. leaves a LIVE position alone once the broker's own square-off time
   (``MIS_BROKER_SQUARE_OFF_TIMES``) has passed: the broker may have squared it off already
   and our order would open the opposite position. It is alerted instead.

A pass holds a lock (two never overlap) and a later pass (another exchange's time) squares
off anything still open on the exchanges due by then.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic, sleep, time_ns
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from oms import state
from oms.charges import ChargesError, charges_for_day
from oms.models import DailyStats, Mode, Order, OrderEvent, Position, Strategy, Trade
from tradingportal.locks import LockHeld, named_lock

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
ZERO = Decimal(0)
EOD_LOCK = "oms-end-of-day"
SQUARE_OFF_LOCK = "oms-mis-square-off"
SQUARE_OFF_SOURCE = "mis_square_off"
# Earlier days an end-of-day run looks back on (never closed, or changed since).
CATCH_UP_DAYS = 7
REFUSED = (state.RISK_REJECTED, state.REJECTED)
OPEN_STATUSES = sorted(state.WORKING | state.PENDING)
# Square-offs of others (the kill switch, the risk monitor) and ours are never cancelled by a pass.
SQUARE_OFF_SOURCES = ("kill_switch", "risk_monitor", SQUARE_OFF_SOURCE)
# A square-off refused for anything but the order rate (no live price yet) is tried again after this.
SQUARE_OFF_RETRY_SECONDS = 10.0


def trading_day(day: date, *, exchange: str | None = None) -> bool:
    """Whether ``exchange`` trades on ``day`` (any exchange the calendar knows, without one)."""
    from markets.calendar import EXCHANGES, is_trading_day

    exchanges = (exchange,) if exchange else EXCHANGES
    return any(is_trading_day(exchange=name, day=day) for name in exchanges)


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=IST)
    return start, start + timedelta(days=1)


# --- the day's statistics ------------------------------------------------------------------------


def end_of_day_run(*, now: datetime | None = None) -> dict[str, Any]:
    """The schedule's run: close today (on a trading day), and the earlier days of the last
    week that were never closed or changed after their close. Returns what it did per day."""
    now = now or timezone.now()
    today = timezone.localtime(now, IST).date()
    if not trading_day(today):
        return {"skipped": f"{today} is not a trading day (the market calendar: weekend or holiday)"}
    try:
        with named_lock(EOD_LOCK):
            days = [*_days_to_catch_up(today), today]
            return {day.isoformat(): daily_stats_close(day=day, now=now) for day in days}
    except LockHeld:
        return {"skipped": "another end-of-day run is closing the day"}


def _days_to_catch_up(today: date) -> list[date]:
    stale = DailyStats.objects.filter(day__gte=today - timedelta(days=CATCH_UP_DAYS), day__lt=today).filter(
        Q(closed_at__isnull=True) | Q(updated_at__gt=F("closed_at"))
    )
    return sorted(set(stale.values_list("day", flat=True)))


def daily_stats_close(*, day: date, now: datetime | None = None) -> dict[str, int]:
    """Close ``day`` for every strategy with statistics, orders or trades on it. Returns
    counts: ``closed`` (written now), ``unchanged`` (already closed with these figures),
    ``charges_failed`` (charges left null: a trade the schedule cannot charge)."""
    now = now or timezone.now()
    start, end = _bounds(day)
    ids = set(DailyStats.objects.filter(day=day).values_list("strategy_id", flat=True))
    ids |= set(
        Order.objects.filter(placed_at__gte=start, placed_at__lt=end).values_list("strategy_id", flat=True)
    )
    ids |= set(
        Trade.objects.filter(filled_at__gte=start, filled_at__lt=end).values_list("strategy_id", flat=True)
    )
    counts = {"closed": 0, "unchanged": 0, "charges_failed": 0}
    for strategy in Strategy.objects.filter(pk__in=ids).order_by("pk"):
        stats, written = daily_stats_close_strategy(strategy=strategy, day=day, now=now)
        counts["closed" if written else "unchanged"] += 1
        counts["charges_failed"] += stats.charges is None
    logger.info("end of day %s: %d strategies closed, %d unchanged, %d without charges", day,
                counts["closed"], counts["unchanged"], counts["charges_failed"])  # fmt: skip
    return counts


def daily_stats_close_strategy(*, strategy: Strategy, day: date,
                               now: datetime | None = None) -> tuple[DailyStats, bool]:  # fmt: skip
    """Close ``strategy``'s ``day``; returns the row and whether it was written (False: it
    was closed already with the same figures, and nothing changed)."""
    now = now or timezone.now()
    is_today = day == timezone.localtime(now, IST).date()
    with transaction.atomic():
        DailyStats.objects.get_or_create(strategy=strategy, day=day, defaults={"updated_at": now})
        # Locked against the running counters: a fill or placement that committed first is
        # in the rows read below; one that commits after adds its increment to what is written.
        stats = DailyStats.objects.select_for_update().get(strategy=strategy, day=day)
        figures = _figures(strategy=strategy, day=day, stats=stats, is_today=is_today)
        if stats.closed_at is not None and all(
            getattr(stats, name) == value for name, value in figures.items()
        ):
            return stats, False
        counters = ("orders", "trades", "turnover", "realised")
        drift = {
            name: (getattr(stats, name), figures[name])
            for name in counters
            if getattr(stats, name) != figures[name]
        }
        if drift:
            logger.warning("end of day %s: strategy %s's running counters differed from its orders and "
                           "trades, corrected (counter, rows): %s", day, strategy.pk, drift)  # fmt: skip
        for name, value in figures.items():
            setattr(stats, name, value)
        stats.closed_at = stats.updated_at = now
        stats.save(update_fields=[*figures, "closed_at", "updated_at"])
    return stats, True


def _figures(*, strategy: Strategy, day: date, stats: DailyStats, is_today: bool) -> dict[str, Any]:
    start, end = _bounds(day)
    placed = Order.objects.filter(strategy=strategy, placed_at__gte=start, placed_at__lt=end).aggregate(
        orders=Count("pk"), rejected=Count("pk", filter=Q(status__in=REFUSED))
    )
    fills = Trade.objects.filter(strategy=strategy, filled_at__gte=start, filled_at__lt=end).order_by()
    trades, turnover, realised = 0, ZERO, ZERO
    for price, quantity, gained in fills.values_list("price", "quantity", "realised"):
        trades += 1
        turnover += price * quantity
        realised += gained
    if is_today:  # the open positions as the risk monitor last marked them
        open_positions = Position.objects.filter(strategy=strategy).exclude(quantity=0)
        unrealised = sum(open_positions.values_list("unrealised", flat=True), ZERO)
    else:  # what the day ended with (today's positions are not that day's)
        unrealised = stats.unrealised
    pnl = realised + unrealised
    peak = max(stats.peak_pnl, pnl)
    charges, detail = _charges(strategy=strategy, day=day)
    return {
        "orders": placed["orders"], "rejected": placed["rejected"], "trades": trades, "turnover": turnover,
        "realised": realised, "unrealised": unrealised, "peak_pnl": peak,
        "max_drawdown": max(stats.max_drawdown, peak - pnl), "charges": charges, "charges_detail": detail,
    }  # fmt: skip


def _charges(*, strategy: Strategy, day: date) -> tuple[Decimal | None, dict[str, Any]]:
    """Zerodha's charges on the day's trades and each component (decimal strings), or None
    and the reason: never a silent 0."""
    try:
        breakdown = charges_for_day(strategy=strategy, day=day)
    except ChargesError as exc:
        logger.warning("end of day %s: the charges of strategy %s cannot be computed, left empty: %s",
                       day, strategy.pk, exc)  # fmt: skip
        return None, {"error": str(exc)}
    detail: dict[str, Any] = {
        name: value if isinstance(value, int) else str(value) for name, value in breakdown.as_dict().items()
    }
    return breakdown.total, {**detail, "schedule": settings.CHARGES_SCHEDULE.source}


# --- MIS square-off ------------------------------------------------------------------------------


def square_off_time(exchange: str) -> time:
    """When the portal squares off MIS positions on ``exchange`` (IST)."""
    return time.fromisoformat(settings.MIS_SQUARE_OFF_TIMES.get(exchange, settings.MIS_SQUARE_OFF_AT))


def broker_square_off_time(exchange: str) -> time | None:
    """When the broker squares them off itself (None: not known for that exchange)."""
    at = settings.MIS_BROKER_SQUARE_OFF_TIMES.get(exchange)
    return time.fromisoformat(at) if at else None


def square_off_times() -> list[time]:
    """Each distinct time a pass is scheduled at (``tradingportal.schedules``)."""
    return sorted(
        {
            time.fromisoformat(at)
            for at in (settings.MIS_SQUARE_OFF_AT, *settings.MIS_SQUARE_OFF_TIMES.values())
        }
    )


def mis_square_off(*, now: datetime | None = None) -> dict[str, Any]:
    """One pass (see the module docstring); ``now`` decides which exchanges are due.
    Returns counts and the ids of the positions it could not square off."""
    now = now or timezone.now()
    local = timezone.localtime(now, IST)
    if not trading_day(local.date()):
        return {"skipped": f"{local.date()} is not a trading day (the market calendar: weekend or holiday)"}
    try:
        with named_lock(SQUARE_OFF_LOCK):
            return _square_off_pass(local)
    except LockHeld:
        return {"skipped": "another MIS square-off pass is running"}


def _square_off_pass(local: datetime) -> dict[str, Any]:
    def due(exchange: str) -> bool:
        return square_off_time(exchange) <= local.time() and trading_day(local.date(), exchange=exchange)

    cancelled, cancel_failed = _cancel_working(due, reason=f"MIS square-off at {local:%H:%M} IST")
    positions = [
        position
        for position in Position.objects.filter(product=Order.Product.MIS).exclude(quantity=0)
        .select_related("strategy", "instrument").order_by("pk")
        if due(position.exchange)
    ]  # fmt: skip
    left = []
    for position in positions:
        broker_at = broker_square_off_time(position.exchange)
        if position.strategy.mode == Mode.LIVE and broker_at is not None and broker_at <= local.time():
            left.append(position)
            _alert(position, f"still open after the broker's own square-off time ({broker_at:%H:%M} IST): "
                             "the broker squares it off (and charges for it) or has done so already; "
                             "check the broker's positions before acting")  # fmt: skip
    outcome = _square_off_all([p for p in positions if p not in left])
    result = {"cancelled": cancelled, "cancel_failed": cancel_failed, **outcome,
              "left_to_broker": [p.pk for p in left]}  # fmt: skip
    if positions or cancelled or cancel_failed:
        logger.info("MIS square-off at %s IST: %s", f"{local:%H:%M}", result)
    return result


def _cancel_working(due: Callable[[str], bool], *, reason: str) -> tuple[int, int]:
    """Cancel the working MIS orders on due exchanges that would open a position: not those
    of an open position (its stop stays until its square-off cancels it, just before the
    market order), not square-offs, not after-market orders waiting for the next session."""
    from oms.services import OrderError, order_cancel

    of_open_position = Position.objects.filter(
        strategy_id=OuterRef("strategy_id"), instrument_id=OuterRef("instrument_id"), product=OuterRef("product"),
    ).exclude(quantity=0)  # fmt: skip
    orders = (
        Order.objects.filter(product=Order.Product.MIS, status__in=OPEN_STATUSES)
        .exclude(status=state.AMO_REQ_RECEIVED).exclude(source__in=SQUARE_OFF_SOURCES)
        .exclude(Exists(of_open_position)).order_by("pk").values_list("pk", "exchange")
    )  # fmt: skip
    cancelled = failed = 0
    for order_id, exchange in orders:
        if not due(exchange):
            continue
        try:
            order_cancel(order_id=order_id, user=None, source=SQUARE_OFF_SOURCE, reason=reason)
            cancelled += 1
        except OrderError:
            failed += 1
            logger.exception("MIS square-off could not cancel order %s", order_id)
    return cancelled, failed


def _square_off_all(positions: list[Position]) -> dict[str, Any]:
    """Square off each position, retrying refusals until ``MIS_SQUARE_OFF_RETRY_SECONDS``:
    the order rate the next second (the rest wait with it), anything else every
    ``SQUARE_OFF_RETRY_SECONDS``. A position still open at the end is alerted (at once for
    a refusal other than the order rate: the desk has minutes before the broker's square-off)."""
    deadline = monotonic() + settings.MIS_SQUARE_OFF_RETRY_SECONDS
    waiting = {position.pk: position for position in positions}
    next_try = dict.fromkeys(waiting, 0.0)
    reasons = dict.fromkeys(waiting, "held back by the order rate (Kite's orders per second)")
    alerted: set[int] = set()
    failed: list[int] = []
    done: Counter[str] = Counter()
    while waiting:
        for pk in sorted(waiting):
            if next_try[pk] > monotonic():
                continue
            outcome, order, reason = _square_off_one(waiting[pk])
            if outcome == "failed":  # the broker rejected it, or it could not be placed: no retry
                _alert(waiting[pk], reason)
                failed.append(pk)
            if outcome != "refused":
                done[outcome] += 1
                del waiting[pk]
                continue
            reasons[pk] = reason
            if order is not None and order.risk_rule == "rate_limit":
                next_second = (
                    monotonic() + 1.01 - (time_ns() % 1_000_000_000) / 1e9
                )  # Kite's counts per second
                next_try.update(dict.fromkeys(waiting, next_second))
                break  # the rest wait with it: not one refused order each
            next_try[pk] = monotonic() + SQUARE_OFF_RETRY_SECONDS
            if pk not in alerted:
                alerted.add(pk)
                _alert(waiting[pk], reason)
        if not waiting:
            break
        wake = min(next_try.get(pk, 0.0) for pk in waiting)
        if wake > deadline:
            break
        sleep(max(0.0, wake - monotonic()))
    for pk, position in waiting.items():
        if pk not in alerted:
            _alert(position, reasons[pk])
    return {"placed": done["placed"], "already_flat": done["flat"], "working": done["working"],
            "failed": sorted([*failed, *waiting])}  # fmt: skip


def _square_off_one(position: Position) -> tuple[str, Order | None, str]:
    """(outcome, the order, why it was refused). Outcomes: placed, flat, working (a square-off
    is on its way), refused (by a risk rule: retried), failed (the broker rejected it, or it
    could not be placed at all: not retried)."""
    from oms.killswitch import position_square_off

    position.refresh_from_db(fields=["quantity"])
    if position.quantity == 0:
        return "flat", None, ""
    if _square_off_working(position, sources=(SQUARE_OFF_SOURCE,)):
        return "working", None, ""  # sent by an earlier pass, not filled yet (a LIVE order)
    # A key per attempt (a refused one is retried); passes never overlap (the lock).
    key = f"mis-square-off-{timezone.localtime(timezone.now(), IST):%Y%m%d}-{time_ns() // 1_000_000}"
    order = position_square_off(position=position, source=SQUARE_OFF_SOURCE, key=key)
    if order is None:  # flat by now, another square-off on its way, or it could not be placed
        position.refresh_from_db(fields=["quantity"])
        if position.quantity == 0:
            return "flat", None, ""
        if _square_off_working(position, sources=SQUARE_OFF_SOURCES):
            return "working", None, ""
        return "failed", None, "the square-off order could not be placed (the portal's log says why)"
    if order.status == state.RISK_REJECTED:
        return "refused", order, f"order {order.pk} refused by rule {order.risk_rule}: {order.status_message}"
    if order.status == state.REJECTED:
        unprotected = (
            order.events.filter(kind=OrderEvent.Kind.WARNING, source=OrderEvent.Source.SYSTEM)
            .order_by("-pk").values_list("message", flat=True).first()
        )  # fmt: skip
        reason = f"order {order.pk} rejected by {order.broker}: {order.status_message or 'no reason'}"
        return "failed", order, f"{reason}; {unprotected}" if unprotected else reason
    return "placed", order, ""


def _square_off_working(position: Position, *, sources: tuple[str, ...]) -> bool:
    return Order.objects.filter(
        strategy_id=position.strategy_id, instrument_id=position.instrument_id, product=position.product,
        source__in=sources, order_type=Order.OrderType.MARKET, status__in=OPEN_STATUSES,
    ).exists()  # fmt: skip


def _alert(position: Position, reason: str) -> None:
    from alerts.conditions import alert_square_off_failed

    logger.error("MIS square-off of position %s (strategy %s, %s:%s, %s) failed: %s", position.pk,
                 position.strategy_id, position.exchange, position.tradingsymbol, position.quantity,
                 reason)  # fmt: skip
    alert_square_off_failed(position=position, reason=f"MIS square-off: {reason}")  # never raises
